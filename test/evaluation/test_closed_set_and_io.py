"""Agreement with pycocotools on closed-set data, result files, table, plot and bad input."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from semseg_core.constants import UNKNOWN_ID
from semseg_core.evaluation import (CocoFormatError, OpenSetEvaluator, format_metrics_table, load_results_json,
                                    masks_to_rle, plot_pr_curves, save_metrics_json, save_results_json)

from .helpers import KNOWN, det, make_gt, perfect_detections

SCENE = [(1, 1, 5, 5, 30, 30), (1, 3, 50, 5, 40, 30), (1, 7, 5, 50, 30, 40), (1, 9, 50, 50, 40, 40)]


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def random_closed_set_case(seed, num_images=12):
    """Random ellipse masks of 3 known classes (some crowd), noisy detections with masks and boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:100, 0:100]
    images, anns, dets = [], [], []
    cats = [{"id": 2, "name": "a"}, {"id": 5, "name": "b"}, {"id": 6, "name": "c"}]
    for img in range(1, num_images + 1):
        images.append({"id": img, "height": 100, "width": 100})
        for _ in range(rng.integers(1, 6)):
            cx, cy, rx, ry = rng.uniform(10, 90), rng.uniform(10, 90), rng.uniform(3, 30), rng.uniform(3, 30)
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            cat = int(rng.choice([2, 5, 6]))
            rle = masks_to_rle(m[None])[0]
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "segmentation": rle,
                         "area": float(m.sum()), "iscrowd": int(rng.random() < 0.1),
                         "bbox": box_of(m)})
            for _ in range(rng.integers(0, 3)):  # noisy copies, sometimes with the wrong class
                jx, jy, s = rng.normal(0, 4), rng.normal(0, 4), rng.uniform(0.7, 1.3)
                dm = ((xx - cx - jx) / (rx * s)) ** 2 + ((yy - cy - jy) / (ry * s)) ** 2 <= 1
                if not dm.any():
                    continue
                dets.append({"image_id": img, "category_id": cat if rng.random() < 0.8 else int(rng.choice([2, 5, 6])),
                             "score": float(rng.random()), "segmentation": masks_to_rle(dm[None])[0],
                             "bbox": box_of(dm)})
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_closed_set_ap_equals_pycocotools(iou_type, seed):
    gt, dets = random_closed_set_case(seed)
    ours = OpenSetEvaluator(gt, [2, 5, 6], (iou_type,)).evaluate(dets)[iou_type]

    drop = "segmentation" if iou_type == "bbox" else "bbox"  # segm: area from the mask, as loadRes does then
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{k: v for k, v in d.items() if k != drop} for d in dets])
        ref = COCOeval(coco_gt, coco_dt, iou_type)
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    assert 0 < ref.stats[0] < 1  # a non-trivial case
    assert ours["AP_k"] == pytest.approx(100 * ref.stats[0], abs=1e-9)
    assert ours["AP50_k"] == pytest.approx(100 * ref.stats[1], abs=1e-9)
    assert ours["AP75_k"] == pytest.approx(100 * ref.stats[2], abs=1e-9)
    assert ours["AR_k@10"] == pytest.approx(100 * ref.stats[7], abs=1e-9)
    assert ours["AR_k@100"] == pytest.approx(100 * ref.stats[8], abs=1e-9)
    assert ours["AOSE"] == 0 and np.isnan(ours["AP_unk"])


def test_result_file_round_trip_and_pycocotools_can_read_it(tmp_path):
    gt = make_gt(SCENE)
    dets = perfect_detections(gt) + [det(1, 1, 5, 50, 30, 40, score=0.4)]
    path = save_results_json(dets, tmp_path / "coco_results.json")
    loaded = load_results_json(path)
    assert loaded == json.loads(json.dumps(dets))
    ev = OpenSetEvaluator(gt, KNOWN)
    a, b = ev.evaluate(loaded), ev.evaluate(dets)
    for t in ("bbox", "segm"):
        assert a[t]["AP_k"] == b[t]["AP_k"] and a[t]["AOSE"] == b[t]["AOSE"] == 1
    with contextlib.redirect_stdout(io.StringIO()):  # plain COCO result file: pycocotools reads it directly
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        assert len(coco_gt.loadRes(str(path)).getAnnIds()) == len(dets)


