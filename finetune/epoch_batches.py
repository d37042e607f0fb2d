"""Batches of indices for the in-memory pretraining loops: each epoch a fresh permutation, cut in order.

``pretrain-sample-clip`` and ``pretrain-sample-proposals`` hold their whole
split in memory and draw batches this way; a batch never straddles two epochs
(the last, shorter remainder of a permutation is skipped). The permutation is
drawn from ``generator`` only when the next batch needs it, so the loops'
other draws from the same generator (crops, flips) keep their order.
"""
from __future__ import annotations

from typing import Iterator

import torch


def epoch_batches(index: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch_size`` entries of ``index``, reshuffled each epoch."""
    if batch_size > index.numel():
        raise ValueError(f"batch_size {batch_size} is larger than the {index.numel()} indices")
    order, cursor = index[torch.randperm(index.numel(), generator=generator)], 0
    while True:
        if cursor + batch_size > order.numel():
            order, cursor = index[torch.randperm(index.numel(), generator=generator)], 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size
