"""Build the Predictor from node parameters, with start-up errors a user can act on."""
import os


class ModelLoadError(RuntimeError):
    """The model cannot be loaded with the given parameters (message says why and what to do)."""


def config_overrides(params):
    """Dotted config overrides for the node parameters that the model reads at load time."""
    overrides = []
    if params["min_size"] > 0:
        overrides += ["INPUT.MIN_SIZE_TEST", str(params["min_size"])]
    if params["max_size"] > 0:
        overrides += ["INPUT.MAX_SIZE_TEST", str(params["max_size"])]
    if params["unknown_distance_threshold"] >= 0:
        overrides += ["MODEL.DML.UNK_THR", str(params["unknown_distance_threshold"])]
    return overrides


def check_device(device):
    """CUDA asked for and absent is an error, never a silent CPU fallback."""
    if not device.startswith("cuda"):
        return
    import torch
    if not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' requested but CUDA is not available on this machine "
                             f"(torch.cuda.is_available() is False); set device:=cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ModelLoadError(f"device '{device}' requested but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist")


def load_predictor(params):
    """A ready ``semseg_core.Predictor`` for ``params`` (the node's validated parameter dict)."""
    for key in ("weights", "model_config"):
        if params[key] and not os.path.isfile(params[key]):
            raise ModelLoadError(f"{key} file not found: {params[key]}")
    check_device(params["device"])
    from semseg_core import Predictor
    kwargs = dict(config=params["model_config"] or None, weights=params["weights"] or None,
                  device=params["device"])
    kwargs["overrides"] = config_overrides(params)
    try:
        return Predictor(**kwargs)
    except Exception as error:  # ConfigError, CheckpointError, missing files: all say what is wrong
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error
