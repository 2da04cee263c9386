"""SemSeg model: `build_model(cfg)` and the stage modules (one file per stage)."""
from .semseg import LOSS_KEYS, SemSeg


def build_model(cfg) -> SemSeg:
    """Build SemSeg from a config on cfg.MODEL.DEVICE (random init; load weights separately)."""
    model = SemSeg.from_config(cfg)
    return model.to(cfg.MODEL.DEVICE)


__all__ = ["SemSeg", "build_model", "LOSS_KEYS"]
