"""The open-set metrics on hand-built cases whose answers are known exactly."""
import copy
import math

import pytest

from semseg_core.constants import UNKNOWN_ID
from semseg_core.evaluation import OpenSetEvaluator

from .helpers import KNOWN, det, make_gt, perfect_detections, rect_rle

BOTH = ("bbox", "segm")
# one image: two known objects (apple, bowl), two unknown ones (cup, drill)
SCENE = [(1, 1, 5, 5, 30, 30), (1, 3, 50, 5, 40, 30), (1, 7, 5, 50, 30, 40), (1, 9, 50, 50, 40, 40)]


def evaluate(gt, dets, iou_types=BOTH):
    return OpenSetEvaluator(gt, KNOWN, iou_types).evaluate(dets)


def test_perfect_prediction_gives_full_scores_and_no_open_set_error():
    gt = make_gt(SCENE + [(2, 1, 10, 10, 50, 50), (2, 9, 60, 60, 30, 30)], num_images=2)
    metrics = evaluate(gt, perfect_detections(gt))
    for t in BOTH:
        m = metrics[t]
        assert m["AP_k"] == pytest.approx(100.0)
        assert m["AR_k@100"] == pytest.approx(100.0)
        assert m["AOSE"] == 0
        assert m["AP_unk"] == pytest.approx(100.0)
        assert m["AR_unk@10"] == pytest.approx(100.0)
        assert m["WI"] == 0.0
        assert m["K_det_as_UNK"] == 0
        assert m["per_class_AP_k"] == {"apple": pytest.approx(100.0), "bowl": pytest.approx(100.0)}
        assert (m["num_known_gt"], m["num_unknown_gt"]) == (3, 3)


def test_known_prediction_on_unknown_object_counts_once_per_known_class():
    gt = make_gt(SCENE)
    exact = perfect_detections(gt)
    cup = (5, 50, 30, 40)  # the unknown "cup" object
    one = evaluate(gt, exact + [det(1, 1, *cup, score=0.5)])
    two_classes = evaluate(gt, exact + [det(1, 1, *cup, score=0.5), det(1, 3, *cup, score=0.4)])
    # two detections of the same class on one unknown object: one-to-one matching counts it once
    same_class_twice = evaluate(gt, exact + [det(1, 1, *cup, score=0.5), det(1, 1, 6, 51, 30, 40, score=0.4)])
    for t in BOTH:
        assert one[t]["AOSE"] == 1
        assert two_classes[t]["AOSE"] == 2
        assert same_class_twice[t]["AOSE"] == 1
        assert one[t]["K_det_as_other_K"] == 0


def test_aose_needs_iou_at_least_half():
    gt = make_gt(SCENE)
    # 30x40 object, prediction 30x19 inside it: IoU 0.475 < 0.5 -> no open-set error
    low = evaluate(gt, perfect_detections(gt) + [det(1, 1, 5, 50, 30, 19, score=0.5)])
    high = evaluate(gt, perfect_detections(gt) + [det(1, 1, 5, 50, 30, 21, score=0.5)])  # IoU 0.525
    assert [low[t]["AOSE"] for t in BOTH] == [0, 0]
    assert [high[t]["AOSE"] for t in BOTH] == [1, 1]


def test_unknown_prediction_raises_unknown_recall_by_the_exact_amount():
    # four unknown objects of 50x50 = 2500 px; known objects none
    gt = make_gt([(1, 7, 0, 0, 50, 50), (1, 9, 50, 0, 50, 50), (1, 7, 0, 50, 50, 50), (1, 9, 50, 50, 50, 50)])
    assert all(evaluate(gt, [])[t]["AR_unk@10"] == 0.0 for t in BOTH)
    dets = [det(1, UNKNOWN_ID, 0, 0, 50, 50, score=0.9),  # IoU 1.0: matched at all 10 thresholds
            det(1, UNKNOWN_ID, 50, 0, 50, 36, score=0.8)]  # IoU 0.72: matched at 0.50..0.70 (5 thresholds)
    metrics = evaluate(gt, dets)
    for t in BOTH:
        assert metrics[t]["AR_unk@10"] == pytest.approx(100 * (10 + 5) / (4 * 10))
        assert metrics[t]["AR_unk@100"] == pytest.approx(100 * 15 / 40)
        assert math.isnan(metrics[t]["AP_k"])  # no known GT at all: undefined, not 0
        assert metrics[t]["AOSE"] == 0


