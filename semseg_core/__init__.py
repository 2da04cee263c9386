"""semseg_core: open-set instance segmentation (SemSeg, RA-L 2024) on PyTorch + torchvision.

Kept import-light: `import semseg_core.config` must not pull in the model, so `Predictor` and `Result` are
imported lazily on first attribute access.
"""
__version__ = "0.1.0"

__all__ = ["Predictor", "Result", "__version__"]


def __getattr__(name):
    if name in ("Predictor", "Result"):
        from . import predictor
        return getattr(predictor, name)
    raise AttributeError(f"module 'semseg_core' has no attribute {name!r}")
