"""The dataset catalogue: a plain dict of names -> where the COCO json and images are and which classes are known.

Built-in names resolve their paths under ``cfg.DATASETS.ROOT`` (default ``./datasets``); datasets registered with
`register_coco_openset` use their paths as given. Known classes come from ``cfg.DATASETS.KNOWN_CLASSES`` when a
config is passed and the list is non-empty (it is the model's row order), else from the catalogue entry.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from semseg_core.config.defaults import COCO_VOC_KNOWN_CLASSES
from semseg_core.data.coco_openset import DatasetError, parse_categories, read_coco_json, resolve_known_categories
from semseg_core.data.graspnet import GRASPNET_KNOWN_IDS
from semseg_core.data.synthetic import DEFAULT_KNOWN_FAMILIES
from semseg_core.data.tabletop_assets import BUILTIN_KNOWN

DEFAULT_DATASETS_ROOT = "./datasets"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    json_file: str
    image_root: str
    known_class_names: Optional[Tuple[str, ...]] = None
    known_category_ids: Optional[Tuple[int, ...]] = None
    under_root: bool = False  # paths are relative to DATASETS.ROOT (built-ins)


DATASET_CATALOG: Dict[str, DatasetSpec] = {}


def _add(spec: DatasetSpec) -> None:
    DATASET_CATALOG[spec.name] = spec


def _register_builtins() -> None:
    voc = tuple(COCO_VOC_KNOWN_CLASSES)
    _add(DatasetSpec("coco_2017_train_invoc", "coco/annotations/instances_train2017.json", "coco/train2017",
                     known_class_names=voc, under_root=True))
    _add(DatasetSpec("coco_2017_val", "coco/annotations/instances_val2017.json", "coco/val2017",
                     known_class_names=voc, under_root=True))
    grasp = tuple(GRASPNET_KNOWN_IDS)
    _add(DatasetSpec("graspnet_train", "graspnet_os/annotations/graspnet_os_train.json", "graspnet_os/images",
                     known_category_ids=grasp, under_root=True))
    for k in range(1, 7):
        _add(DatasetSpec(f"graspnet_test_{k}", f"graspnet_os/annotations/graspnet_os_test_{k}.json",
                         "graspnet_os/images", known_category_ids=grasp, under_root=True))
    for split in ("train", "test"):
        _add(DatasetSpec(f"synthetic_{split}", f"synthetic/{split}/annotations.json", f"synthetic/{split}/images",
                         known_class_names=tuple(DEFAULT_KNOWN_FAMILIES), under_root=True))
    for split in ("train", "test"):  # made by training/make_tabletop.py (built-in meshes)
        _add(DatasetSpec(f"tabletop_{split}", f"tabletop/{split}/annotations.json", f"tabletop/{split}/images",
                         known_class_names=tuple(name for name, _, _ in BUILTIN_KNOWN), under_root=True))


_register_builtins()


def register_coco_openset(name: str, json_file: str, image_root: str,
                          known_class_names: Optional[Sequence[str]] = None,
                          known_category_ids: Optional[Sequence[int]] = None) -> None:
    """Register any COCO-format instances dataset; the other categories of the file count as unknown.

    Give the known classes by exact category name (or by id); with neither, ``cfg.DATASETS.KNOWN_CLASSES`` decides.
    Re-registering a name with a different definition is an error.
    """
    spec = DatasetSpec(name, str(json_file), str(image_root),
                       tuple(known_class_names) if known_class_names is not None else None,
                       tuple(int(i) for i in known_category_ids) if known_category_ids is not None else None)
    old = DATASET_CATALOG.get(name)
    if old is not None and old != spec:
        raise DatasetError(f"dataset {name!r} is already registered with a different definition: {old}")
    DATASET_CATALOG[name] = spec


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASET_CATALOG:
        raise KeyError(f"dataset {name!r} is not registered; known datasets: {', '.join(sorted(DATASET_CATALOG))}")
    return DATASET_CATALOG[name]


def dataset_paths(name: str, cfg=None) -> Tuple[str, str]:
    """(json_file, image_root) of a registered dataset, built-ins resolved under DATASETS.ROOT."""
    spec = get_spec(name)
    if not spec.under_root:
        return spec.json_file, spec.image_root
    root = cfg.DATASETS.ROOT if cfg is not None else DEFAULT_DATASETS_ROOT
    return os.path.join(root, spec.json_file), os.path.join(root, spec.image_root)


_CATEGORY_CACHE: Dict[Tuple[str, int, int], List[Dict]] = {}


def _categories_of(json_file: str, doc: Optional[Dict] = None) -> List[Dict]:
    """Categories of a json, cached by (path, mtime, size) so repeated look-ups do not re-parse big files."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"annotation file not found: {json_file}")
    st = os.stat(json_file)
    key = (os.path.abspath(json_file), st.st_mtime_ns, st.st_size)
    if key not in _CATEGORY_CACHE:
        _CATEGORY_CACHE[key] = parse_categories(doc if doc is not None else read_coco_json(json_file), json_file)
    return _CATEGORY_CACHE[key]


def _known_from(spec: DatasetSpec, cfg) -> Tuple[Optional[Sequence[str]], Optional[Sequence[int]], bool]:
    """(names, ids, names_are_ordered): the config's KNOWN_CLASSES win when given."""
    cfg_names = list(cfg.DATASETS.KNOWN_CLASSES) if cfg is not None else []
    if cfg_names:
        return cfg_names, None, True
    if spec.known_class_names is None and spec.known_category_ids is None:
        raise DatasetError(f"dataset {spec.name!r}: no known classes; set DATASETS.KNOWN_CLASSES or register them")
    return spec.known_class_names, spec.known_category_ids, False


def get_dataset_meta(name: str, cfg=None, _doc: Optional[Dict] = None) -> Dict:
    """What the evaluator and training need to know about a dataset.

    Returns json_file, image_root, known_category_ids (ascending), known_class_names (same order = model rows),
    unknown_category_ids, categories (all, sorted by id), category_names ({id: name}).
    """
    spec = get_spec(name)
    json_file, image_root = dataset_paths(name, cfg)
    if not os.path.isfile(json_file) and name.startswith("synthetic_"):
        raise FileNotFoundError(
            f"annotation file not found: {json_file}; generate the synthetic set with "
            "`python -m semseg_core.data.synthetic` or semseg_core.data.ensure_synthetic_dataset(cfg)"
        )
    categories = _categories_of(json_file, _doc)
    names, ids, ordered = _known_from(spec, cfg)
    known_ids, known_names = resolve_known_categories(categories, json_file, names, ids)
    if ordered and list(names) != known_names:
        raise DatasetError(
            f"DATASETS.KNOWN_CLASSES must list the known classes in ascending category-id order of {json_file} "
            f"(that order is the model's class index); expected {known_names}, got {list(names)}"
        )
    known_set = set(known_ids)
    return {
        "name": name,
        "json_file": json_file,
        "image_root": image_root,
        "known_category_ids": known_ids,
        "known_class_names": known_names,
        "unknown_category_ids": [c["id"] for c in categories if c["id"] not in known_set],
        "categories": [dict(c) for c in categories],
        "category_names": {c["id"]: c["name"] for c in categories},
    }
