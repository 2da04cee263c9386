"""COCO open-set and GraspNet-OS loaders on fixture files in the real formats."""

import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from semseg_core.config.defaults import COCO_VOC_KNOWN_CLASSES
from semseg_core.constants import UNKNOWN_ID
from semseg_core.data import DatasetError, build_dataset, build_test_loader, get_dataset_meta, register_coco_openset
from semseg_core.data.graspnet import GRASPNET_KNOWN_CLASSES, GRASPNET_KNOWN_IDS

from .coco_fixtures import small_cfg, write_coco_fixture, write_graspnet_fixture

VOC_IDS = [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72]


@pytest.fixture
def coco_root(tmp_path):
    write_coco_fixture(tmp_path, "train2017")
    write_coco_fixture(tmp_path, "val2017")
    return tmp_path


def test_coco_meta_known_ids_in_sorted_id_order(coco_root):
    meta = get_dataset_meta("coco_2017_train_invoc", small_cfg(coco_root))
    assert meta["known_category_ids"] == VOC_IDS
    assert meta["known_class_names"] == list(COCO_VOC_KNOWN_CLASSES)
    assert len(meta["categories"]) == 80 and len(meta["unknown_category_ids"]) == 60
    assert meta["json_file"].endswith("coco/annotations/instances_train2017.json")


def test_coco_train_keeps_only_known_noncrowd_and_drops_empty_images(coco_root, caplog):
    with caplog.at_level(logging.INFO):
        ds = build_dataset(small_cfg(coco_root), "coco_2017_train_invoc", is_train=True)
    # image 12 has only a truck (unknown) -> dropped; the crowd person and the zero-area car are gone
    assert [r["image_id"] for r in ds.records] == [11, 13]
    assert [a["id"] for a in ds.records[0]["annotations"]] == [101]
    assert [a["id"] for a in ds.records[1]["annotations"]] == [106, 107]
    assert "1 zero-area polygon" in caplog.text and "1 crowd" in caplog.text

    item = ds[(1, 0, 0)]
    inst = item["instances"]
    # car (id 3) -> known index 2, tv (id 72) -> 19
    assert inst["classes"].tolist() == [2, 19]
    assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
    h, w = item["image"].shape[1:]
    assert (item["height"], item["width"]) == (64, 48) and min(h, w) == 48
    assert inst["masks"].shape == (2, h, w) and inst["masks"].dtype == torch.uint8
    assert inst["boxes"].dtype == torch.float32 and inst["boxes"].shape == (2, 4)


def test_coco_train_masks_match_boxes_after_resize(coco_root):
    cfg = small_cfg(coco_root, min_size=96)  # x2 upscale of the 64x48 image
    ds = build_dataset(cfg, "coco_2017_train_invoc", is_train=True)
    for key in [(0, 5, 0), (0, 5, 1), (1, 5, 2), (1, 5, 3)]:  # several flips drawn
        inst = ds[key]["instances"]
        for box, mask in zip(inst["boxes"].numpy(), inst["masks"].numpy()):
            ys, xs = np.nonzero(mask)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=2.0)
    person = ds[(0, 5, 0)]["instances"]["masks"][0].numpy()
    assert abs(int(person.sum()) - 20 * 16 * 4) <= 2 * (40 + 32) + 4  # polygon area x scale^2, up to an edge


def test_coco_val_keeps_everything_and_marks_unknowns(coco_root):
    cfg = small_cfg(coco_root)
    ds = build_dataset(cfg, "coco_2017_val", is_train=False)
    assert [r["image_id"] for r in ds.records] == [11, 12, 13]
    anns = {a["id"]: a for r in ds.records for a in r["annotations"]}
    assert sorted(anns) == [101, 102, 103, 104, 105, 106, 107]  # all kept: the evaluator reads the json
    assert anns[102]["known_index"] == UNKNOWN_ID and anns[105]["known_index"] == UNKNOWN_ID
    assert anns[101]["known_index"] == 0 and anns[103]["iscrowd"] == 1 and anns[107]["known_index"] == 19
    item = ds[1]
    assert set(item) == {"image", "height", "width", "image_id", "file_name"}
    assert item["image_id"] == 12 and item["file_name"].endswith("000012.png")
    batches = list(build_test_loader(cfg, "coco_2017_val"))
    assert [b[0]["image_id"] for b in batches] == [11, 12, 13]


