"""Small annotation files in the exact real formats (COCO instances json, GraspNet-OS json) plus their images."""

import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from semseg_core.config import get_cfg
from semseg_core.data.graspnet import GRASPNET_KNOWN_CLASSES, GRASPNET_KNOWN_IDS

# The 80 COCO categories with their real (non-contiguous) ids.
COCO_CATEGORIES = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
]


def rect_polygon(x0, y0, x1, y1):
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def rle_of(mask: np.ndarray, compressed: bool = True):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        rle["counts"] = rle["counts"].decode("ascii")
        return rle
    # uncompressed RLE (list of run lengths, column-major), as COCO crowd annotations use
    flat = mask.astype(np.uint8).flatten(order="F")
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    return {"size": list(mask.shape), "counts": runs}


def _ann(ann_id, image_id, cat, bbox, seg, iscrowd=0, area=None):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [float(v) for v in bbox],
            "segmentation": seg, "iscrowd": iscrowd, "area": float(area if area is not None else bbox[2] * bbox[3])}


def write_images(image_dir, images):
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in images:
        pixels = rng.integers(0, 255, size=(img["height"], img["width"], 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(image_dir, img["file_name"]), pixels)


def coco_doc():
    """COCO instances json: polygons, compressed RLE, an uncompressed-RLE crowd, unknown classes,
    an image with only an unknown object and one zero-area polygon."""
    images = [
        {"id": 11, "file_name": "000011.png", "height": 48, "width": 64},
        {"id": 12, "file_name": "000012.png", "height": 48, "width": 64},
        {"id": 13, "file_name": "000013.png", "height": 64, "width": 48},
    ]
    truck = np.zeros((48, 64), bool)
    truck[30:44, 40:60] = True
    crowd = np.zeros((48, 64), bool)
    crowd[2:10, 2:30] = True
    car = np.zeros((64, 48), bool)
    car[10:30, 5:25] = True
    annotations = [
        _ann(101, 11, 1, (4, 12, 20, 16), [rect_polygon(4, 12, 24, 28)]),  # person, polygon
        _ann(102, 11, 8, (40, 30, 20, 14), rle_of(truck)),  # truck: unknown
        _ann(103, 11, 1, (2, 2, 28, 8), rle_of(crowd, compressed=False), iscrowd=1),  # crowd person
        _ann(104, 11, 3, (10, 10, 10, 10), [[10, 10, 15, 15, 20, 20]], area=0),  # zero-area polygon
        _ann(105, 12, 8, (40, 30, 20, 14), rle_of(truck)),  # image 12 has only an unknown object
        _ann(106, 13, 3, (5, 10, 20, 20), rle_of(car)),  # car, compressed RLE
        _ann(107, 13, 72, (30, 40, 10, 20), [rect_polygon(30, 40, 40, 60)]),  # tv, polygon
    ]
    categories = [{"id": i, "name": n, "supercategory": "thing"} for i, n in COCO_CATEGORIES]
    return {"info": {"description": "fixture"}, "images": images, "annotations": annotations, "categories": categories}


def write_coco_fixture(root, split="train2017", doc=None):
    """`root/coco/annotations/instances_<split>.json` + `root/coco/<split>/` like the real download."""
    doc = doc or coco_doc()
    ann_dir = os.path.join(root, "coco", "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    json_file = os.path.join(ann_dir, f"instances_{split}.json")
    with open(json_file, "w") as f:
        json.dump(doc, f)
    write_images(os.path.join(root, "coco", split), doc["images"])
    return json_file


def graspnet_doc(unknown_in_train=True):
    """GraspNet-OS json: 88 categories (ids 1..88), polygon masks, known and unknown objects."""
    known_names = dict(zip(GRASPNET_KNOWN_IDS, GRASPNET_KNOWN_CLASSES))
    categories = [{"id": i, "name": known_names.get(i, f"object_{i - 1:03d}"), "supercategory": "object"}
                  for i in range(1, 89)]
    images = [{"id": k, "file_name": f"{k:06d}.png", "height": 72, "width": 128} for k in (1, 2)]
    annotations = [
        _ann(1, 1, 1, (10, 10, 20, 20), [rect_polygon(10, 10, 30, 30)]),  # cracker_box (known)
        _ann(2, 1, 2, (40, 10, 20, 20), [rect_polygon(40, 10, 60, 30)]),  # id 2: unknown
        _ann(3, 1, 67, (70, 30, 30, 30), [rect_polygon(70, 30, 100, 60)]),  # head_shoulders_care (known)
        _ann(4, 2, 88, (5, 5, 30, 30), [rect_polygon(5, 5, 35, 35)]),  # id 88: unknown
        _ann(5, 2, 3, (50, 20, 10, 10), [rect_polygon(50, 20, 60, 30)]),  # tomato_soup_can (known)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_graspnet_fixture(root, splits=("train", "test_1", "test_3")):
    ann_dir = os.path.join(root, "graspnet_os", "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    doc = graspnet_doc()
    for split in splits:
        with open(os.path.join(ann_dir, f"graspnet_os_{split}.json"), "w") as f:
            json.dump(doc, f)
    write_images(os.path.join(root, "graspnet_os", "images"), doc["images"])


def small_cfg(root, known=None, num_known=20, min_size=48, flip="horizontal", fmt="BGR", mask_format="bitmask",
              num_classes=0):
    """Default config with small image sizes and the dataset root at `root` (bitmask targets: the fixtures mix
    polygons and RLE; no category-count check unless `num_classes`)."""
    cfg = get_cfg()
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.DATASETS.ROOT = str(root)
    if known is not None:
        cfg.DATASETS.KNOWN_CLASSES = tuple(known)
    cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES = num_known
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.INPUT.RANDOM_FLIP = flip
    cfg.INPUT.FORMAT = fmt
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg
