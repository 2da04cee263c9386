"""semseg_core.device: the one rule for device names (Predictor, trainer and node all use it)."""
import pytest
import torch

from semseg_core.device import DeviceError, parse_device, resolve_device


@pytest.mark.parametrize("name, expected", [("cpu", torch.device("cpu")), ("cuda", torch.device("cuda")),
                                            ("cuda:1", torch.device("cuda", 1))])
def test_valid_names_parse_without_touching_cuda(name, expected):
    assert parse_device(name) == expected


@pytest.mark.parametrize("name", ["mps", "tpu", "CUDA", "cuda:", "cuda:x", "cuda:1234", " cpu", "", "cpu:0x"])
def test_unsupported_or_malformed_names_are_refused_with_the_name(name):
    with pytest.raises(DeviceError, match=f"{name!r} is not supported"):
        parse_device(name)


def test_cpu_resolves_everywhere():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path of a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_cuda_is_an_error_naming_the_setting(name):
    with pytest.raises(DeviceError, match=rf"MODEL.DEVICE '{name}' requested but CUDA is not available"):
        resolve_device(name, what="MODEL.DEVICE")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_past_the_visible_gpus_is_an_error():
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