def test_rgb_format_swaps_channels(coco_root):
    bgr = build_dataset(small_cfg(coco_root, fmt="BGR"), "coco_2017_val", is_train=False)[0]["image"]
    rgb = build_dataset(small_cfg(coco_root, fmt="RGB"), "coco_2017_val", is_train=False)[0]["image"]
    assert torch.equal(bgr.flip(0), rgb)


def test_filter_empty_off_keeps_image_without_instances(coco_root):
    cfg = small_cfg(coco_root)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    ds = build_dataset(cfg, "coco_2017_train_invoc", is_train=True)
    assert [r["image_id"] for r in ds.records] == [11, 12, 13]
    inst = ds[1]["instances"]
    assert inst["boxes"].shape == (0, 4) and inst["classes"].shape == (0,) and inst["masks"].shape[0] == 0


def test_graspnet_train_keeps_known_only_and_tests_keep_all(tmp_path):
    write_graspnet_fixture(tmp_path)
    cfg = small_cfg(tmp_path, known=GRASPNET_KNOWN_CLASSES, num_known=28, min_size=72)
    meta = get_dataset_meta("graspnet_test_3", cfg)
    assert meta["known_category_ids"] == list(GRASPNET_KNOWN_IDS)
    assert len(meta["categories"]) == 88 and len(meta["unknown_category_ids"]) == 60
    train = build_dataset(cfg, "graspnet_train", is_train=True)
    assert [[a["category_id"] for a in r["annotations"]] for r in train.records] == [[1, 67], [3]]
    assert train[(0, 1, 0)]["instances"]["classes"].tolist() == [0, 27]
    assert train[(1, 1, 0)]["instances"]["classes"].tolist() == [1]
    test = build_dataset(cfg, "graspnet_test_3", is_train=False)
    assert sum(len(r["annotations"]) for r in test.records) == 5
    # without a config the catalogue's known ids apply
    assert get_dataset_meta("graspnet_train", small_cfg(tmp_path, known=()))["known_category_ids"] == list(
        GRASPNET_KNOWN_IDS)


def test_custom_dataset_registration_and_known_order(coco_root):
    json_file = str(coco_root / "coco/annotations/instances_val2017.json")
    image_root = str(coco_root / "coco/val2017")
    register_coco_openset("my_objects_test", json_file, image_root, known_class_names=["tv", "car"])
    meta = get_dataset_meta("my_objects_test")
    assert meta["known_category_ids"] == [3, 72] and meta["known_class_names"] == ["car", "tv"]
    cfg = small_cfg(coco_root, known=("car", "tv"), num_known=2)
    ds = build_dataset(cfg, "my_objects_test", is_train=True)
    assert [a["category_id"] for r in ds.records for a in r["annotations"]] == [3, 72]
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_openset("my_objects_test", json_file, image_root, known_class_names=["person"])
    # the config's list is the model's row order: a different order is refused, naming the right one
    with pytest.raises(DatasetError, match=r"ascending category-id order.*\['car', 'tv'\]"):
        get_dataset_meta("my_objects_test", small_cfg(coco_root, known=("tv", "car")))


def test_rle_masks_decode_exactly(coco_root):
    ds = build_dataset(small_cfg(coco_root, min_size=48, flip="none"), "coco_2017_train_invoc", is_train=True)
    car = ds[(1, 0, 0)]["instances"]["masks"][0].numpy()  # 64x48 image at its own size: no resampling
    expected = np.zeros((64, 48), np.uint8)
    expected[10:30, 5:25] = 1
    assert np.array_equal(car, expected)
    assert mask_utils.area(mask_utils.encode(np.asfortranarray(car))) == 400


def test_uncompressed_rle_instance_decodes(tmp_path):
    from .coco_fixtures import coco_doc

    doc = coco_doc()
    doc["annotations"][2]["iscrowd"] = 0  # the uncompressed-RLE person becomes a normal instance
    write_coco_fixture(tmp_path, "train2017", doc)
    ds = build_dataset(small_cfg(tmp_path, flip="none"), "coco_2017_train_invoc", is_train=True)
    inst = ds[(0, 0, 0)]["instances"]
    assert inst["classes"].tolist() == [0, 0]
    expected = np.zeros((48, 64), np.uint8)
    expected[2:10, 2:30] = 1
    assert np.array_equal(inst["masks"][1].numpy(), expected)
