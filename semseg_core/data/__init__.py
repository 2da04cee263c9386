"""Datasets (COCO open-set, GraspNet-OS, any COCO json, synthetic shape and tabletop RGB-D scenes), transforms, loaders.

Names are imported lazily (PEP 562), so `python -m semseg_core.data.synthetic` starts without importing torch:
0.10 s instead of 1.1 s for every module of the package on this project's 2-core machines (`python -c "import time;
t=time.perf_counter(); import semseg_core.data.synthetic; print(time.perf_counter()-t)"`, and with each module
listed below imported after it). An import error in a module surfaces, unchanged, at `from semseg_core.data import X`.
"""
import importlib

_EXPORTS = {
    "DATASET_CATALOG": "catalog",
    "get_dataset_meta": "catalog",
    "register_coco_openset": "catalog",
    "DatasetError": "coco_openset",
    "OpenSetDataset": "dataset",
    "build_dataset": "dataset",
    "read_image": "image_io",
    "build_test_loader": "loader",
    "build_train_loader": "loader",
    "DEFAULT_KNOWN_FAMILIES": "synthetic",
    "DEFAULT_UNKNOWN_FAMILIES": "synthetic",
    "ensure_synthetic_dataset": "synthetic",
    "generate_dataset": "synthetic",
    "generate_tabletop_dataset": "tabletop",
    "ResizeFlip": "transforms",
    "resize_shortest_edge_size": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
