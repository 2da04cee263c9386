"""A few training iterations of the R50 COCO config (the authors' recipe) starting from an ImageNet file in each
format MODEL.WEIGHTS accepts: detectron2's R-50.pkl (Python-2 pickle, caffe2 names) and torchvision's ResNet-50.

The files have the real names and shapes with random values; the data is a tiny COCO-format set (80 categories,
polygon annotations, known VOC classes and unknown ones) on disk, read through the real dataset and loader.
"""
import json
import os
import sys

import cv2
import numpy as np
import pytest
import torch

from semseg_core.checkpoint import CheckpointError
from semseg_core.config import load_config
from semseg_core.engine.trainer import Trainer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from coco_fixtures import COCO_CATEGORIES  # noqa: E402  (test/data has the COCO category list)
from caffe2_pickle import random_r50_arrays, write_py2_numpy_pickle, write_torchvision_r50  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO_YAML = os.path.join(REPO, "config", "models", "COCO", "semseg_R50_FPN_128k.yaml")
TORCHVISION_OVERRIDES = ["MODEL.BACKBONE.NAME", "resnet50_torchvision", "INPUT.FORMAT", "RGB",
                         "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]"]


def _rect(x0, y0, x1, y1):
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """`coco/annotations/instances_train2017.json` + images: landscape and portrait images, polygons only."""
    root = tmp_path_factory.mktemp("coco_tiny")
    sizes = {1: (64, 96), 2: (96, 64), 3: (64, 96), 4: (96, 64)}  # id -> (h, w)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i, (h, w) in sizes.items()]
    anns, rng = [], np.random.default_rng(0)
    pixels = {i: rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8) for i, (h, w) in sizes.items()}
    for k, (image_id, cat, (x0, y0, x1, y1)) in enumerate([
            (1, 1, (8, 8, 40, 50)), (1, 3, (50, 10, 90, 40)), (2, 18, (5, 5, 50, 40)), (2, 8, (10, 60, 40, 90)),
            (3, 62, (20, 20, 70, 60)), (4, 1, (10, 30, 60, 90))]):
        anns.append({"id": k + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                     "segmentation": [_rect(x0, y0, x1, y1)]})
        pixels[image_id][y0:y1, x0:x1] = 200  # the object is visible
    os.makedirs(root / "coco" / "annotations")
    os.makedirs(root / "coco" / "train2017")
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": i, "name": n, "supercategory": "thing"} for i, n in COCO_CATEGORIES]}
    (root / "coco" / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    for i, image in pixels.items():
        cv2.imwrite(str(root / "coco" / "train2017" / f"{i:012d}.jpg"), image)
    return root


def _train_three_steps(coco_root, out, weights, extra=()):
    cfg = load_config(COCO_YAML, [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights), "DATASETS.ROOT", str(coco_root), "DATASETS.TEST", "[]",
        "INPUT.MIN_SIZE_TRAIN", "[64]", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "[2]", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "SEED", "0",
        "OUTPUT_DIR", str(out), *extra])
    assert cfg.INPUT.MASK_FORMAT == "polygon" and cfg.DATALOADER.ASPECT_RATIO_GROUPING  # the authors' recipe
    trainer = Trainer(cfg)
    body = trainer.model.backbone.body
    stem_before = body.conv1.weight.detach().clone()
    res3_before = body.layer2[0].conv2.weight.detach().clone()
    batches = iter(trainer.data_loader)
    losses = []
    for _ in range(3):
        batch = next(batches)
        assert len({item["image"].shape[1] < item["image"].shape[2] for item in batch}) == 1  # grouped by aspect
        assert all("polygons" in item["instances"] for item in batch)
        losses.append(trainer.run_step(batch))
        trainer.scheduler.step()
    assert all(np.isfinite(v) for step in losses for v in step.values())
    assert {"loss_rpn_loc", "loss_rpn_ctr", "loss_box_reg", "loss_iou", "loss_dml", "loss_cls", "loss_mask"} <= set(
        losses[0])
    assert torch.equal(body.conv1.weight, stem_before)  # stem frozen (FREEZE_AT 2): still the file's values
    assert not torch.equal(body.layer2[0].conv2.weight, res3_before)  # res3 trains
    return body, stem_before


def test_r50_coco_config_trains_from_detectron2_r50_pkl(coco_root, tmp_path):
    arrays = random_r50_arrays(seed=3)
    path = tmp_path / "R-50.pkl"
    write_py2_numpy_pickle(path, arrays)
    body, stem = _train_three_steps(coco_root, tmp_path / "out_pkl", path)
    assert torch.equal(stem, torch.from_numpy(arrays["conv1_w"]))
    assert torch.equal(body.layer1[2].bn3.running_var, torch.from_numpy(arrays["res2_2_branch2c_bn_running_var"]))


def test_r50_coco_config_trains_from_torchvision_resnet50(coco_root, tmp_path):
    path = tmp_path / "resnet50-imagenet.pth"
    state = write_torchvision_r50(path, seed=4)
    body, stem = _train_three_steps(coco_root, tmp_path / "out_tv", path, TORCHVISION_OVERRIDES)
    assert torch.equal(stem, state["conv1.weight"])
    assert torch.equal(body.layer1[2].bn3.running_var, state["layer1.2.bn3.running_var"])


def test_r50_coco_config_without_weights_refuses_to_train(coco_root, tmp_path):
    cfg = load_config(COCO_YAML, ["MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(coco_root), "DATASETS.TEST", "[]",
                                  "OUTPUT_DIR", str(tmp_path / "out")])
    with pytest.raises(CheckpointError, match="needs pretrained weights.*MODEL.WEIGHTS.*R-50.pkl"):
        Trainer(cfg)
