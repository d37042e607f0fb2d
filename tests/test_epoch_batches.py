"""The pretraining loops' batches: disjoint within an epoch, a fresh order each epoch, seeded."""
from __future__ import annotations

import pytest
import torch

from maskmine.finetune.epoch_batches import epoch_batches


def test_batches_cover_each_epoch_once_and_skip_the_remainder():
    index = torch.tensor([3, 5, 7, 11, 13, 17, 19])
    batches = epoch_batches(index, 3, torch.Generator().manual_seed(0))
    first = [next(batches) for _ in range(2)]  # 7 indices: two batches of 3, the 7th is left over
    second = [next(batches) for _ in range(2)]
    for epoch in (first, second):
        seen = torch.cat(epoch).tolist()
        assert len(seen) == len(set(seen)) == 6 and set(seen) <= set(index.tolist())
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    again = epoch_batches(index, 3, torch.Generator().manual_seed(0))
    assert [next(again).tolist() for _ in range(4)] == [b.tolist() for b in first + second]


def test_a_batch_larger_than_the_indices_is_refused():
    with pytest.raises(ValueError, match="larger than the 2 indices"):
        next(epoch_batches(torch.arange(2), 3, torch.Generator()))
