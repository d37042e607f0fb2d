"""``OUT/progress/``: how far each shard in flight has got, for the driver's progress bar.

Workers write them (any runner that shares ``--out`` with the driver), the
driver reads them; a shard's file goes once its manifest is committed.
"""
from __future__ import annotations

import json
import time

from maskmine.transforms import storage, run_folder
from maskmine.transforms.atomic import atomic_write
from maskmine.transforms.records import ImageResult


class ProgressFile:
    """``OUT/progress/pairs-NNNNNN.json``: images and pairs done in a shard in flight, rewritten at most once a second.

    The driver's progress bar sums these files (and the manifests of finished
    shards), so it advances per batch on any runner that shares ``--out``.
    """

    def __init__(self, out: str, shard: int, total: int, interval: float = 1.0) -> None:
        self.path = storage.join(out, run_folder.progress_name(shard))
        self.total = total
        self.images = 0
        self.pairs = 0
        self.interval = interval
        self._last = 0.0
        storage.makedirs(storage.join(out, run_folder.PROGRESS_DIR))

    def add(self, result: ImageResult) -> None:
        self.images += 1
        self.pairs += len(result.pairs)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            body = {"images": self.images, "pairs": self.pairs, "total": self.total}
            atomic_write(self.path, json.dumps(body))

    def remove(self) -> None:
        storage.delete([self.path])


def read_progress(out: str) -> dict[int, dict]:
    """Progress files of the shards in flight: shard -> {"images", "pairs", "total"}."""
    found = {}
    for path in storage.glob(storage.join(out, run_folder.PROGRESS_GLOB)):
        try:
            body = json.loads(storage.read_bytes(path))
        except (OSError, ValueError):  # renamed away between glob and read
            continue
        found[run_folder.shard_from_name(storage.basename(path), run_folder.PROGRESS_SUFFIX)] = body
    return found
