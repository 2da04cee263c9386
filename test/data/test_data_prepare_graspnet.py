"""training/prepare_graspnet.py on a tiny fake GraspNet-1Billion tree."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "training", "prepare_graspnet.py")
_spec = importlib.util.spec_from_file_location("prepare_graspnet", SCRIPT)
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

VIEWS = 3
# scene -> folder, created in an order unlike the numeric one; scene 3 sits directly in the source folder
LAYOUT = {2: "test_seen", 0: "train_1", 3: "", 1: "train_1"}


def make_tree(src, layout=LAYOUT, views=VIEWS):
    for scene, folder in layout.items():
        rgb = os.path.join(src, folder, f"scene_{scene:04d}", "realsense", "rgb")
        os.makedirs(rgb)
        for v in range(views):
            with open(os.path.join(rgb, f"{v:04d}.png"), "w") as f:
                f.write(f"scene {scene} view {v}")
        # depth and kinect views are ignored
        os.makedirs(os.path.join(src, folder, f"scene_{scene:04d}", "kinect", "rgb"))


def read(path):
    with open(path) as f:
        return f.read()


def run(src, dst, *extra):
    return prepare.main(["--src", str(src), "--dst", str(dst), "--views-per-scene", str(VIEWS), *extra])


def test_numbers_views_in_scene_order_and_is_idempotent(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    assert run(src, dst) == 0
    files = sorted(os.listdir(dst))
    assert files == [f"{k:06d}.png" for k in range(1, 13)]
    for k in range(1, 13):  # image k = view (k-1) % 3 of scene (k-1) // 3
        assert read(dst / f"{k:06d}.png") == f"scene {(k - 1) // VIEWS} view {(k - 1) % VIEWS}"
    assert "copied: 12, already up to date: 0" in capsys.readouterr().out

    with open(dst / "000005.png", "w") as f:  # a stale file from some other run is replaced
        f.write("stale")
    assert run(src, dst) == 0
    assert sorted(os.listdir(dst)) == files and read(dst / "000005.png") == "scene 1 view 1"
    assert "copied: 1, already up to date: 11" in capsys.readouterr().out


def test_missing_view_is_an_error_and_nothing_is_copied(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    gone = src / "test_seen" / "scene_0002" / "realsense" / "rgb" / "0001.png"
    os.remove(gone)
    assert run(src, dst) == 1
    err = capsys.readouterr().err
    assert str(gone) in err and "1 of 12 views are missing (3 expected per scene)" in err
    assert not dst.exists()


def test_dry_run_copies_nothing(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    assert run(src, dst, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "scenes: 4 (numbers 0..3)" in out and "000001.png .. 000012.png" in out and "nothing copied" in out
    assert not dst.exists()


def test_scene_gaps_and_duplicates_are_refused(tmp_path, capsys):
    src = tmp_path / "gaps"
    make_tree(src, {0: "train_1", 2: "train_1"})
    assert run(src, tmp_path / "dst") == 1
    assert "missing: [1]" in capsys.readouterr().err
    assert run(src, tmp_path / "dst", "--allow-gaps") == 0
    assert read(tmp_path / "dst" / "000004.png") == "scene 2 view 0"

    dup = tmp_path / "dup"
    make_tree(dup, {0: "train_1", 1: "train_2"})
    os.makedirs(dup / "test_seen" / "scene_0001")
    assert run(dup, tmp_path / "dst2") == 1
    assert "scene 1 found twice" in capsys.readouterr().err


def test_cli_help_and_missing_source(tmp_path):
    ok = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--dry-run" in ok.stdout
    bad = subprocess.run([sys.executable, SCRIPT, "--src", str(tmp_path / "none"), "--dst", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "source folder not found" in bad.stderr
