"""Datasets (COCO open-set, GraspNet-OS, any COCO json, synthetic scenes), transforms and loaders."""
from semseg_core.data.catalog import DATASET_CATALOG, get_dataset_meta, register_coco_openset
from semseg_core.data.coco_openset import DatasetError
from semseg_core.data.dataset import OpenSetDataset, build_dataset, read_image
from semseg_core.data.loader import build_test_loader, build_train_loader
from semseg_core.data.synthetic import (
    DEFAULT_KNOWN_FAMILIES,
    DEFAULT_UNKNOWN_FAMILIES,
    ensure_synthetic_dataset,
    generate_dataset,
)
from semseg_core.data.transforms import ResizeFlip, resize_shortest_edge_size

__all__ = [
    "DATASET_CATALOG", "DEFAULT_KNOWN_FAMILIES", "DEFAULT_UNKNOWN_FAMILIES", "DatasetError", "OpenSetDataset",
    "ResizeFlip", "build_dataset", "build_test_loader", "build_train_loader", "ensure_synthetic_dataset",
    "generate_dataset", "get_dataset_meta", "read_image", "register_coco_openset", "resize_shortest_edge_size",
]
