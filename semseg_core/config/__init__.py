"""Config system: detectron2-style keys, YAML files with `_BASE_`, dotted `KEY VALUE` overrides."""
from typing import Optional, Sequence

from .cfg_node import CfgNode, ConfigError
from .defaults import check_config, get_cfg

__all__ = ["CfgNode", "ConfigError", "check_config", "get_cfg", "load_config"]


def load_config(path: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
                freeze: bool = True) -> CfgNode:
    """Defaults, then the YAML file at `path` (if any), then `overrides`; frozen unless `freeze=False`."""
    cfg = get_cfg()
    if path:
        cfg.merge_from_file(path)
    if overrides:
        cfg.merge_from_list(list(overrides))
    check_config(cfg)
    if freeze:
        cfg.freeze()
    return cfg
