"""Node parameters -> Predictor: what the node asks the model for at configure time."""
import pytest

from conftest import TINY_CONFIG
from semseg_ros.model_loader import ModelLoadError, config_overrides, load_predictor
from semseg_ros.parameters import SPECS


def _params(**changes):
    params = {name: spec.default for name, spec in SPECS.items()}
    params.update(changes)
    return params


def test_defaults_leave_the_model_config_alone():
    assert config_overrides(_params()) == []


def test_size_parameters_reach_the_model_and_the_distance_stays_in_postprocessing(tiny_weights):
    """The unknown distance is a post-processing option (each frame, both ways), never baked into the model."""
    params = _params(weights=tiny_weights, model_config=str(TINY_CONFIG), min_size=128,
                     unknown_distance_threshold=0.2)
    assert config_overrides(params) == ["INPUT.MIN_SIZE_TEST", "128"]
    predictor = load_predictor(params)
    assert predictor.cfg.INPUT.MIN_SIZE_TEST == 128
    assert predictor.cfg.MODEL.DML.UNK_THR == pytest.approx(load_predictor(_params(
        weights=tiny_weights, model_config=str(TINY_CONFIG))).cfg.MODEL.DML.UNK_THR)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="weights file not found: .*nope.pt"):
        load_predictor(_params(weights=str(tmp_path / "nope.pt")))
