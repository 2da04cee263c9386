"""Synthetic open-set scene generator: determinism, exact masks, openness, family split, CLI, first-use setup."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from semseg_core.data import build_dataset, ensure_synthetic_dataset, generate_dataset
from semseg_core.data.synthetic import DEFAULT_KNOWN_FAMILIES, DEFAULT_UNKNOWN_FAMILIES, MIN_VISIBLE_AREA_FRACTION
from semseg_core.data.synthetic_shapes import ALL_FAMILIES, FAMILY_CATEGORY_ID

from .coco_fixtures import small_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _load(out):
    with open(os.path.join(out, "annotations.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("syn") / "test")
    generate_dataset(out, 40, seed=3, openness=0.5, split="test", progress=False)
    return out


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        generate_dataset(out, 4, seed=seed, split="test", progress=False)
    assert _read(f"{a}/annotations.json") == _read(f"{b}/annotations.json")
    for k in range(1, 5):
        assert _read(f"{a}/images/{k:06d}.png") == _read(f"{b}/images/{k:06d}.png")
    assert _read(f"{a}/images/000001.png") != _read(f"{c}/images/000001.png")


def test_masks_are_exact_visible_parts(test_set):
    doc = _load(test_set)
    # every family is a category, with ids that never change (configs and checkpoints rely on them)
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [(i + 1, n) for i, n in enumerate(ALL_FAMILIES)]
    assert [FAMILY_CATEGORY_ID[f] for f in DEFAULT_KNOWN_FAMILIES] == [1, 2, 3, 4, 5, 6]
    assert [FAMILY_CATEGORY_ID[f] for f in DEFAULT_UNKNOWN_FAMILIES] == [9, 10, 11, 12]
    anns_by_image = {}
    for ann in doc["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    for img in doc["images"]:
        image = cv2.imread(os.path.join(test_set, "images", img["file_name"]))
        assert image.shape == (img["height"], img["width"], 3) == (256, 256, 3)
        anns = anns_by_image[img["id"]]
        assert len(anns) >= 1
        union = np.zeros((256, 256), np.int32)
        for ann in anns:
            m = mask_utils.decode(ann["segmentation"])
            ys, xs = np.nonzero(m)
            assert ann["area"] == m.sum() >= MIN_VISIBLE_AREA_FRACTION * 256 * 256
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["iscrowd"] == 0
            union += m
        assert union.max() == 1  # visible parts never overlap: occlusion is resolved


def test_openness_share_and_train_has_only_known(test_set, tmp_path):
    doc = _load(test_set)
    unknown_ids = {FAMILY_CATEGORY_ID[f] for f in DEFAULT_UNKNOWN_FAMILIES}
    share = np.mean([a["category_id"] in unknown_ids for a in doc["annotations"]])
    assert 0.35 <= share <= 0.65, share
    assert doc["info"]["openness"] == 0.5

    train = str(tmp_path / "train")
    generate_dataset(train, 20, seed=3, split="train", progress=False)
    known_ids = {FAMILY_CATEGORY_ID[f] for f in DEFAULT_KNOWN_FAMILIES}
    assert {a["category_id"] for a in _load(train)["annotations"]} <= known_ids

    closed = str(tmp_path / "closed")
    generate_dataset(closed, 10, seed=3, openness=0.0, split="test", progress=False)
    assert not any(a["category_id"] in unknown_ids for a in _load(closed)["annotations"])
    all_unknown = str(tmp_path / "open")
    generate_dataset(all_unknown, 10, seed=3, openness=1.0, split="test", progress=False)
    assert all(a["category_id"] in unknown_ids for a in _load(all_unknown)["annotations"])


def test_custom_family_split(tmp_path):
    out = str(tmp_path / "custom")
    generate_dataset(out, 10, seed=0, known_families=["hexagon", "ellipse"], unknown_families=["box"],
                     openness=0.3, image_size=(96, 128), split="test", progress=False)
    doc = _load(out)
    used = {a["category_id"] for a in doc["annotations"]}
    assert used <= {FAMILY_CATEGORY_ID[f] for f in ("hexagon", "ellipse", "box")}
    assert (doc["images"][0]["height"], doc["images"][0]["width"]) == (96, 128)


@pytest.mark.parametrize("kwargs, message", [
    (dict(known_families=["box", "blob"]), "unknown shape family 'blob'"),
    (dict(known_families=["box"], unknown_families=["box"]), "both known and unknown"),
    (dict(openness=1.5), r"openness must be in \[0, 1\]"),
    (dict(split="val"), "split must be"),
])
def test_bad_generator_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(str(tmp_path / "x"), 1, seed=0, **kwargs)


def test_cli_help_and_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "semseg_core.data.synthetic"]
    help_run = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env, timeout=60)
    assert help_run.returncode == 0 and "--openness" in help_run.stdout
    run = subprocess.run(cmd + ["--out", str(tmp_path / "cli"), "--num-images", "2", "--seed", "5"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert len(_load(str(tmp_path / "cli"))["images"]) == 2
    bad = subprocess.run(cmd + ["--out", str(tmp_path / "bad"), "--known", "box,blob"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "blob" in bad.stderr


def test_ensure_synthetic_dataset_generates_once_and_regenerates_on_change(tmp_path):
    cfg = small_cfg(tmp_path, known=DEFAULT_KNOWN_FAMILIES, num_known=6)
    cfg.DATASETS.SYNTHETIC.TRAIN_IMAGES = 3
    cfg.DATASETS.SYNTHETIC.TEST_IMAGES = 2
    train_json, test_json = ensure_synthetic_dataset(cfg, progress=False)
    assert len(_load(os.path.dirname(test_json))["images"]) == 2
    stamp = os.stat(train_json).st_mtime_ns
    ensure_synthetic_dataset(cfg, progress=False)
    assert os.stat(train_json).st_mtime_ns == stamp  # same parameters: left alone
    cfg.DATASETS.SYNTHETIC.TRAIN_IMAGES = 4
    ensure_synthetic_dataset(cfg, names=["synthetic_train"], progress=False)
    assert len(_load(os.path.dirname(train_json))["images"]) == 4
    assert sorted(os.listdir(tmp_path / "synthetic")) == ["test", "train"]  # no temporary folders left

    ds = build_dataset(cfg, "synthetic_train", is_train=True)
    inst = ds[(0, 1, 0)]["instances"]
    assert len(ds) == 4 and inst["classes"].max() < 6 and inst["masks"].shape[0] == len(inst["classes"])
