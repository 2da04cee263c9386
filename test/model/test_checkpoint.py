"""Checkpoints: atomic save, clear load errors, the import of the authors' detectron2 checkpoints and the
ImageNet backbone files (detectron2's R-50.pkl, torchvision's ResNet-50) training starts from.

The detectron2 key list (names + shapes of the authors' SemSeg state dict, printed from a detectron2 0.6 build of
their code) is committed as test/fixtures/d2_semseg_coco_keys.json.
"""
import json
import os
import pickle

import pytest
import torch

from semseg_core import checkpoint as ckpt
from semseg_core.checkpoint import (CheckpointError, import_detectron2_checkpoint, load_checkpoint,
                                    load_model_weights, map_detectron2_key, save_checkpoint)
from semseg_core.config import get_cfg, load_config
from semseg_core.modeling import build_model

from caffe2_pickle import random_r50_arrays, write_py2_numpy_pickle, write_torchvision_r50

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KEYS = json.load(open(os.path.join(REPO, "test", "fixtures", "d2_semseg_coco_keys.json")))
COCO_YAML = os.path.join(REPO, "config", "models", "COCO", "semseg_R50_FPN_128k.yaml")
GRASPNET_YAML = os.path.join(REPO, "config", "models", "GraspNet", "semseg_R50_FPN_128k.yaml")
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")


