"""A job borrows torch's thread count and global RNG and gives them back (transforms/torch_state.py, issue 22)."""
from __future__ import annotations

import torch

from maskmine.transforms.torch_state import own_rng, torch_threads


def test_thread_count_is_set_in_the_block_and_put_back_after():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other) as inside:
        assert inside == torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads(None) as inside:  # None: left as it is
        assert inside == before
    try:
        with torch_threads(other):
            raise RuntimeError("the job failed")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before  # also when the job fails


def test_seeded_block_draws_the_same_and_leaves_the_callers_stream_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with own_rng(7):
        a = torch.rand(4)
    with own_rng(7):
        b = torch.rand(4)
    assert torch.equal(a, b)  # seeded: the same draws every time
    torch.manual_seed(7)
    assert torch.equal(torch.rand(4), a)  # the same as a plain torch.manual_seed(7)
    torch.manual_seed(123)
    with own_rng(7):
        torch.rand(100)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream continues as if nothing ran