def test_metrics_json_table_and_pr_plot(tmp_path):
    gt = make_gt(SCENE + [(2, 1, 10, 10, 50, 50)], num_images=2)
    ev = OpenSetEvaluator(gt, KNOWN)
    metrics = ev.evaluate(perfect_detections(gt) + [det(1, 1, 5, 50, 30, 40, score=0.95)])

    saved = json.loads(save_metrics_json(metrics, tmp_path / "m.json") and (tmp_path / "m.json").read_text())
    assert saved["segm"]["AOSE"] == 1 and saved["bbox"]["AP_unk"] == pytest.approx(100.0)

    table = format_metrics_table(metrics)
    lines = table.splitlines()
    assert lines[0].split()[-2:] == ["bbox", "segm"]
    aose = next(l for l in lines if l.startswith("AOSE"))
    assert aose.split()[-2:] == ["1", "1"]
    summary = lines[:lines.index("")]
    assert len({len(l) for l in summary}) == 1  # fixed width
    assert any(l.startswith("apple") for l in lines)

    png = plot_pr_curves(ev.pr_curves, tmp_path / "pr.png", title="test")
    data = (tmp_path / "pr.png").read_bytes()
    assert png.endswith("pr.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt
    assert plt.imread(png).shape[2] in (3, 4)


def test_broken_files_give_errors_naming_the_file(tmp_path):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(make_gt(SCENE))[:-40])  # truncated
    with pytest.raises(CocoFormatError, match="gt.json"):
        OpenSetEvaluator(gt_path, KNOWN)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        OpenSetEvaluator(tmp_path / "nope.json", KNOWN)

    bad_cat = make_gt(SCENE)
    bad_cat["annotations"][0]["category_id"] = 42
    gt_path.write_text(json.dumps(bad_cat))
    with pytest.raises(CocoFormatError, match=r"gt.json.*category_id 42"):
        OpenSetEvaluator(gt_path, KNOWN)
    with pytest.raises(ValueError, match="known category ids \\[4\\]"):
        OpenSetEvaluator(make_gt(SCENE), [1, 4])

    res_path = tmp_path / "res.json"
    res_path.write_text("[{\"image_id\": 1, ")
    with pytest.raises(CocoFormatError, match="res.json"):
        load_results_json(res_path)

    ev = OpenSetEvaluator(make_gt(SCENE), KNOWN)
    with pytest.raises(CocoFormatError, match="result #0: image_id 99"):
        ev.evaluate([det(99, 1, 0, 0, 5, 5, 0.5)])
    with pytest.raises(CocoFormatError, match="result #1: category_id 7"):  # an unknown class's dataset id
        ev.evaluate([det(1, 1, 0, 0, 5, 5, 0.5), det(1, 7, 0, 0, 5, 5, 0.5)])
    no_mask = det(1, 1, 0, 0, 5, 5, 0.5)
    del no_mask["segmentation"]
    with pytest.raises(CocoFormatError, match="no 'segmentation'"):
        ev.evaluate([no_mask])
    wrong_size = det(1, 1, 0, 0, 5, 5, 0.5)
    wrong_size["segmentation"]["size"] = [50, 50]
    with pytest.raises(CocoFormatError, match="does not match the image size"):
        ev.evaluate([wrong_size])


def test_empty_results_score_zero_not_crash():
    metrics = OpenSetEvaluator(make_gt(SCENE), KNOWN).evaluate([])
    for t in ("bbox", "segm"):
        assert metrics[t]["AP_k"] == 0.0 and metrics[t]["AR_unk@100"] == 0.0 and metrics[t]["AOSE"] == 0


def test_two_hundred_images_of_one_hundred_detections_evaluate():
    # the evaluator's speed is a figure of benchmarks/bench_evaluation.py (vs COCOeval), not an assert here
    rng = np.random.default_rng(0)
    objects, dets = [], []
    for img in range(1, 201):
        for _ in range(8):
            x, y, w, h = (int(v) for v in rng.integers(0, 60, 2).tolist() + rng.integers(8, 40, 2).tolist())
            objects.append((img, int(rng.choice([1, 3, 7, 9])), x, y, w, h))
        for n in range(100):
            x, y, w, h = (int(v) for v in rng.integers(0, 60, 2).tolist() + rng.integers(8, 40, 2).tolist())
            cat = [1, 3, UNKNOWN_ID][n % 3]
            dets.append(det(img, cat, x, y, w, h, score=float(rng.random())))
    gt = make_gt(objects, num_images=200)
    metrics = OpenSetEvaluator(gt, KNOWN).evaluate(dets)
    assert metrics["segm"]["AOSE"] > 0
