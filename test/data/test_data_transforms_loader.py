"""Transforms keep image, boxes and masks aligned; the train loader is deterministic, resumable and sharded."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from semseg_core.config import get_cfg
from semseg_core.data import build_train_loader, ensure_synthetic_dataset, resize_shortest_edge_size
from semseg_core.data.synthetic import DEFAULT_KNOWN_FAMILIES
from semseg_core.data.transforms import ResizeFlip, build_test_transform, sample_train_transform

from .coco_fixtures import small_cfg


@pytest.mark.parametrize("h, w, short, max_size, expected", [
    (480, 640, 800, 1333, (800, 1067)),  # 1066.67 rounds up
    (640, 480, 800, 1333, (1067, 800)),
    (100, 1000, 800, 1333, (133, 1333)),  # capped by the long side
    (256, 256, 256, 512, (256, 256)),
    (375, 500, 0, 1333, (375, 500)),  # 0 disables resizing
])
def test_resize_shortest_edge_size(h, w, short, max_size, expected):
    assert resize_shortest_edge_size(h, w, short, max_size) == expected


def _object_mask(h, w):
    m = np.zeros((h, w), np.uint8)
    m[5:20, 30:52] = 1  # an off-centre rectangle so a flip is visible
    m[20:28, 30:36] = 1
    return m


@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True)])
def test_image_boxes_masks_polygons_stay_aligned(hflip, vflip):
    h, w = 40, 60
    t = ResizeFlip(h, w, 80, 120, hflip=hflip, vflip=vflip)
    mask = _object_mask(h, w)
    image = np.stack([mask * 255] * 3, axis=-1).astype(np.uint8)
    box = np.array([[30, 5, 52, 28]], np.float32)
    out_img, out_mask, out_box = t.apply_image(image), t.apply_masks(mask[None])[0], t.apply_boxes(box)[0]
    ys, xs = np.nonzero(out_mask)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], out_box, atol=1.0)
    assert ((out_img[..., 0] > 127) == out_mask.astype(bool)).mean() > 0.99  # image content follows the mask
    poly = [np.array([30, 5, 52, 5, 52, 20, 36, 20, 36, 28, 30, 28], float)]
    rle = mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in t.apply_polygons(poly)], 80, 120))
    poly_mask = mask_utils.decode(rle)
    iou = (poly_mask & out_mask).sum() / (poly_mask | out_mask).sum()
    assert iou > 0.9


def test_train_transform_sampling_is_seeded_and_uses_the_listed_sizes():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (200, 240, 280)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    draws = [sample_train_transform(300, 400, cfg.INPUT, np.random.default_rng([1, i])) for i in range(40)]
    again = [sample_train_transform(300, 400, cfg.INPUT, np.random.default_rng([1, i])) for i in range(40)]
    assert draws == again
    assert {d.new_h for d in draws} == {200, 240, 280}
    assert 5 < sum(d.hflip for d in draws) < 35 and not any(d.vflip for d in draws)
    cfg.INPUT.RANDOM_FLIP = "none"
    assert not any(sample_train_transform(300, 400, cfg.INPUT, np.random.default_rng(i)).hflip for i in range(20))
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 800, 1333
    assert build_test_transform(480, 640, cfg.INPUT) == ResizeFlip(480, 640, 800, 1067)


@pytest.fixture(scope="module")
def synthetic_cfg(tmp_path_factory):
    cfg = small_cfg(tmp_path_factory.mktemp("loader"), known=DEFAULT_KNOWN_FAMILIES, num_known=6)
    cfg.INPUT.MIN_SIZE_TRAIN = (56, 64, 72)
    cfg.DATASETS.TRAIN = ("synthetic_train",)
    cfg.DATASETS.SYNTHETIC.TRAIN_IMAGES = 5  # small: several epochs are crossed in a few batches
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 64
    cfg.SOLVER.IMS_PER_BATCH = 4
    ensure_synthetic_dataset(cfg, names=["synthetic_train"], progress=False)
    return cfg


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(batch_a, batch_b):
    return len(batch_a) == len(batch_b) and all(
        a["image_id"] == b["image_id"] and torch.equal(a["image"], b["image"])
        and torch.equal(a["instances"]["boxes"], b["instances"]["boxes"])
        and torch.equal(a["instances"]["masks"], b["instances"]["masks"])
        for a, b in zip(batch_a, batch_b))


def test_train_loader_is_deterministic_and_resumes_exactly(synthetic_cfg):
    fresh = _take(build_train_loader(synthetic_cfg, seed=3), 5)
    assert all(_same(a, b) for a, b in zip(fresh, _take(build_train_loader(synthetic_cfg, seed=3), 5)))
    resumed = _take(build_train_loader(synthetic_cfg, seed=3, start_iter=3), 2)
    assert _same(resumed[0], fresh[3]) and _same(resumed[1], fresh[4])
    # every epoch of 5 images is a permutation: 20 samples = each image 4 times
    ids = [item["image_id"] for batch in fresh[:5] for item in batch]
    assert sorted(ids) == sorted(list(range(1, 6)) * 4)
    other = _take(build_train_loader(synthetic_cfg, seed=4), 5)
    assert [i["image_id"] for b in other for i in b] != ids


def test_train_loader_shards_batches_over_ranks(synthetic_cfg):
    whole = _take(build_train_loader(synthetic_cfg, seed=3), 2)
    rank0 = _take(build_train_loader(synthetic_cfg, rank=0, world_size=2, seed=3), 2)
    rank1 = _take(build_train_loader(synthetic_cfg, rank=1, world_size=2, seed=3), 2)
    for k in range(2):
        assert len(rank0[k]) == len(rank1[k]) == 2
        assert _same(rank0[k] + rank1[k], whole[k])
    with pytest.raises(ValueError, match="divisible"):
        next(iter(build_train_loader(synthetic_cfg, rank=0, world_size=3, seed=3)))


def test_worker_processes_give_the_same_batches(synthetic_cfg):
    cfg = synthetic_cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = 1
    with_worker = _take(build_train_loader(cfg, seed=3), 2)
    assert all(_same(a, b) for a, b in zip(with_worker, _take(build_train_loader(synthetic_cfg, seed=3), 2)))


def test_several_training_datasets_are_concatenated(synthetic_cfg):
    cfg = synthetic_cfg.clone()
    cfg.DATASETS.TRAIN = ("synthetic_train", "synthetic_train")
    loader = build_train_loader(cfg, seed=3)
    assert len(loader.dataset) == 10
    ids = [item["image_id"] for batch in _take(loader, 5) for item in batch]
    assert sorted(ids) == sorted(list(range(1, 6)) * 4)  # 20 samples = two epochs over 2 x 5 images