def test_unknown_recall_at_k_uses_the_top_k_unknowns_per_image():
    objects = [(1, 7, 10 * i, 10 * j, 10, 10) for i in range(4) for j in range(3)]  # 12 unknown objects
    gt = make_gt(objects)
    dets = [det(1, UNKNOWN_ID, x, y, w, h, score=1.0 - 0.01 * n) for n, (_, _, x, y, w, h) in enumerate(objects)]
    metrics = evaluate(gt, dets)
    for t in BOTH:
        assert metrics[t]["AR_unk@10"] == pytest.approx(100 * 10 / 12)
        assert metrics[t]["AR_unk@30"] == pytest.approx(100.0)


def test_unknown_detection_on_known_object_is_counted_and_is_a_false_positive():
    gt = make_gt(SCENE)
    dets = perfect_detections(gt) + [det(1, UNKNOWN_ID, 5, 5, 30, 30, score=0.99)]  # on the apple
    metrics = evaluate(gt, dets)
    for t in BOTH:
        assert metrics[t]["K_det_as_UNK"] == 1
        # unknowns ranked FP (0.99), TP, TP over 2 unknown GT: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; COCO's
        # interpolated precision is then 2/3 at all 101 recall points and all 10 IoU thresholds (exact boxes)
        assert metrics[t]["AP_unk"] == pytest.approx(100 * 2 / 3)


def test_known_prediction_with_the_wrong_known_class_is_counted_apart():
    gt = make_gt(SCENE)
    metrics = evaluate(gt, perfect_detections(gt) + [det(1, 3, 5, 5, 30, 30, score=0.5)])  # apple called bowl
    for t in BOTH:
        assert metrics[t]["K_det_as_other_K"] == 1
        assert metrics[t]["AOSE"] == 0


def test_wilderness_impact_read_where_recall_reaches_point_eight():
    gt = make_gt([(1, 1, 5, 5, 30, 30), (1, 7, 50, 50, 40, 40)])
    dets = [det(1, 1, 50, 50, 40, 40, score=0.9),  # apple detector fires on the unknown cup first
            det(1, 1, 5, 5, 30, 30, score=0.8)]    # then finds the apple: recall 1.0 at 2 detections
    metrics = evaluate(gt, dets, ("bbox",))
    assert metrics["bbox"]["WI"] == pytest.approx(1 / 2)
    assert metrics["bbox"]["AOSE"] == 1


def test_crowd_ground_truth_is_ignored():
    # apple (crowd region 40x40) and a normal apple; a small apple detection inside the crowd region
    objects = [(1, 1, 50, 50, 40, 40, 1), (1, 1, 5, 5, 30, 30), (1, 7, 5, 50, 30, 40, 1)]
    dets = [det(1, 1, 55, 55, 10, 10, score=0.95),  # inside the crowd: ignored, not a false positive
            det(1, 1, 5, 5, 30, 30, score=0.5),
            det(1, 3, 5, 50, 30, 40, score=0.9)]    # bowl on a crowd unknown region: no open-set error
    metrics = evaluate(make_gt(objects), dets)
    for t in BOTH:
        assert metrics[t]["AP_k"] == pytest.approx(100.0)
        assert metrics[t]["AOSE"] == 0
        assert metrics[t]["num_unknown_gt"] == 0
    # the same scene without crowd flags scores worse: the test can fail
    plain_gt = make_gt([o[:6] for o in objects])
    plain = evaluate(plain_gt, dets)
    assert plain["bbox"]["AP_k"] < 100.0
    # the bowl on the now plain unknown region is an open-set error only when classes without GT count (ours)
    assert plain["bbox"]["AOSE"] == 0
    assert OpenSetEvaluator(plain_gt, KNOWN, ("bbox",), aose_classes="all").evaluate(dets)["bbox"]["AOSE"] == 1