def _d2_state_dict(seed=0, graspnet=False):
    """Random tensors under the authors' names and shapes (FrozenBN variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, _kind in KEYS["coco"]:
        if graspnet and key in KEYS["graspnet_shapes"]:
            shape = KEYS["graspnet_shapes"][key]
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".norm.weight"):
            value = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.02
        state[key] = value
    return state


# Fewer proposals and detections keep the R50 forward passes short on 2 CPU cores; same code paths.
FAST = ["MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.SOFTMAXCLS.KNOWN_TOPK", "5", "MODEL.SOFTMAXCLS.UNKNOWN_TOPK", "5"]


def _r50(yaml_path=COCO_YAML):
    cfg = load_config(yaml_path, ["MODEL.DEVICE", "cpu"] + FAST)
    return build_model(cfg).eval(), cfg


def _inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 160, 224), generator=g, dtype=torch.uint8)
    return [{"image": image, "height": 240, "width": 336}]


def test_fixture_matches_the_documented_summary():
    entries = KEYS["coco"]
    assert len(entries) == 318
    assert sum(1 for e in entries if e[2].startswith("param")) == 106
    assert sum(int(torch.Size(e[1]).numel()) for e in entries if e[2].startswith("param")) == 44_860_127


def test_every_authors_key_maps_onto_a_distinct_model_key():
    model, _ = _r50()
    ours = model.state_dict()
    mapped = [map_detectron2_key(k) for k, _, _ in KEYS["coco"]]
    assert None not in mapped
    assert len(set(mapped)) == len(mapped) == len(ours) == 318
    for (key, shape, _), name in zip(KEYS["coco"], mapped):
        assert tuple(ours[name].shape) == tuple(shape), (key, name)
    # spot checks of the renames CONTRACTS.md pins
    assert map_detectron2_key("proposal_generator.rpn_head.anchor_deltas.weight") == "rpn.head.box_deltas.weight"
    assert map_detectron2_key("roi_heads.dml.representatives") == "roi_heads.embedding.prototypes"
    assert map_detectron2_key("roi_heads.mask_head.mask_embed.2.bias") == "roi_heads.mask_head.kernel_mlp.2.bias"
    assert map_detectron2_key("backbone.bottom_up.res3.0.shortcut.norm.running_var") == \
        "backbone.body.layer2.0.downsample.1.running_var"
    assert map_detectron2_key("backbone.fpn_output5.bias") == "backbone.fpn.layer_blocks.3.0.bias"


@pytest.fixture(scope="module")
def d2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("d2") / "model_final.pth"
    torch.save({"model": _d2_state_dict(), "iteration": 127999, "optimizer": {"state": {}}}, path)
    return str(path)


def test_import_round_trip_is_complete_and_deterministic(d2_file):
    state = _d2_state_dict()
    torch.manual_seed(123)
    model_a, _ = _r50()
    report = import_detectron2_checkpoint(d2_file, model_a)
    assert report.num_loaded == 318 and report.num_elements == 44_860_127 + 106_240
    assert report.skipped_entries == ["iteration", "optimizer"]
    assert "0 unmapped" in str(report)
    # values land where they belong
    torch.testing.assert_close(model_a.rpn.head.box_deltas.weight, state["proposal_generator.rpn_head.anchor_deltas.weight"])
    torch.testing.assert_close(model_a.backbone.body.layer2[0].downsample[1].running_var,
                               state["backbone.bottom_up.res3.0.shortcut.norm.running_var"])
    torch.testing.assert_close(model_a.roi_heads.classifier.cls_score.bias, state["roi_heads.softmaxcls.cls_score.bias"])

    torch.manual_seed(999)  # a different random init, overwritten by the same weights
    model_b, _ = _r50()
    import_detectron2_checkpoint({"model": state}, model_b)
    with torch.no_grad():
        out_a1 = model_a(_inputs())[0]
        out_a2 = model_a(_inputs())[0]
        out_b = model_b(_inputs())[0]
    assert len(out_a1["boxes"]) > 0
    for key in ("boxes", "scores", "classes", "unknown_scores", "mask_probs"):
        torch.testing.assert_close(out_a1[key], out_a2[key], rtol=0, atol=0)
        torch.testing.assert_close(out_a1[key], out_b[key], rtol=0, atol=0)


def test_import_fails_loudly_listing_unmapped_missing_and_mismatched():
    model, _ = _r50()
    state = _d2_state_dict()
    state["roi_heads.extra_head.weight"] = torch.zeros(3)
    del state["roi_heads.box_head.fc2.bias"]
    with pytest.raises(CheckpointError) as err:
        import_detectron2_checkpoint(state, model)
    text = str(err.value)
    assert "1 unmapped" in text and "roi_heads.extra_head.weight" in text
    assert "1 model keys without a value" in text and "roi_heads.box_head.fc2.bias" in text
    # a GraspNet checkpoint (28 known classes) into a COCO model (20): shape mismatches, named
    with pytest.raises(CheckpointError) as err:
        import_detectron2_checkpoint(_d2_state_dict(graspnet=True), model)
    assert "3 shape mismatches" in str(err.value) and "roi_heads.dml.representatives (28, 256)" in str(err.value)


def test_graspnet_checkpoint_imports_into_the_graspnet_config():
    model, cfg = _r50(GRASPNET_YAML)
    report = import_detectron2_checkpoint(_d2_state_dict(graspnet=True), model)
    assert report.num_loaded == 318 and model.roi_heads.embedding.prototypes.shape == (28, 256)


def test_cli_convert_d2_writes_a_checkpoint_that_loads(d2_file, tmp_path, capsys):
    out = str(tmp_path / "converted.pth")
    assert ckpt.main(["convert-d2", d2_file, out, "--config", COCO_YAML]) == 0
    assert "imported 318 tensors" in capsys.readouterr().out
    converted = load_checkpoint(out)
    assert converted["meta"]["converter"] == "detectron2"
    cfg = get_cfg()
    cfg.merge_from_str(converted["config"])
    assert cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES == 20
    torch.testing.assert_close(converted["model"]["roi_heads.embedding.prototypes"],
                               _d2_state_dict()["roi_heads.dml.representatives"])
    assert ckpt.main(["convert-d2", d2_file, out, "--config", GRASPNET_YAML]) == 1
    assert "shape mismatches" in capsys.readouterr().err


def _tiny_model():
    cfg = load_config(TINY_YAML)
    return build_model(cfg).eval(), cfg


def test_save_load_round_trip_with_config(tmp_path):
    model, cfg = _tiny_model()
    path = save_checkpoint(str(tmp_path / "sub" / "m.pth"), model, cfg, iteration=7, meta={"note": "x"})
    data = load_checkpoint(path)
    assert data["iteration"] == 7 and data["meta"]["note"] == "x" and data["meta"]["format"] == "semseg_core"
    restored = get_cfg()
    restored.merge_from_str(data["config"])
    assert restored.MODEL.BACKBONE.NAME == "resnet18_torchvision"
    torch.manual_seed(5)
    other, _ = _tiny_model()
    assert "loaded" in load_model_weights(other, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v, rtol=0, atol=0)
    assert [p for p in os.listdir(tmp_path / "sub")] == ["m.pth"]  # no temp files left
    r50, _ = _r50()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model_weights(r50, path)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    model, cfg = _tiny_model()
    path = str(tmp_path / "model.pth")
    save_checkpoint(path, model, cfg, iteration=1)
    before = open(path, "rb").read()

    def failing_save(obj, f, *args, **kwargs):  # a disk that fills up half way through
        f.write(b"PK\x03\x04partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, cfg, iteration=2)
    assert open(path, "rb").read() == before  # the old checkpoint is untouched
    assert os.listdir(tmp_path) == ["model.pth"]  # and no partial temp file remains
    with pytest.raises(OSError):
        save_checkpoint(str(tmp_path / "new.pth"), model, cfg)
    assert not os.path.exists(tmp_path / "new.pth")


def test_save_rejects_entries_weights_only_cannot_load(tmp_path):
    model, cfg = _tiny_model()
    with pytest.raises(TypeError, match="optimizer"):
        save_checkpoint(str(tmp_path / "m.pth"), model, cfg, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not os.path.exists(tmp_path / "m.pth")


def test_load_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(missing)
    model, cfg = _tiny_model()
    good = save_checkpoint(str(tmp_path / "good.pth"), model, cfg)
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth.*(truncated|corrupt)"):
        load_checkpoint(str(truncated))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_checkpoint(str(garbage))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(str(empty))
    not_ckpt = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_ckpt)
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load_checkpoint(str(not_ckpt))


def test_numpy_arrays_are_reported_clearly(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "numpy.pth"
    torch.save({"model": {"w": np.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="numpy"):
        load_checkpoint(str(path))


# ---------------------------------------------------------------------------------------------------------------
# ImageNet backbone files (the authors start from detectron2's R-50.pkl)
# ---------------------------------------------------------------------------------------------------------------
TORCHVISION_OVERRIDES = ["MODEL.BACKBONE.NAME", "resnet50_torchvision", "INPUT.FORMAT", "RGB",
                         "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]"]


def _r50_model(extra=()):
    cfg = load_config(COCO_YAML, ["MODEL.DEVICE", "cpu", *extra])
    return build_model(cfg), cfg


@pytest.fixture(scope="module")
def r50_pkl(tmp_path_factory):
    arrays = random_r50_arrays(seed=1)
    path = tmp_path_factory.mktemp("imagenet") / "R-50.pkl"
    write_py2_numpy_pickle(path, arrays)
    return str(path), arrays


def test_r50_pkl_fills_the_trunk_under_caffe2_names_and_reports_the_rest(r50_pkl):
    path, arrays = r50_pkl
    model, cfg = _r50_model()
    report = ckpt.load_initial_weights(cfg, model, path)
    body = model.backbone.body
    # the renaming, pair by pair (caffe2 stage resN = torchvision layer N-1, branch2a/b/c = conv1/2/3, branch1 = shortcut)
    expected = {
        body.conv1.weight: "conv1_w",
        body.bn1.weight: "res_conv1_bn_gamma", body.bn1.bias: "res_conv1_bn_beta",
        body.bn1.running_mean: "res_conv1_bn_running_mean", body.bn1.running_var: "res_conv1_bn_running_var",
        body.layer1[0].downsample[0].weight: "res2_0_branch1_w",
        body.layer1[0].downsample[1].running_var: "res2_0_branch1_bn_running_var",
        body.layer2[0].conv1.weight: "res3_0_branch2a_w",
        body.layer3[5].bn2.weight: "res4_5_branch2b_bn_gamma",
        body.layer4[2].conv3.weight: "res5_2_branch2c_w",
        body.layer4[2].bn3.running_mean: "res5_2_branch2c_bn_running_mean",
    }
    for tensor, name in expected.items():
        assert torch.equal(tensor, torch.from_numpy(arrays[name])), name
    assert len(report.loaded) == 53 + 53 * 4  # every conv and every BN buffer of the trunk
    assert sorted(report.ignored) == ["conv1_b", "fc1000_b", "fc1000_w"]
    assert "backbone.fpn.inner_blocks.0.0.weight" in report.random and "rpn.head.conv.weight" in report.random
    assert not any(k.startswith("backbone.body.") for k in report.random)
    text = str(report)
    assert "loaded 265 trunk tensors" in text and "left at random init" in text and "backbone.fpn" in text


def test_older_pkl_with_folded_batchnorm_gets_identity_statistics(r50_pkl, tmp_path):
    _, arrays = r50_pkl
    folded = {}
    for name, value in arrays.items():  # Detectron(1)'s copy: _bn_s / _bn_b, no running statistics
        if name.endswith("_bn_gamma"):
            folded[name.replace("_bn_gamma", "_bn_s")] = value
        elif name.endswith("_bn_beta"):
            folded[name.replace("_bn_beta", "_bn_b")] = value
        elif not name.endswith(("_bn_running_mean", "_bn_running_var")):
            folded[name] = value
    path = tmp_path / "R-50-folded.pkl"
    write_py2_numpy_pickle(path, folded)
    model, cfg = _r50_model()
    ckpt.load_initial_weights(cfg, model, str(path))
    bn = model.backbone.body.layer2[1].bn2
    assert torch.equal(bn.weight, torch.from_numpy(arrays["res3_1_branch2b_bn_gamma"]))
    assert torch.equal(bn.running_mean, torch.zeros(128)) and torch.equal(bn.running_var, torch.ones(128))


def test_pkl_with_any_other_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": Payload()}, protocol=2))
    model, cfg = _r50_model()
    with pytest.raises(CheckpointError, match="evil.pkl.*not allowed"):
        ckpt.load_initial_weights(cfg, model, str(path))
    assert not marker.exists()


def test_pkl_needs_the_msra_conventions_and_torchvision_file_its_own(r50_pkl, tmp_path):
    path, _ = r50_pkl
    model, cfg = _r50_model(TORCHVISION_OVERRIDES)
    with pytest.raises(CheckpointError, match="MODEL.BACKBONE.NAME resnet50_msra INPUT.FORMAT BGR"):
        ckpt.load_initial_weights(cfg, model, path)
    tv_path = tmp_path / "resnet50-imagenet.pth"
    write_torchvision_r50(tv_path, seed=2)
    model, cfg = _r50_model()  # the COCO config as shipped: MSRA conventions
    with pytest.raises(CheckpointError, match="MODEL.BACKBONE.NAME resnet50_torchvision INPUT.FORMAT RGB "
                                              r"MODEL.PIXEL_MEAN \[123.675,116.28,103.53\]"):
        ckpt.load_initial_weights(cfg, model, str(tv_path))


def test_torchvision_resnet50_file_fills_the_trunk(tmp_path):
    tv_path = tmp_path / "resnet50-imagenet.pth"
    state = write_torchvision_r50(tv_path, seed=2)
    model, cfg = _r50_model(TORCHVISION_OVERRIDES)
    report = ckpt.load_initial_weights(cfg, model, str(tv_path))
    body = model.backbone.body
    assert torch.equal(body.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    assert torch.equal(body.layer1[0].downsample[1].running_var, state["layer1.0.downsample.1.running_var"])
    assert body.layer2[0].conv2.stride == (2, 2) and body.layer2[0].conv1.stride == (1, 1)  # stride in the 3x3
    assert {"fc.weight", "fc.bias", "bn1.num_batches_tracked"} <= set(report.ignored)
    assert len(report.loaded) == 265
    # torchvision's older hosted files use torch.save's legacy (non-zip) format, itself a pickle
    legacy = tmp_path / "resnet50-legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    model, cfg = _r50_model(TORCHVISION_OVERRIDES)
    ckpt.load_initial_weights(cfg, model, str(legacy))
    assert torch.equal(model.backbone.body.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])


def test_training_a_frozen_backbone_from_random_init_is_refused_unless_asked():
    cfg = load_config(COCO_YAML, ["MODEL.DEVICE", "cpu"])
    with pytest.raises(CheckpointError, match="FrozenBN and MODEL.BACKBONE.FREEZE_AT 2 needs pretrained weights.*"
                                              "R-50.pkl.*ALLOW_RANDOM_INIT"):
        ckpt.check_backbone_initialisation(cfg)
    ckpt.check_backbone_initialisation(load_config(COCO_YAML, ["MODEL.BACKBONE.ALLOW_RANDOM_INIT", "True"]))
    ckpt.check_backbone_initialisation(load_config(COCO_YAML, ["MODEL.WEIGHTS", "R-50.pkl"]))
    ckpt.check_backbone_initialisation(load_config(TINY_YAML))  # GN, nothing frozen: trains from scratch
