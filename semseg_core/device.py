"""Device names: the one rule every entry point uses (Predictor, trainer, ROS node).

A device is explicit: ``cpu``, ``cuda`` or ``cuda:N``. CUDA asked for and absent is an error, never a silent
CPU fallback (the most common complaint about perception nodes). Other torch device types (``mps``, ``xpu``,
...) are refused: nothing in this project is tested on them.
"""
import re
from typing import Union

import torch

_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:[0-9]{1,3})?)$")


class DeviceError(ValueError):
    """A device name that is malformed, unsupported, or names hardware this machine does not have."""


def parse_device(name: Union[str, torch.device], what: str = "device") -> torch.device:
    """``name`` as a torch.device after a syntax check only (no CUDA query): for validating settings early."""
    text = str(name)
    if not _DEVICE_PATTERN.match(text):
        raise DeviceError(f"{what} {text!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return torch.device(text)


def resolve_device(name: Union[str, torch.device], what: str = "device") -> torch.device:
    """``name`` as a torch.device that exists here: CUDA absent, or an index past the visible GPUs, is an error."""
    device = parse_device(name, what)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{what} {str(name)!r} requested but CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False); use 'cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{what} {str(name)!r} requested but only {count} CUDA device(s) are visible")
    return device
