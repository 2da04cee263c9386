"""Parameter validation as the node applies it when a value is SET (start and run time alike)."""
import math

import pytest
import torch
from rclpy.parameter import Parameter

from conftest import TINY_CONFIG
from semseg_ros import parameters
from semseg_ros.parameters import ParameterError, coerce_types, pending_restart, updated, validate

DEFAULTS = {name: spec.default for name, spec in parameters.SPECS.items()}


def test_an_integer_for_a_double_is_coerced():
    assert validate("known_score_threshold", 1) == 1.0 and type(validate("known_score_threshold", 1)) is float
    assert validate("unknown_score_threshold", 0) == 0.0
    with pytest.raises(ParameterError, match="must be a double, got bool"):
        validate("known_score_threshold", True)
    with pytest.raises(ParameterError, match="must be a double, got string"):
        validate("known_score_threshold", "0.5")
    with pytest.raises(ParameterError, match="must be an integer, got double"):
        validate("queue_size", 2.0)


def test_coerce_types_turns_integer_parameters_of_double_type_into_doubles():
    given = [Parameter("known_score_threshold", Parameter.Type.INTEGER, 1),
             Parameter("queue_size", Parameter.Type.INTEGER, 3),
             Parameter("qos_overrides./image.subscription.depth", Parameter.Type.INTEGER, 4)]
    out = coerce_types(given)
    assert (out[0].type_, out[0].value) == (Parameter.Type.DOUBLE, 1.0)
    assert out[1] is given[1] and out[2] is given[2]


def test_non_finite_and_out_of_range_values_are_refused():
    for value in (math.nan, math.inf, -0.1, 1.5):
        with pytest.raises(ParameterError, match="known_score_threshold"):
            validate("known_score_threshold", value)


def test_device_must_exist_here():
    assert validate("device", "cpu") == "cpu"
    with pytest.raises(ParameterError, match="'cuda:99'"):
        validate("device", "cuda:99")
    with pytest.raises(ParameterError, match="not supported"):
        validate("device", "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA is not available"):
            validate("device", "cuda")


def test_model_config_must_parse_as_a_model_config(tmp_path):
    assert validate("model_config", str(TINY_CONFIG)) == str(TINY_CONFIG)
    with pytest.raises(ParameterError, match="'/etc/passwd' is not a model config"):
        validate("model_config", "/etc/passwd")
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("MODEL:\n  NO_SUCH_KEY: 1\n")
    with pytest.raises(ParameterError, match="is not a model config"):
        validate("model_config", str(bad_key))
    with pytest.raises(ParameterError, match="file not found"):
        validate("model_config", str(tmp_path / "missing.yaml"))


def test_a_snapshot_is_immutable_and_replaced_whole_or_not_at_all():
    snapshot = updated(DEFAULTS, [])
    with pytest.raises(TypeError):
        snapshot["known_score_threshold"] = 0.9
    changed = updated(snapshot, [Parameter("known_score_threshold", value=0.9),
                                 Parameter("qos_overrides./image.subscription.depth", value=3)])
    assert changed["known_score_threshold"] == 0.9 and snapshot["known_score_threshold"] == 0.3
    assert "qos_overrides./image.subscription.depth" not in changed
    with pytest.raises(ParameterError):
        updated(changed, [Parameter("known_score_threshold", value=0.1), Parameter("device", value="cuda:99")])
    assert changed["known_score_threshold"] == 0.9


def test_pending_restart_lists_values_waiting_for_configure_or_activate():
    applied = dict(DEFAULTS)
    now = dict(DEFAULTS, process_every_frame=True, known_score_threshold=0.9, diagnostics_period=3.0)
    assert pending_restart(applied, now) == ["process_every_frame"]   # thresholds and period apply at once
    assert pending_restart({}, now) == []                             # nothing running: nothing pending
