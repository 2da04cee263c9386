"""training/evaluate.py (result-file mode) and evaluate_model with the tiny model on synthetic scenes."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from semseg_core.constants import UNKNOWN_ID
from semseg_core.evaluation import (OpenSetEvaluator, results_from_label_image, results_to_coco,
                                    unknown_decision_disabled)

from .helpers import det, make_gt, perfect_detections

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVALUATE = os.path.join(REPO, "training", "evaluate.py")
SCENE = [(1, 1, 5, 5, 30, 30), (1, 3, 50, 5, 40, 30), (1, 7, 5, 50, 30, 40), (1, 9, 50, 50, 40, 40)]


def run_cli(*args):
    return subprocess.run([sys.executable, EVALUATE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_evaluates_a_result_file_and_writes_reports(tmp_path):
    gt = make_gt(SCENE)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(perfect_detections(gt) + [det(1, 1, 5, 50, 30, 40, 0.3)]))
    out = tmp_path / "out"
    proc = run_cli("--gt", tmp_path / "gt.json", "--results", tmp_path / "res.json",
                   "--known-classes", "apple,bowl", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "AOSE" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segm"]["AOSE"] == 1 and metrics["bbox"]["AP_k"] == pytest.approx(100.0)
    assert (out / "metrics.txt").read_text().count("AP_unk") == 1
    assert (out / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_reports_bad_input_clearly(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(make_gt(SCENE)))
    (tmp_path / "res.json").write_text("[{\"image_id\": 1,")  # truncated
    bad_name = run_cli("--gt", tmp_path / "gt.json", "--results", tmp_path / "res.json",
                       "--known-classes", "apple,pear", "--out", tmp_path / "o")
    assert bad_name.returncode == 2 and "'pear'" in bad_name.stderr and "gt.json" in bad_name.stderr
    truncated = run_cli("--gt", tmp_path / "gt.json", "--results", tmp_path / "res.json",
                        "--known-ids", "1,3", "--out", tmp_path / "o")
    assert truncated.returncode == 2 and "res.json" in truncated.stderr and "not valid JSON" in truncated.stderr
    neither = run_cli("--gt", tmp_path / "gt.json", "--known-ids", "1", "--out", tmp_path / "o")
    assert neither.returncode == 2 and "--results" in neither.stderr


class FakeResult:
    """The fields of semseg_core.Result that the conversion reads (CONTRACTS.md)."""

    def __init__(self, boxes, scores, class_ids, masks):
        self.boxes, self.scores, self.class_ids, self.masks = boxes, scores, class_ids, masks
        label = np.zeros(masks.shape[1:], np.uint16)
        for k in range(len(masks) - 1, -1, -1):  # higher-scoring instance wins where masks overlap
            label[masks[k]] = k + 1
        self.label_image = label


def test_predictor_result_and_label_image_give_the_same_coco_results():
    masks = np.zeros((3, 100, 100), bool)
    masks[0, 5:35, 5:35] = True
    masks[1, 5:35, 50:90] = True
    masks[2, 50:90, 5:35] = True
    boxes = np.array([[5, 5, 35, 35], [50, 5, 90, 35], [5, 50, 35, 90]], np.float32)
    result = FakeResult(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, UNKNOWN_ID]), masks)
    from_result = results_to_coco(1, result, [3, 1])  # sorted: index 0 -> id 1, index 1 -> id 3
    assert [d["category_id"] for d in from_result] == [1, 3, UNKNOWN_ID]
    assert from_result[1]["bbox"] == [50.0, 5.0, 40.0, 30.0]
    assert isinstance(from_result[0]["segmentation"]["counts"], str)
    # the ROS side: Detection2D boxes (centre + size), class names as strings, the mono16 label image
    cxcywh = np.array([[20, 20, 30, 30], [70, 20, 40, 30], [20, 70, 30, 40]], np.float32)
    from_ros = results_from_label_image(result.label_image, cxcywh, result.scores, ["apple", "bowl", "unknown"],
                                        image_id=1, known_category_ids=[1, 3], class_names=["apple", "bowl"],
                                        box_format="cxcywh")
    assert json.dumps(from_ros, sort_keys=True) == json.dumps(from_result, sort_keys=True)
    metrics = OpenSetEvaluator(make_gt(SCENE), [1, 3]).evaluate(from_ros)
    assert metrics["segm"]["AP_k"] == pytest.approx(100.0) and metrics["segm"]["AR_unk@10"] == pytest.approx(50.0)


# ------------------------------------------------------------------ evaluate_model with the real tiny model
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import torch
    from semseg_core.config import load_config
    from semseg_core.data import generate_dataset, register_coco_openset
    from semseg_core.modeling import build_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synthetic_eval")
    json_file = generate_dataset(str(root), num_images=3, seed=7, image_size=128, split="test", progress=False)
    register_coco_openset("eval_test_tiny", json_file, os.path.join(str(root), "images"),
                          known_class_names=["box", "disc", "triangle", "ring", "star", "cross"])
    cfg = load_config(os.path.join(REPO, "config/models/Synthetic/semseg_tiny.yaml"),
                      ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return cfg, model


def test_evaluate_model_writes_results_and_metrics(tiny_setup, tmp_path):
    from semseg_core.evaluation import evaluate_model

    cfg, model = tiny_setup
    threshold = model.roi_heads.embedding.unknown_threshold
    model.train()
    metrics = evaluate_model(cfg, model, "eval_test_tiny", str(tmp_path / "plain"))
    assert model.training and model.roi_heads.embedding.unknown_threshold == threshold  # state restored
    assert set(metrics) == {"bbox", "segm"}
    assert all(not math.isnan(metrics[t]["AP_k"]) for t in metrics)  # the test set has known objects
    results = json.loads((tmp_path / "plain" / "coco_results.json").read_text())
    assert metrics["segm"]["num_detections"] == len(results) > 0
    for name in ("metrics.json", "metrics.txt", "pr_curves.png"):
        assert (tmp_path / "plain" / name).is_file()

    forced = evaluate_model(cfg, model, "eval_test_tiny", str(tmp_path / "forced"), force_known=True)
    forced_results = json.loads((tmp_path / "forced" / "coco_results.json").read_text())
    assert all(r["category_id"] != UNKNOWN_ID for r in forced_results)
    assert forced["segm"]["AP_unk"] == 0.0 or math.isnan(forced["segm"]["AP_unk"])
    assert model.roi_heads.embedding.unknown_threshold == threshold


def test_force_known_restores_the_threshold_after_an_error(tiny_setup):
    _, model = tiny_setup
    threshold = model.roi_heads.embedding.unknown_threshold
    with pytest.raises(RuntimeError, match="boom"):
        with unknown_decision_disabled(model):
            assert model.roi_heads.embedding.unknown_threshold == float("inf")
            raise RuntimeError("boom")
    assert model.roi_heads.embedding.unknown_threshold == threshold


def load_cli_module():
    spec = importlib.util.spec_from_file_location("evaluate_cli", EVALUATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_evaluates_a_model_through_the_predictor(tiny_setup, tmp_path, capsys):
    from semseg_core.checkpoint import save_checkpoint
    from semseg_core.data import get_dataset_meta

    cfg, model = tiny_setup
    weights = save_checkpoint(str(tmp_path / "tiny.pth"), model, cfg)
    meta = get_dataset_meta("eval_test_tiny", cfg)
    common = ["--config-file", os.path.join(REPO, "config/models/Synthetic/semseg_tiny.yaml"),
              "--gt", meta["json_file"], "--image-root", meta["image_root"]]  # known classes: the model's
    overrides = ["MODEL.WEIGHTS", weights, "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128"]
    cli = load_cli_module()  # in-process: the same main() as the command line, without a second torch start-up
    for out, extra in (("plain", []), ("forced", ["--force-known"])):
        assert cli.main([*common, *extra, "--out", str(tmp_path / out), *overrides]) == 0, capsys.readouterr().err
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        assert set(metrics) == {"bbox", "segm"}
        results = json.loads((tmp_path / out / "coco_results.json").read_text())
        assert metrics["bbox"]["num_detections"] == len(results)
    assert "AOSE" in capsys.readouterr().out
    forced = json.loads((tmp_path / "forced" / "coco_results.json").read_text())
    assert all(r["category_id"] != UNKNOWN_ID for r in forced)
    # a model whose classes are not the json's known classes is refused with both lists in the message
    assert cli.main([*common, "--known-ids", "1,2", "--out", str(tmp_path / "bad"), *overrides]) == 2
    assert "are not the known classes of" in capsys.readouterr().err


def test_cli_puts_raw_and_instance_map_side_by_side(tiny_setup, tmp_path, capsys):
    """--output raw,instance_map: one folder per output, each with the open-set metrics and the per-object figures,
    and the side-by-side table; the instance map lists no detection without pixels."""
    from semseg_core.checkpoint import save_checkpoint
    from semseg_core.data import get_dataset_meta

    cfg, model = tiny_setup
    weights = save_checkpoint(str(tmp_path / "tiny.pth"), model, cfg)
    meta = get_dataset_meta("eval_test_tiny", cfg)
    common = ["--config-file", os.path.join(REPO, "config/models/Synthetic/semseg_tiny.yaml"),
              "--gt", meta["json_file"], "--image-root", meta["image_root"], "--out", str(tmp_path / "both")]
    overrides = ["MODEL.WEIGHTS", weights, "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128"]
    cli = load_cli_module()
    assert cli.main([*common, "--output", "raw,instance_map", *overrides]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for text in ("AP_k (segm)", "AOSE (segm)", "AR_unk@100 (segm)", "Boundary F", "raw", "instance_map"):
        assert text in printed, text
    table = (tmp_path / "both" / "outputs.txt").read_text()
    assert "unknown objects labelled known" in table and "objects with F >= 0.75" in table
    everything = json.loads((tmp_path / "both" / "outputs.json").read_text())
    assert set(everything) == {"raw", "instance_map"}
    for name in everything:
        results = json.loads((tmp_path / "both" / name / "coco_results.json").read_text())
        assert everything[name]["segm"]["num_detections"] == len(results)
        figures = json.loads((tmp_path / "both" / name / "instances.json").read_text())
        assert figures["detections"] == len(results) and figures["images"] == 3
    assert everything["instance_map"]["instances"]["empty_detections"] == 0
    assert cli.main([*common, "--output", "raw,panoptic", *overrides]) == 2
    assert "--output must name outputs among raw, raw_published, instance_map" in capsys.readouterr().err
    # --known-min-probability sets the instance map's threshold only, validated like the node parameter
    presets = cli.output_presets(0.6)
    assert presets["instance_map"].known_min_probability == 0.6
    assert presets["raw_published"] == cli.output_presets()["raw_published"]
    assert cli.output_presets()["instance_map"].known_min_probability == 0.95
    assert cli.main([*common, "--output", "instance_map", "--known-min-probability", "1.5", *overrides]) == 2
    assert "known_min_probability" in capsys.readouterr().err


def test_tradeoff_script_writes_the_plot_and_its_figures(tmp_path, capsys):
    """training/instance_map_tradeoff.py on two synthetic scenes with the embedded model: a PNG and the figures
    per threshold; on these scenes the stricter threshold labels no more unknown objects known."""
    from semseg_core.data.synthetic import generate_dataset

    json_file = generate_dataset(str(tmp_path / "scenes"), num_images=2, seed=11, split="test", progress=False)
    spec = importlib.util.spec_from_file_location("tradeoff_cli", os.path.join(REPO, "training",
                                                                             "instance_map_tradeoff.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "tradeoff.png"
    assert module.main(["--set", "two scenes", json_file, str(tmp_path / "scenes" / "images"), "--out", str(out),
                        "--thresholds", "0.5,0.99"]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 1000
    rows = json.loads((tmp_path / "tradeoff.json").read_text())["two scenes"]
    assert [r["threshold"] for r in rows] == [0.5, 0.99]
    assert rows[1]["unknown_labelled_known"] <= rows[0]["unknown_labelled_known"]
    assert "unknown labelled known" in capsys.readouterr().out
    assert module.main(["--set", "missing", str(tmp_path / "none.json"), str(tmp_path), "--out", str(out)]) == 2
