"""Where a model runs and in which precision, from a user's ``--device`` / ``--precision`` string.

The one device resolver of every command (mine, train, eval, demo, the
benchmarks): each takes ``device="auto"`` and ``precision="auto"`` so the same
CLI flags work on a laptop (CPU, fp32) and on a GPU worker (CUDA, bf16/fp16 autocast).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from maskmine.transforms.errors import UserError

if TYPE_CHECKING:  # torch is imported where a device is resolved, so a parser's --precision choices need none
    import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    Asking for CUDA on a machine without it is a user error, not a silent CPU run.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device {spec!r} requested but only {count} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``; ``None`` means run in plain fp32.

    ``"auto"`` picks bf16 on GPUs that support it, fp16 on older GPUs, and fp32
    on CPU (CPU autocast is slower than fp32 for these models).
    """
    import torch

    text = (precision or "auto").strip().lower()
    if text not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if text == "fp32":
        return None
    if text == "bf16":
        return torch.bfloat16
    if text == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
