"""Build the Predictor from node parameters, with start-up errors a user can act on."""
import os

from semseg_core import Predictor
from semseg_core.device import DeviceError, resolve_device


class ModelLoadError(RuntimeError):
    """The model cannot be loaded with the given parameters (message says why and what to do)."""


def config_overrides(params):
    """Dotted config overrides for the node parameters that the model reads at load time."""
    overrides = []
    if params["min_size"] > 0:
        overrides += ["INPUT.MIN_SIZE_TEST", str(params["min_size"])]
    if params["max_size"] > 0:
        overrides += ["INPUT.MAX_SIZE_TEST", str(params["max_size"])]
    return overrides


def load_predictor(params):
    """A ready ``semseg_core.Predictor`` for ``params`` (the node's validated parameter dict)."""
    for key in ("weights", "model_config"):
        if params[key] and not os.path.isfile(params[key]):
            raise ModelLoadError(f"{key} file not found: {params[key]}")
    try:
        resolve_device(params["device"], what="device")
    except DeviceError as error:
        raise ModelLoadError(f"{error}; set device:=cpu or a GPU that exists") from None
    kwargs = dict(config=params["model_config"] or None, weights=params["weights"] or None,
                  device=params["device"])
    kwargs["overrides"] = config_overrides(params)
    try:
        return Predictor(**kwargs)
    except Exception as error:  # ConfigError, CheckpointError, missing files: all say what is wrong
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error