def test_class_absent_from_test_set_is_skipped_not_zero():
    gt = make_gt([(1, 1, 5, 5, 30, 30), (1, 7, 50, 50, 40, 40)])  # no bowl (id 3) in the test set
    metrics = evaluate(gt, perfect_detections(gt) + [det(1, 3, 60, 5, 20, 20, score=0.3)])
    for t in BOTH:
        assert metrics[t]["AP_k"] == pytest.approx(100.0)
        assert math.isnan(metrics[t]["per_class_AP_k"]["bowl"])


def test_callers_ground_truth_and_results_are_not_modified():
    gt = make_gt(SCENE + [(1, 1, 60, 60, 10, 10, 1)])
    dets = perfect_detections(gt) + [det(1, 1, 5, 50, 30, 40, score=0.5)]
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    ev = OpenSetEvaluator(gt, KNOWN, BOTH)
    ev.evaluate(dets)
    ev.evaluate(dets)
    assert gt == gt_before and dets == dets_before
    # and repeated evaluations of the same evaluator agree
    a, b = ev.evaluate(dets), ev.evaluate(dets)
    assert a["segm"]["AOSE"] == b["segm"]["AOSE"] == 1
    assert a["segm"]["AP_k"] == b["segm"]["AP_k"]


def test_segm_detection_area_is_the_mask_area_not_the_box_area():
    gt = make_gt([(1, 1, 0, 0, 97, 97)])  # one large apple (area > 96^2)
    # a false positive whose reported box is large but whose mask is a 3x3 speck outside the apple
    speck = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 100, 100],
             "segmentation": rect_rle(97, 97, 3, 3)}
    metrics = evaluate(gt, [speck, det(1, 1, 0, 0, 97, 97, score=0.5)], ("segm",))
    assert metrics["segm"]["AP_k"] == pytest.approx(50.0)  # the speck is a top-scored false positive
    # for the "large" range the speck (mask area 9) is out of range and ignored; by box area it would count
    assert metrics["segm"]["APl_k"] == pytest.approx(100.0)


def test_aose_skips_a_known_class_without_ground_truth_as_the_authors_do():
    # apple (known) and two unknown objects; the test set has no bowl (known) at all, only a crowd bowl region
    gt = make_gt([(1, 1, 5, 5, 30, 30), (1, 7, 50, 50, 40, 40), (1, 9, 5, 50, 30, 40), (1, 3, 60, 5, 30, 20, 1)])
    on_cup, on_drill = (50, 50, 40, 40), (5, 50, 30, 40)
    dets = perfect_detections(gt) + [det(1, 1, *on_cup, score=0.6),  # apple on the cup: an open-set error
                                     det(1, 3, *on_cup, score=0.5),  # bowl on the cup: bowl has no GT
                                     det(1, 3, *on_drill, score=0.4)]  # bowl on the drill
    authors = OpenSetEvaluator(gt, KNOWN, BOTH).evaluate(dets)
    ours = OpenSetEvaluator(gt, KNOWN, BOTH, aose_classes="all").evaluate(dets)
    for t in BOTH:
        assert authors[t]["AOSE"] == 1  # the bowl's two errors are skipped with the class (no non-crowd GT)
        assert ours[t]["AOSE"] == 3
        assert authors[t]["AP_k"] == ours[t]["AP_k"]  # nothing else changes
    with pytest.raises(ValueError, match="aose_classes"):
        OpenSetEvaluator(gt, KNOWN, BOTH, aose_classes="some")
