"""Config system: defaults, _BASE_ inheritance, overrides, validation, dump/load round trip."""
import os
import pickle

import pytest

from semseg_core.config import CfgNode, ConfigError, get_cfg, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(REPO, "config", "models")


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_defaults_are_faithful_and_fresh():
    cfg = get_cfg()
    assert cfg.MODEL.RPN.APPLY_NMS is False
    assert cfg.MODEL.DML.UNK_THR == 0.085
    assert cfg.MODEL.PIXEL_MEAN == [103.53, 116.28, 123.675]
    assert cfg.INPUT.FORMAT == "BGR"
    assert len(cfg.DATASETS.KNOWN_CLASSES) == cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES == 20
    cfg.SOLVER.BASE_LR = 1.0
    assert get_cfg().SOLVER.BASE_LR == 0.005  # get_cfg returns a copy, not the shared defaults


def test_base_inheritance_relative_to_including_file(tmp_path):
    _write(str(tmp_path / "base" / "Base.yaml"), "SOLVER:\n  BASE_LR: 0.02\n  MAX_ITER: 10\nSEED: 3\n")
    child = _write(str(tmp_path / "exp" / "child.yaml"),
                   "_BASE_: ../base/Base.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.SOLVER.BASE_LR == 0.02  # from base
    assert cfg.SOLVER.MAX_ITER == 20  # child overrides base
    assert cfg.SEED == 3
    assert cfg.SOLVER.MOMENTUM == 0.9  # untouched default


def test_base_cycle_and_missing_base_are_errors(tmp_path):
    a = _write(str(tmp_path / "a.yaml"), "_BASE_: b.yaml\n")
    _write(str(tmp_path / "b.yaml"), "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        get_cfg().merge_from_file(a)
    c = _write(str(tmp_path / "c.yaml"), "_BASE_: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml"):
        get_cfg().merge_from_file(c)


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    bad = _write(str(tmp_path / "bad.yaml"), "MODEL:\n  RPN:\n    PRE_NMS_TOPK: 5\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(bad)
    assert "MODEL.RPN.PRE_NMS_TOPK" in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_key_inherited_from_base_names_the_base_file(tmp_path):
    _write(str(tmp_path / "base.yaml"), "SOLVER:\n  LR: 0.1\n")
    child = _write(str(tmp_path / "child.yaml"), "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(child)
    assert "SOLVER.LR" in str(err.value) and "base.yaml" in str(err.value)


def test_wrong_type_in_file_is_an_error(tmp_path):
    bad = _write(str(tmp_path / "t.yaml"), "SOLVER:\n  MAX_ITER: lots\n")
    with pytest.raises(ConfigError) as err:
        get_cfg().merge_from_file(bad)
    assert "SOLVER.MAX_ITER" in str(err.value) and "t.yaml" in str(err.value)
    section = _write(str(tmp_path / "s.yaml"), "SOLVER: 3\n")
    with pytest.raises(ConfigError, match="SOLVER"):
        get_cfg().merge_from_file(section)


def test_merge_from_list_parses_yaml_literals_and_checks_types():
    cfg = get_cfg()
    cfg.merge_from_list([
        "SOLVER.BASE_LR", "1",  # int -> float widening
        "SOLVER.STEPS", "[10, 20]",  # list given for a tuple default
        "MODEL.RPN.APPLY_NMS", "true",
        "OUTPUT_DIR", "2024",  # a string key keeps the text
        "SOLVER.WEIGHT_DECAY", "1e-4",  # PyYAML reads this as a string; float key accepts it
        "DATASETS.TRAIN", "('synthetic_train',)",
    ])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.MODEL.RPN.APPLY_NMS is True
    assert cfg.OUTPUT_DIR == "2024"
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        get_cfg().merge_from_list(["SOLVER.MAX_ITER", "0.5"])  # float -> int is not allowed
    with pytest.raises(ConfigError, match="MODEL.RPN.APPLY_NMS"):
        get_cfg().merge_from_list(["MODEL.RPN.APPLY_NMS", "1"])
    with pytest.raises(ConfigError, match="MODEL.RPN.NOPE"):
        get_cfg().merge_from_list(["MODEL.RPN.NOPE", "1"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])


def test_freeze_blocks_changes():
    cfg = load_config(None, ["SEED", "7"])
    assert cfg.is_frozen() and cfg.SEED == 7
    with pytest.raises(ConfigError, match="frozen"):
        cfg.SEED = 1
    with pytest.raises(ConfigError, match="frozen"):
        cfg.MODEL.RPN.APPLY_NMS = True
    cfg.defrost()
    cfg.SEED = 1
    assert cfg.SEED == 1


def test_dump_round_trip_and_pickle():
    cfg = load_config(os.path.join(MODELS, "COCO", "semseg_R50_FPN_128k.yaml"), ["SEED", "11"])
    text = cfg.dump()
    restored = get_cfg()
    restored.merge_from_str(text)
    assert restored == cfg
    assert restored.SOLVER.STEPS == cfg.SOLVER.STEPS and isinstance(restored.SOLVER.STEPS, tuple)
    assert CfgNode.load_yaml_str(text).to_dict() == cfg.to_dict()
    unpickled = pickle.loads(pickle.dumps(cfg))
    assert unpickled == cfg and unpickled.is_frozen()


@pytest.mark.parametrize("name, known, lr_steps", [
    ("COCO/semseg_R50_FPN_128k.yaml", 20, (84000, 116000)),
    ("GraspNet/semseg_R50_FPN_128k.yaml", 28, (84000, 116000)),
])
def test_shipped_r50_configs_carry_the_authors_values(name, known, lr_steps):
    cfg = load_config(os.path.join(MODELS, name))
    assert cfg.MODEL.BACKBONE.NAME == "resnet50_msra"
    assert cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES == known == len(cfg.DATASETS.KNOWN_CLASSES)
    assert cfg.SOLVER.BASE_LR == 0.005 and cfg.SOLVER.IMS_PER_BATCH == 4
    assert cfg.SOLVER.MAX_ITER == 128000 and cfg.SOLVER.STEPS == lr_steps
    assert cfg.SOLVER.WARMUP_ITERS == 400 and cfg.SOLVER.WARMUP_FACTOR == 0.001
    assert cfg.MODEL.DML.UNK_THR == 0.085 and cfg.MODEL.RPN.APPLY_NMS is False
    assert cfg.MODEL.RPN.BBOX_REG_LOSS_WEIGHT == 10.0 and cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT == 2.0
    if known == 20:
        assert (cfg.MODEL.SOFTMAXCLS.LOSS_WEIGHT, cfg.MODEL.DML.LOSS_WEIGHT) == (1.0, 2.0)
        assert cfg.DATASETS.TRAIN == ("coco_2017_train_invoc",) and cfg.DATASETS.TEST == ("coco_2017_val",)
        assert cfg.DATASETS.KNOWN_CLASSES[0] == "person" and cfg.DATASETS.KNOWN_CLASSES[-1] == "tv"
    else:
        assert (cfg.MODEL.SOFTMAXCLS.LOSS_WEIGHT, cfg.MODEL.DML.LOSS_WEIGHT) == (2.0, 3.0)
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 88
        assert cfg.DATASETS.KNOWN_CLASSES[0] == "cracker_box"
        assert cfg.DATASETS.KNOWN_CLASSES[-1] == "head_shoulders_care"


def test_tiny_config_is_consistent():
    cfg = load_config(os.path.join(MODELS, "Synthetic", "semseg_tiny.yaml"))
    assert cfg.MODEL.BACKBONE.NAME == "resnet18_torchvision"
    assert cfg.MODEL.DML.EMD_DIM == cfg.MODEL.ROI_MASK_HEAD.CONV_DIM  # the kernel MLP reads the embedding
    assert len(cfg.DATASETS.KNOWN_CLASSES) == cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES
    assert cfg.MODEL.DEVICE == "cpu"
