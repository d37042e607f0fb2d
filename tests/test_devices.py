"""Device and precision strings: the one resolver of mine, train, eval and demo."""
from __future__ import annotations

import pytest
import torch

from maskmine.transforms.errors import UserError
from maskmine.transforms.devices import autocast_dtype, resolve_device


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


def test_explicit_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu0", "tpu", "cuda:x"])
def test_unknown_devices_are_user_errors(spec: str) -> None:
    with pytest.raises(UserError):
        resolve_device(spec)


def test_precision_on_cpu_and_explicit() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "FP16") is torch.float16
    with pytest.raises(UserError, match="unknown precision"):
        autocast_dtype(cpu, "int8")


@pytest.mark.gpu
def test_precision_auto_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(resolve_device("cuda"), "auto") is expected
