"""Datasets of model-input dicts (CONTRACTS.md "Model input") built from the catalogue.

Training items carry only known-class instances (contiguous known index, boxes and masks at the resized size);
test items carry the image and its sizes, and the dataset's `records` keep every annotation, each with its
`known_index` (0..K-1, or UNKNOWN_ID for the classes evaluated as unknown).
"""

import logging
from collections import Counter
from typing import Dict, List, Tuple, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from semseg_core.constants import UNKNOWN_ID
from semseg_core.data.catalog import dataset_paths, get_dataset_meta
from semseg_core.data.coco_openset import DatasetError, filter_for_training, load_coco_records, read_coco_json
from semseg_core.data.image_io import image_size, read_image
from semseg_core.data.synthetic import ensure_synthetic_dataset
from semseg_core.data.transforms import ResizeFlip, build_test_transform, sample_train_transform

logger = logging.getLogger(__name__)


def _annotation_mask(seg, h: int, w: int, t: ResizeFlip, where: str) -> np.ndarray:
    """Bitmap of one annotation at the transformed size: polygons are transformed then rasterised, RLE resized."""
    if isinstance(seg, list):
        polys = [p.tolist() for p in t.apply_polygons(seg)]
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, t.new_h, t.new_w))
        return mask_utils.decode(rle)
    if list(seg["size"]) != [h, w]:
        raise DatasetError(f"{where}: RLE size {seg['size']} differs from the image size {[h, w]}")
    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
    if isinstance(rle.get("counts"), str):
        rle = dict(rle, counts=rle["counts"].encode("ascii"))
    return t.apply_masks(mask_utils.decode(rle)[None])[0]


