"""Batches of mining items for the model stages: at most ``--batch-size`` items and ``--max-batch-bytes`` bytes.

Batches are cut from the shard's images in order, by a rule that looks only at
the items themselves, so every runner and every rerun cuts the same batches.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

from maskmine.transforms.records import MiningItem


class BatchWeight:
    """An item's share of a batch: at most ``max_items`` items and ``max_bytes`` bytes a batch.

    :func:`split_batches` (like Beam's ``BatchElements`` with this as its
    ``element_size_fn``) caps the sum of the weights of a batch at
    ``max_items``. A weight of
    ``max(1, ceil(bytes * max_items / max_bytes))`` keeps both the item count
    and the bytes (decoded image plus proposal masks) under their caps; an
    item larger than the byte budget travels alone.
    """

    def __init__(self, max_items: int, max_bytes: int | None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes

    def __call__(self, item: MiningItem) -> int:
        if not self.max_bytes:
            return 1
        return max(1, math.ceil(item_nbytes(item) * self.max_items / self.max_bytes))


def item_nbytes(item: MiningItem) -> int:
    """Bytes of the arrays an item carries between stages (decoded image, proposal masks)."""
    total = 0 if item.image is None else int(item.image.nbytes)
    if item.proposals is not None:
        total += int(item.proposals.masks.nbytes) + int(item.proposals.scores.nbytes)
    return total


def split_batches(items: Iterable[MiningItem], weight: BatchWeight) -> Iterator[list[MiningItem]]:
    """Consecutive batches, in order, each at most ``weight.max_items`` slots of live items.

    Skipped items ride along for free (they reach no model); a live item
    heavier than the whole budget travels alone.
    """
    batch: list[MiningItem] = []
    used = 0
    for item in items:
        w = 0 if item.skipped else weight(item)
        if used and used + w > weight.max_items:
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += w
        if used >= weight.max_items:
            yield batch
            batch, used = [], 0
    if batch:
        yield batch
