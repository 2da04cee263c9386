"""Bad input gives an error that names the file and the problem (or is skipped and counted)."""

import json
import os

import pytest

from semseg_core.data import DatasetError, build_dataset, get_dataset_meta

from .coco_fixtures import coco_doc, small_cfg, write_coco_fixture


def _write_json_text(root, text):
    write_coco_fixture(root, "val2017")
    path = os.path.join(root, "coco", "annotations", "instances_val2017.json")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_truncated_json_names_file_and_position(tmp_path):
    text = json.dumps(coco_doc(), indent=1)
    path = _write_json_text(tmp_path, text[: len(text) // 2])
    with pytest.raises(DatasetError) as err:
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)
    assert path in str(err.value) and "line" in str(err.value) and "column" in str(err.value)


def test_corrupt_json_names_file(tmp_path):
    path = _write_json_text(tmp_path, '{"images": [], "categories": [}')
    with pytest.raises(DatasetError, match="invalid JSON at line 1, column 31") as err:
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)
    assert path in str(err.value)


def test_not_a_coco_file(tmp_path):
    _write_json_text(tmp_path, '{"images": []}')
    with pytest.raises(DatasetError, match="'categories'"):
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)


def test_missing_annotation_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)


def test_missing_image_names_image_and_json(tmp_path):
    json_file = write_coco_fixture(tmp_path, "val2017")
    missing = os.path.join(tmp_path, "coco", "val2017", "000012.png")
    os.remove(missing)
    ds = build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)
    ds[0]  # the others still load
    with pytest.raises(FileNotFoundError) as err:
        ds[1]
    assert missing in str(err.value) and json_file in str(err.value)


def test_corrupt_image_is_reported(tmp_path):
    write_coco_fixture(tmp_path, "val2017")
    with open(os.path.join(tmp_path, "coco", "val2017", "000011.png"), "wb") as f:
        f.write(b"not a png")
    ds = build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)
    with pytest.raises(DatasetError, match="cannot decode image .*000011.png"):
        ds[0]


def test_category_not_in_categories_names_annotation_and_id(tmp_path):
    doc = coco_doc()
    doc["annotations"][5]["category_id"] = 12  # COCO has no category 12
    json_file = write_coco_fixture(tmp_path, "val2017", doc)
    with pytest.raises(DatasetError) as err:
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)
    msg = str(err.value)
    assert json_file in msg and "annotation 106" in msg and "category_id 12" in msg


def test_annotation_of_unlisted_image(tmp_path):
    doc = coco_doc()
    doc["annotations"][0]["image_id"] = 99
    write_coco_fixture(tmp_path, "val2017", doc)
    with pytest.raises(DatasetError, match="annotation 101 refers to image_id 99"):
        build_dataset(small_cfg(tmp_path), "coco_2017_val", is_train=False)


def test_zero_area_polygons_are_skipped_and_counted(tmp_path, caplog):
    doc = coco_doc()
    doc["annotations"][0]["segmentation"] = [[4, 12, 24, 12, 14, 12]]  # flat: the person polygon is degenerate
    write_coco_fixture(tmp_path, "train2017", doc)
    ds = build_dataset(small_cfg(tmp_path), "coco_2017_train_invoc", is_train=True)
    assert [r["image_id"] for r in ds.records] == [13]  # image 11 had only that person as a known object
    assert "skipped 2 zero-area polygon" in caplog.text and "instances_train2017.json" in caplog.text


def test_bad_known_class_name_lists_available_names(tmp_path):
    write_coco_fixture(tmp_path, "val2017")
    cfg = small_cfg(tmp_path, known=("person", "sofa"), num_known=2)
    with pytest.raises(DatasetError) as err:
        get_dataset_meta("coco_2017_val", cfg)
    msg = str(err.value)
    assert "['sofa']" in msg and "'couch'" in msg and "'tv'" in msg and "instances_val2017.json" in msg


def test_unregistered_dataset_and_class_count_mismatch(tmp_path):
    with pytest.raises(KeyError, match="'coco_2014' is not registered; known datasets: .*coco_2017_val"):
        get_dataset_meta("coco_2014")
    write_coco_fixture(tmp_path, "train2017")
    with pytest.raises(DatasetError, match="NUM_KNOWN_CLASSES is 6 but dataset 'coco_2017_train_invoc' has 20"):
        build_dataset(small_cfg(tmp_path, num_known=6), "coco_2017_train_invoc", is_train=True)
