"""Build the Predictor from node parameters, with start-up errors a user can act on."""
from __future__ import annotations

import os
from typing import Any, List, Mapping

from semseg_core import Predictor
from semseg_core.config import load_config
from semseg_core.device import DeviceError, resolve_device


class ModelLoadError(RuntimeError):
    """The model cannot be loaded with the given parameters (message says why and what to do)."""


def config_overrides(params: Mapping[str, Any]) -> List[str]:
    """Dotted config overrides for the node parameters that the model reads at load time."""
    overrides = []
    if params["min_size"] > 0:
        overrides += ["INPUT.MIN_SIZE_TEST", str(params["min_size"])]
    if params["max_size"] > 0:
        overrides += ["INPUT.MAX_SIZE_TEST", str(params["max_size"])]
    return overrides


def load_predictor(params: Mapping[str, Any]) -> Predictor:
    """A ready ``semseg_core.Predictor`` for ``params`` (the node's validated parameter dict)."""
    for key in ("weights", "model_config"):
        if params[key] and not os.path.isfile(params[key]):
            raise ModelLoadError(f"{key} file not found: {params[key]}")
    try:
        resolve_device(params["device"], what="device")
    except DeviceError as error:
        raise ModelLoadError(f"{error}; set device:=cpu or a GPU that exists") from None
    if _without_weights(params) and not params["allow_random_weights"]:
        raise ModelLoadError(
            f"model_config {params['model_config']} has no weights (neither the weights parameter nor "
            f"MODEL.WEIGHTS in the config): the model would be randomly initialised and its detections "
            f"meaningless. Pass weights:=<checkpoint .pt/.pth>, or allow_random_weights:=true for tests.")
    kwargs = dict(config=params["model_config"] or None, weights=params["weights"] or None,
                  device=params["device"])
    kwargs["overrides"] = config_overrides(params)
    try:
        return Predictor(**kwargs)  # random weights, when allowed, still print the Predictor's warning
    except Exception as error:  # ConfigError, CheckpointError, missing files: all say what is wrong
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error


def _without_weights(params: Mapping[str, Any]) -> bool:
    """True when ``params`` name a model config and no weights anywhere (parameter or MODEL.WEIGHTS)."""
    if params["weights"] or not params["model_config"]:
        return False  # no config: the checkpoint's own config, or the embedded default model with its weights
    try:
        return not load_config(params["model_config"]).MODEL.WEIGHTS
    except Exception as error:  # the config's own error (bad YAML, unknown key) says what is wrong
        raise ModelLoadError(f"model_config {params['model_config']}: {type(error).__name__}: {error}") from error
