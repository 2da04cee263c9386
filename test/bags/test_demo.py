"""`semseg-demo --short` end to end, run as a user runs it (a child process): it exits 0, prints the
one-screen summary with the per-object figures of the published instance map, and leaves a readable overlay
video and a report that parses."""
import json
import subprocess
import sys

import cv2
import pytest


SHORT_FRAMES = 6


@pytest.mark.timeout(400)
def test_demo_short_end_to_end(tmp_path):
    out = tmp_path / "demo_output"
    # the demo runs the shipped model, as `make demo` does (no random-weight stand-in)
    command = [sys.executable, "-m", "semseg_ros.demo", "--short", "--out", str(out), "--storage", "sqlite3"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=380)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for text in ("AP_k", "AR_unk@100", "AOSE", "latency", "p95", f"{SHORT_FRAMES}/{SHORT_FRAMES} answered",
                 "known", "unknown", "detections per object", "unknown objects labelled known", "Boundary F"):
        assert text in run.stdout, text

    report = json.loads((out / "report" / "report.json").read_text())
    assert report["frames"]["answered"] == SHORT_FRAMES
    assert set(report["metrics"]) == {"bbox", "segm"}
    assert report["latency"]["count"] == SHORT_FRAMES and report["latency"]["p50_ms"] > 0
    assert (out / "report" / "summary.md").is_file()
    # the node's default output is the instance map: every published detection owns pixels of the label image
    figures = report["instances"]
    assert figures["images"] == SHORT_FRAMES and figures["empty_detections"] == 0
    assert figures["detections"] == report["detections"]["known"] + report["detections"]["unknown"]
    assert 0.0 <= figures["unknown_labelled_known"] <= 1.0 and 0.0 < figures["overlap_f"] <= 1.0

    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    frames = 0
    while video.read()[0]:
        frames += 1
    video.release()
    assert frames == SHORT_FRAMES


def test_demo_help_explains_options(capsys):
    from semseg_ros import demo

    with pytest.raises(SystemExit):
        demo.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--num-frames", "--out", "--weights", "--config", "--storage", "--short", "--param"):
        assert option in text


def test_demo_node_parameter_needs_name_and_value(capsys):
    from semseg_ros import demo

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--param", "output=raw"])
    assert exit_info.value.code == 2
    assert "expected name:=value, got 'output=raw'" in capsys.readouterr().err


def test_demo_missing_weights_is_a_clear_error(tmp_path, capsys):
    from semseg_ros import demo

    assert demo.main(["--short", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
