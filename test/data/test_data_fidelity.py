"""The data pipeline as detectron2 runs it for the authors: PIL reading with EXIF orientation, PIL bilinear
(images) / nearest (masks) resizing of uint8 arrays, aspect-ratio grouped batches, polygon mask targets rasterised
inside each proposal box, and config keys that are read rather than ignored."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from semseg_core.config import ConfigError, load_config
from semseg_core.data import DatasetError, build_dataset, read_image
from semseg_core.data.image_io import image_size
from semseg_core.data.loader import SeededBatchSampler
from semseg_core.data.transforms import ResizeFlip
from semseg_core.modeling.modulated_mask_head import rasterize_polygons_in_boxes

from .coco_fixtures import coco_doc, rect_polygon, small_cfg, write_coco_fixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXIF_ORIENTATION = 0x0112


def _marked_image(h=20, w=30):
    image = np.zeros((h, w, 3), np.uint8)
    image[:4, :6] = (255, 0, 0)  # red block at the top-left corner
    image[-3:, -5:] = (0, 0, 255)  # blue block at the bottom-right corner
    return image


@pytest.mark.parametrize("orientation, upright", [
    (1, lambda a: a),
    (3, lambda a: a[::-1, ::-1]),  # stored upside down
    (6, lambda a: np.rot90(a, k=-1)),  # stored rotated: display turns it 90 degrees clockwise
    (8, lambda a: np.rot90(a, k=1)),
])
def test_read_image_applies_exif_orientation_and_channel_order(tmp_path, orientation, upright):
    stored = _marked_image()
    path = str(tmp_path / f"o{orientation}.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    expected = upright(stored)
    rgb = read_image(path, "RGB")
    assert np.array_equal(rgb, expected)
    assert np.array_equal(read_image(path, "BGR"), expected[:, :, ::-1])
    assert image_size(path) == expected.shape[:2]
    assert rgb.flags.writeable and read_image(path, "BGR").flags.c_contiguous


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png.*listed in a.json"):
        read_image(str(tmp_path / "nope.png"), "RGB", listed_in="a.json")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.png"):
        read_image(str(bad), "RGB")
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        read_image(str(bad), "YUV")


def test_resize_is_pil_bilinear_on_uint8_and_masks_pil_nearest():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    masks = (rng.random((2, 37, 53)) > 0.5).astype(np.uint8)
    for new_h, new_w in [(80, 115), (20, 29), (37, 53), (64, 48)]:
        t = ResizeFlip(37, 53, new_h, new_w)
        assert np.array_equal(t.apply_image(image),
                              np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)))
        for m, out in zip(masks, t.apply_masks(masks)):
            assert np.array_equal(out, np.asarray(Image.fromarray(m).resize((new_w, new_h), Image.NEAREST)))
    flipped = ResizeFlip(37, 53, 80, 115, hflip=True).apply_image(image)
    assert np.array_equal(flipped, np.asarray(Image.fromarray(image).resize((115, 80), Image.BILINEAR))[:, ::-1])


def test_dataset_items_are_pil_resized_file_pixels(tmp_path):
    write_coco_fixture(tmp_path, "val2017")
    cfg = small_cfg(tmp_path, min_size=100, fmt="RGB")
    ds = build_dataset(cfg, "coco_2017_val", is_train=False)
    item = ds[0]
    original = np.asarray(Image.open(ds.records[0]["file_name"]).convert("RGB"))  # 48 x 64 -> 100 x 133
    expected = np.asarray(Image.fromarray(original).resize((133, 100), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(item["image"].numpy(), expected)


# ---- aspect-ratio grouping ---------------------------------------------------------------------------------
def _ids(batches):
    return [[i for i, _, _ in b] for b in batches]


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_aspect_grouping_batches_landscape_and_portrait_apart_and_resumes_exactly():
    buckets = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1]  # 0 = landscape (w > h), as detectron2's AspectRatioGroupedDataset
    sampler = SeededBatchSampler(len(buckets), 4, seed=5, aspect_buckets=buckets)
    batches = _take(sampler, 12)
    for b in batches:
        assert len(b) == 4 and len({buckets[i] for i, _, _ in b}) == 1
    positions = [g for b in batches for _, _, g in b]
    assert len(set(positions)) == len(positions)  # every stream position used at most once
    for b in batches:  # an image is emitted with the augmentation seed of its own stream position
        assert all(i == sampler._index_at(g) for i, _, g in b)
    resumed = _take(SeededBatchSampler(len(buckets), 4, seed=5, start_iter=7, aspect_buckets=buckets), 5)
    assert resumed == batches[7:12]
    # rank r groups its own share of the stream: the positions it takes without grouping
    rank1 = _take(SeededBatchSampler(len(buckets), 4, seed=5, rank=1, world_size=2, aspect_buckets=buckets), 6)
    assert all(g % 4 in (2, 3) for b in rank1 for _, _, g in b)


def test_aspect_grouping_with_one_shape_gives_the_ungrouped_batches():
    grouped = _take(SeededBatchSampler(9, 4, seed=2, aspect_buckets=[1] * 9), 6)
    plain = _take(SeededBatchSampler(9, 4, seed=2), 6)
    assert grouped == plain


# ---- polygon mask targets ----------------------------------------------------------------------------------
def test_polygons_are_rasterised_inside_each_proposal_box():
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0], [10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 40.0, 20.0]])
    polygons = [
        [np.array(rect_polygon(10, 10, 30, 30))],  # fills its box
        [np.array(rect_polygon(10, 10, 20, 30))],  # left half of the box
        [np.array(rect_polygon(0, 0, 10, 10)), np.array(rect_polygon(30, 10, 40, 20))],  # two parts, one object
    ]
    out = rasterize_polygons_in_boxes(polygons, box, 4)
    assert out.dtype == torch.bool and out.shape == (3, 4, 4)
    assert out[0].all()
    assert out[1][:, :2].all() and not out[1][:, 2:].any()
    # box 40 x 20 -> x scaled by 4/40, y by 4/20: parts cover x 0..1, y 0..2 and x 3..4, y 2..4
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:1] = True
    expected[2:4, 3:4] = True
    assert np.array_equal(out[2].numpy(), expected)


def _polygon_only_root(tmp_path):
    doc = coco_doc()
    doc["annotations"] = [a for a in doc["annotations"] if isinstance(a["segmentation"], list)]
    write_coco_fixture(tmp_path, "train2017", doc=doc)
    return tmp_path


def test_polygon_mask_format_gives_polygons_and_bitmask_gives_bitmaps(tmp_path):
    root = _polygon_only_root(tmp_path)
    poly = build_dataset(small_cfg(root, flip="none", mask_format="polygon"), "coco_2017_train_invoc", True)
    bits = build_dataset(small_cfg(root, flip="none", mask_format="bitmask"), "coco_2017_train_invoc", True)
    p_inst, b_inst = poly[(0, 0, 0)]["instances"], bits[(0, 0, 0)]["instances"]
    assert "masks" not in p_inst and "masks" in b_inst
    assert len(p_inst["polygons"]) == len(p_inst["boxes"]) == 1
    assert np.allclose(p_inst["polygons"][0][0], rect_polygon(4, 12, 24, 28))  # 64x48 at min size 48: scale 1


def test_polygon_mask_format_refuses_rle_annotations_by_name(tmp_path):
    write_coco_fixture(tmp_path, "train2017")  # image 13 has an RLE car (known)
    ds = build_dataset(small_cfg(tmp_path, mask_format="polygon"), "coco_2017_train_invoc", True)
    with pytest.raises(DatasetError, match="annotation 106 is an RLE mask.*INPUT.MASK_FORMAT bitmask"):
        for index in range(len(ds)):
            ds[(index, 0, 0)]


# ---- keys that are read ------------------------------------------------------------------------------------
def test_num_classes_is_checked_against_the_dataset(tmp_path):
    write_coco_fixture(tmp_path, "val2017")
    n = len(json.load(open(tmp_path / "coco" / "annotations" / "instances_val2017.json"))["categories"])
    build_dataset(small_cfg(tmp_path, num_classes=n), "coco_2017_val", is_train=False)
    with pytest.raises(DatasetError, match=f"NUM_CLASSES is 88 but .*instances_val2017.json.* has {n} categories"):
        build_dataset(small_cfg(tmp_path, num_classes=88), "coco_2017_val", is_train=False)


@pytest.mark.parametrize("key, value, message", [
    ("VERSION", "1", "VERSION is 1"),
    ("MODEL.RPN.BOUNDARY_THRESH", "0", "BOUNDARY_THRESH is 0"),
    ("INPUT.MASK_FORMAT", "rle", "MASK_FORMAT"),
    ("INPUT.TEST_RESIZE", "cv2", "TEST_RESIZE"),
])
def test_unimplemented_values_of_detectron2_keys_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [key, value])


def test_faithful_configs_name_their_weights_and_graspnet_tests_all_six_splits():
    paths = [os.path.join(REPO, "config", "models", d, "semseg_R50_FPN_128k.yaml") for d in ("COCO", "GraspNet")]
    coco, grasp = (load_config(p) for p in paths)
    assert list(grasp.DATASETS.TEST) == [f"graspnet_test_{k}" for k in range(1, 7)]
    # MODEL.WEIGHTS stays "" (the Predictor reads it as a whole model); the file is named where the key is set,
    # and training without it stops with a message naming it (test_checkpoint)
    assert "MODEL.WEIGHTS pretrained/R-50.pkl" in open(paths[0]).read()
    for cfg in (coco, grasp):
        assert (cfg.INPUT.MASK_FORMAT, cfg.DATALOADER.ASPECT_RATIO_GROUPING, cfg.INPUT.TEST_RESIZE) == (
            "polygon", True, "pil")
