"""torch's process-global settings that a job borrows and gives back: the intra-op thread count and the RNG.

A command in its own process may set them for good, but maskmine's jobs are
also functions called in long-lived processes (the test session, a notebook,
the demo). CPU float32 results depend on the thread count (it sets the
reduction order), and every later unseeded draw depends on the global RNG, so
a job that changed either would change the results of whatever ran after it
in that process. (Issue 22: the test suite's float results depended on the
order of its tests that way.)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[int]:
    """torch's intra-op thread count set to ``count`` (None or 0: left as it is) in the block, put back after."""
    before = torch.get_num_threads()
    if count and count != before:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextmanager
def own_rng(seed: int | None = None, device: torch.device | None = None) -> Iterator[None]:
    """The global torch RNG seeded with ``seed`` (None: as it is) in the block; the caller's state is put back after.

    The CPU generator always, and ``device``'s when it is a CUDA device (the
    one a job runs on; any other GPU's generator is not saved).
    """
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
