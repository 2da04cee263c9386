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


def test_a_model_config_without_weights_is_refused_with_what_to_pass():
    with pytest.raises(ModelLoadError) as refused:
        load_predictor(_params(model_config=str(TINY_CONFIG)))
    message = str(refused.value)
    assert "randomly initialised" in message and str(TINY_CONFIG) in message
    assert "weights:=" in message and "allow_random_weights:=true" in message


def test_random_weights_only_when_allowed_explicitly():
    with pytest.warns(UserWarning, match="randomly initialised"):
        predictor = load_predictor(_params(model_config=str(TINY_CONFIG), allow_random_weights=True))
    assert predictor.cfg.MODEL.WEIGHTS == ""


def test_weights_named_by_the_config_are_weights(tmp_path, tiny_weights):
    config = tmp_path / "with_weights.yaml"
    config.write_text(f"_BASE_: {TINY_CONFIG}\nMODEL:\n  WEIGHTS: {tiny_weights}\n")
    predictor = load_predictor(_params(model_config=str(config)))
    assert predictor.cfg.MODEL.WEIGHTS == tiny_weights