class OpenSetDataset(Dataset):
    """Map-style dataset. Index with an int, or with ``(index, *rng_key)`` so that the training augmentation is
    drawn from ``numpy.random.default_rng(rng_key)`` (what the deterministic train loader does)."""

    def __init__(self, records: List[Dict], meta: Dict, cfg, is_train: bool):
        self.records = records
        self.meta = meta
        self.is_train = is_train
        self.input_cfg = cfg.INPUT
        self.image_format = cfg.INPUT.FORMAT
        self.mask_on = bool(cfg.MODEL.MASK_ON)
        self.mask_format = cfg.INPUT.MASK_FORMAT
        if self.mask_format not in ("polygon", "bitmask"):
            raise ValueError(f"INPUT.MASK_FORMAT must be 'polygon' or 'bitmask', got {self.mask_format!r}")
        self.known_index = {cid: k for k, cid in enumerate(meta["known_category_ids"])}

    def __len__(self) -> int:
        return len(self.records)

    def aspect_buckets(self) -> List[int]:
        """0 for a landscape image (w > h), 1 otherwise (detectron2's grouping), from the json's sizes; an image
        the json gives no size for is measured from its file header (EXIF orientation applied)."""
        return [0 if w > h else 1 for h, w in (self._size_of(rec) for rec in self.records)]

    def _size_of(self, rec: Dict) -> Tuple[int, int]:
        if rec["height"] is not None and rec["width"] is not None:
            return int(rec["height"]), int(rec["width"])
        return image_size(rec["file_name"], self.meta["json_file"])

    def __getitem__(self, key: Union[int, Tuple[int, ...]]) -> Dict:
        index, rng_key = (key[0], list(key[1:])) if isinstance(key, tuple) else (int(key), [int(key)])
        rec = self.records[index]
        image = read_image(rec["file_name"], self.image_format, self.meta["json_file"])
        h, w = image.shape[:2]
        if rec["height"] is not None and (rec["height"], rec["width"]) != (h, w):
            raise DatasetError(
                f"{self.meta['json_file']}: image {rec['file_name']} is {w}x{h} but the json says "
                f"{rec['width']}x{rec['height']}"
            )
        if self.is_train:
            t = sample_train_transform(h, w, self.input_cfg, np.random.default_rng(rng_key))
        else:
            t = build_test_transform(h, w, self.input_cfg)
        item = {
            "image": torch.from_numpy(t.apply_image(image).transpose(2, 0, 1).copy()),
            "height": h,
            "width": w,
            "image_id": rec["image_id"],
            "file_name": rec["file_name"],
        }
        if self.is_train:
            item["instances"] = self._instances(rec, t)
        return item

    def _instances(self, rec: Dict, t: ResizeFlip) -> Dict[str, torch.Tensor]:
        anns = rec["annotations"]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes = t.apply_boxes(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, t.new_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, t.new_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # boxes entirely outside the image
        anns = [a for a, k in zip(anns, keep) if k]
        out = {
            "boxes": torch.from_numpy(boxes[keep]),
            "classes": torch.tensor([self.known_index[a["category_id"]] for a in anns], dtype=torch.int64),
        }
        if self.mask_on and self.mask_format == "polygon":
            out["polygons"] = [self._polygons(a, t) for a in anns]
        elif self.mask_on:
            masks = np.zeros((len(anns), t.new_h, t.new_w), dtype=np.uint8)
            for i, a in enumerate(anns):
                where = f"{self.meta['json_file']}: annotation {a['id']}"
                masks[i] = _annotation_mask(a["segmentation"], t.h, t.w, t, where)
            out["masks"] = torch.from_numpy(masks)
        return out


    def _polygons(self, ann: Dict, t: ResizeFlip) -> List[np.ndarray]:
        """The annotation's polygons in resized-image pixels (float64 [x1, y1, ...]); the mask head rasterises them
        inside each proposal box (detectron2's PolygonMasks path)."""
        seg = ann["segmentation"]
        if not isinstance(seg, list):
            raise DatasetError(
                f"{self.meta['json_file']}: annotation {ann['id']} is an RLE mask, but INPUT.MASK_FORMAT 'polygon' "
                "needs polygon annotations (detectron2 refuses them too); set INPUT.MASK_FORMAT bitmask")
        return t.apply_polygons(seg)


def build_dataset(cfg, name: str, is_train: bool) -> OpenSetDataset:
    """Dataset `name` of the catalogue as model-input dicts; training keeps only known, non-crowd instances."""
    json_file, image_root = dataset_paths(name, cfg)
    if name.startswith("synthetic_"):
        ensure_synthetic_dataset(cfg, names=[name])
    doc = read_coco_json(json_file)
    meta = get_dataset_meta(name, cfg, _doc=doc)
    num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    if num_classes and len(meta["categories"]) != num_classes:
        raise DatasetError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but {json_file} (dataset {name!r}) has "
            f"{len(meta['categories'])} categories; set it to that number (or 0 to skip this check)")
    need_masks = is_train and bool(cfg.MODEL.MASK_ON)
    records, stats = load_coco_records(doc, json_file, image_root, need_masks=need_masks)
    del doc
    if is_train:
        k = int(cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES)
        if k != len(meta["known_category_ids"]):
            raise DatasetError(
                f"MODEL.ROI_HEADS.NUM_KNOWN_CLASSES is {k} but dataset {name!r} has "
                f"{len(meta['known_category_ids'])} known classes {meta['known_class_names']}"
            )
        records = filter_for_training(records, meta["known_category_ids"],
                                      bool(cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS), stats)
        if not records:
            raise DatasetError(f"{json_file}: no training image has a known-class annotation")
    else:
        known_index = {cid: i for i, cid in enumerate(meta["known_category_ids"])}
        for rec in records:
            for ann in rec["annotations"]:
                ann["known_index"] = known_index.get(ann["category_id"], UNKNOWN_ID)
    _log_summary(name, json_file, records, stats, is_train)
    return OpenSetDataset(records, meta, cfg, is_train)


def _log_summary(name: str, json_file: str, records: List[Dict], stats: Counter, is_train: bool) -> None:
    n_ann = sum(len(r["annotations"]) for r in records)
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(stats.items())) or "nothing"
    logger.info("dataset %s (%s, %s): %d images, %d annotations; dropped: %s", name, json_file,
                "train" if is_train else "test", len(records), n_ann, dropped)
    if stats.get("zero-area polygon") or stats.get("zero-area box"):
        logger.warning("dataset %s: skipped %d zero-area polygon and %d zero-area box annotations in %s", name,
                       stats.get("zero-area polygon", 0), stats.get("zero-area box", 0), json_file)
