"""Per-object metrics on tiny label images whose figures are worked out by hand in each test."""
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from semseg_core.constants import UNKNOWN_ID
from semseg_core.evaluation.instance_metrics import (InstanceMapEvaluator, boundary_map, boundary_radius,
                                                     format_instance_table, gt_label_image, hungarian,
                                                     open_set_counts, overlap_boundary_metrics)


def _f(p, r):
    return 2 * p * r / (p + r)


def test_hungarian_finds_the_optimum_where_greedy_does_not():
    # greedy takes (0,0)=1 and is left with (1,1)=10: 11; the optimum is (0,1)+(1,0) = 2+1 = 3
    rows, cols = hungarian(np.array([[1.0, 2.0], [1.0, 10.0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    # 3x3 by enumeration of the 6 permutations by hand: (0,1)+(1,0)+(2,2) = 1+2+2 = 5 is the least
    rows, cols = hungarian(np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0), (2, 2)]
    # rectangular both ways: every row of the short side assigned once
    rows, cols = hungarian(np.array([[5.0, 1.0, 3.0], [1.0, 5.0, 3.0]]))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = hungarian(np.array([[5.0, 1.0, 3.0], [1.0, 5.0, 3.0]]).T)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    assert hungarian(np.zeros((0, 3)))[0].size == 0


def test_boundary_map_counts_the_image_border_as_outside():
    mask = np.zeros((6, 6), bool)
    mask[0:4, 0:4] = True  # touches the top and left border
    boundary = boundary_map(mask)
    interior = np.zeros_like(mask)
    interior[1:3, 1:3] = True
    assert np.array_equal(boundary, mask & ~interior)  # 16 - 4 = 12 pixels
    assert boundary.sum() == 12
    assert boundary_radius((256, 256)) == 2  # ceil(0.003 * 362.04)
    assert boundary_radius((256, 256), 1) == 1


def _two_objects():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1   # A: 16 px
    gt[6:10, 6:10] = 2  # B: 16 px
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:2] = 1   # inside A: 8 px
    pred[6:10, 5:10] = 2  # covers B and one more column: 20 px
    pred[0:2, 6:8] = 3   # a false positive: 4 px
    return pred, gt


def test_overlap_prf_after_one_to_one_matching():
    pred, gt = _two_objects()
    m = overlap_boundary_metrics(pred, gt, tolerance=0)
    # matched pairs A-1 (8 px shared) and B-2 (16 px); predicted fg 8+20+4 = 32; gt fg 32
    assert m.overlap_p == pytest.approx(24 / 32)
    assert m.overlap_r == pytest.approx(24 / 32)
    assert m.overlap_f == pytest.approx(0.75)
    # pair F: A-1 = 2*8/(16+8) = 0.667 (< 0.75), B-2 = 2*16/(16+20) = 0.889
    assert (m.objects, m.objects_f075) == (2, 1)


def test_boundary_prf_without_tolerance():
    pred, gt = _two_objects()
    m = overlap_boundary_metrics(pred, gt, tolerance=0)
    # boundaries: A 12, B 12; pred 1 (4x2 strip) 8, pred 2 (4x5 at the border) 20-6 = 14, pred 3 (2x2) 4
    # A-1 share 8 - 2 (A's interior pixels (1,1), (2,1)) = 6; B-2 share rows 6,9 x cols 6-9 (8) + (7,9), (8,9) = 10
    assert m.boundary_p == pytest.approx(16 / 26)
    assert m.boundary_r == pytest.approx(16 / 24)
    assert m.boundary_f == pytest.approx(_f(16 / 26, 16 / 24))


def test_boundary_tolerance_of_one_pixel_forgives_a_one_pixel_shift():
    gt = np.zeros((6, 6), np.int32)
    gt[1:5, 1:5] = 1
    pred = np.zeros((6, 6), np.int32)
    pred[1:5, 2:6] = 7  # shifted right by one column; ids need not agree
    exact = overlap_boundary_metrics(pred, gt, tolerance=0)
    # 12 boundary pixels each; shared exactly: rows 1 and 4 at cols 2..4 = 6
    assert (exact.boundary_p, exact.boundary_r) == (pytest.approx(0.5), pytest.approx(0.5))
    # every boundary pixel of one lies within one (4-connected) step of the other's boundary
    shifted = overlap_boundary_metrics(pred, gt, tolerance=1)
    assert (shifted.boundary_p, shifted.boundary_r) == (pytest.approx(1.0), pytest.approx(1.0))
    # overlap 12 of 16 on both sides: pair F exactly 0.75, which counts as segmented
    assert exact.overlap_f == pytest.approx(0.75) and exact.objects_f075 == 1


def test_empty_prediction_and_empty_ground_truth():
    gt = np.zeros((4, 4), np.int32)
    gt[0:2, 0:2] = 1
    nothing = np.zeros((4, 4), np.int32)
    m = overlap_boundary_metrics(nothing, gt)
    assert (m.overlap_p, m.overlap_r, m.overlap_f) == (1.0, 0.0, 0.0)  # nothing said wrong, nothing found
    m = overlap_boundary_metrics(gt, nothing)
    assert (m.overlap_p, m.overlap_r) == (0.0, 1.0)
    with pytest.raises(ValueError, match="one size"):
        overlap_boundary_metrics(np.zeros((4, 5), np.int32), gt)


def _open_set_scene():
    gt = np.zeros((8, 8), np.int32)
    gt[0:2, 0:2] = 1  # known, class 2
    gt[0:2, 4:8] = 2  # unknown, 8 px
    gt[4:6, 0:2] = 3  # unknown
    gt[4:8, 4:6] = 4  # known, class 0, 8 px
    gt_classes = {1: 2, 2: UNKNOWN_ID, 3: UNKNOWN_ID, 4: 0}
    pred = np.zeros((8, 8), np.int32)
    pred[0:2, 0:2] = 10           # = object 1, its class
    pred[0:2, 4:7] = 11           # 6 of object 2's 8 px: IoU 0.75, but labelled known
    pred[4:6, 0:2] = 12           # = object 3, unknown
    pred[4:6, 4:6] = 13           # 4 of object 4's 8 px: IoU 0.5, labelled unknown
    pred_classes = {10: 2, 11: 1, 12: UNKNOWN_ID, 13: UNKNOWN_ID, 14: 3}  # 14 is listed but owns no pixel
    return pred, pred_classes, gt, gt_classes


def test_open_set_table_per_object():
    pred, pred_classes, gt, gt_classes = _open_set_scene()
    c = open_set_counts(pred, pred_classes, gt, gt_classes)
    assert (c.known_objects, c.unknown_objects, c.detections, c.empty_detections) == (2, 2, 5, 1)
    assert c.known_found_with_class == 1       # object 1 (object 4's instance is unknown)
    assert c.known_labelled_unknown == 1       # object 4
    assert c.unknown_found_as_unknown == 1     # object 3
    assert c.unknown_labelled_known == 1       # object 2
    rates = c.rates()
    assert rates["detections_per_object"] == pytest.approx(5 / 4)
    assert rates["unknown_recall"] == pytest.approx(0.5) and rates["known_recall"] == pytest.approx(0.5)


def test_a_known_object_needs_iou_half_and_its_class():
    gt = np.zeros((4, 4), np.int32)
    gt[0:4, 0:2] = 1  # 8 px, class 1
    pred = np.zeros((4, 4), np.int32)
    pred[0:3, 0:2] = 5  # 6 of 8: IoU 0.75 but the wrong class
    c = open_set_counts(pred, {5: 0}, gt, {1: 1})
    assert (c.known_found_with_class, c.known_labelled_unknown) == (0, 0)
    pred[:] = 0
    pred[0:2, 0:1] = 5  # 2 of 8 px: IoU 0.25 with the right class: not found
    assert open_set_counts(pred, {5: 1}, gt, {1: 1}).known_found_with_class == 0
    with pytest.raises(ValueError, match=r"\[5\] are not listed"):
        open_set_counts(pred, {}, gt, {1: 1})


def test_evaluator_means_over_images_and_formats_a_table():
    pred, pred_classes, gt, gt_classes = _open_set_scene()
    ev = InstanceMapEvaluator(tolerance=0)
    ev.add(pred, pred_classes, gt, gt_classes)
    ev.add(gt, {1: 2, 2: UNKNOWN_ID, 3: UNKNOWN_ID, 4: 0}, gt, gt_classes)  # a perfect image
    s = ev.summary()
    assert s["images"] == 2 and s["known_objects"] == 4 and s["detections"] == 9
    assert s["known_recall"] == pytest.approx(3 / 4) and s["unknown_recall"] == pytest.approx(3 / 4)
    # image 1 overlap: matched 4 + 6 + 4 + 4 = 18 of 18 predicted and 4+8+4+8 = 24 gt pixels; image 2 perfect
    assert s["overlap_p"] == pytest.approx((1.0 + 1.0) / 2)
    assert s["overlap_r"] == pytest.approx((18 / 24 + 1.0) / 2)
    # pair F image 1: 1, 2*6/14 = 0.857, 1, 2*4/12 = 0.667 -> 3 of 4; image 2: 4 of 4
    assert s["objects_F075"] == pytest.approx(7 / 8)
    table = format_instance_table({"raw": s, "instance_map": s})
    assert "Boundary F" in table and "unknown objects labelled known" in table
    assert math.isnan(InstanceMapEvaluator().summary()["overlap_f"])


def test_gt_label_image_from_coco_annotations():
    first = np.zeros((5, 5), np.uint8)
    first[0:2, 0:2] = 1
    second = np.zeros((5, 5), np.uint8)
    second[3:5, 3:5] = 1
    anns = [{"segmentation": mask_utils.encode(np.asfortranarray(first)), "category_id": 9},
            {"segmentation": [[3, 3, 5, 3, 5, 5, 3, 5]], "category_id": 4}]
    label, classes = gt_label_image(anns, 5, 5, known_category_ids=[4, 2])
    assert classes == {1: UNKNOWN_ID, 2: 1}  # 4 is the second known id in sorted order
    assert (label[0:2, 0:2] == 1).all() and label[4, 4] == 2


def test_hungarian_matches_enumeration_on_random_matrices():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = (int(v) for v in rng.integers(1, 5, size=2))
        cost = rng.integers(0, 9, size=(n, m)).astype(float)
        short, long_ = min(n, m), max(n, m)
        best = min(sum(cost[i, p[i]] if n <= m else cost[p[i], i] for i in range(short))
                   for p in itertools.permutations(range(long_), short))
        rows, cols = hungarian(cost)
        assert len(rows) == short and len(set(rows)) == short and len(set(cols)) == short
        assert cost[rows, cols].sum() == best
