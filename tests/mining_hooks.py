"""Test-only ways to interrupt a mining job (tests/test_resume.py); the product code has no hooks for them.

- ``FailAfterImages``: a ``MineShardDoFn`` whose worker process, once its
  committed shards hold ``limit`` images, fails before starting its next
  shard. A test swaps it in for the DoFn the pipeline builds
  (``monkeypatch.setattr(maskmine.pipelines.mine, "MineShardDoFn", FailAfterImages)``);
  the in-process runner runs it in the test's own process.
- ``kill_after_images``: makes this process SIGKILL itself once it has mined
  ``limit`` images (counted per batch, right after a batch's results are in the
  shard writer and the progress file), wherever its shards are at that moment.
  Run as a script it is ``maskmine`` with that kill armed, for tests that kill
  a fresh ``maskmine mine`` process:

      python tests/mining_hooks.py --kill-after-images K mine --captions ...
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Iterable

from maskmine.pipelines import stages


class FailAfterImages(stages.MineShardDoFn):
    """Fails before a shard once the shards this process committed hold ``limit`` or more images."""

    limit: int = 1  # set by the test
    written = 0  # images in the shards this process committed (in-process runner: the test's process)

    def process(self, shard: int) -> Iterable[tuple[int, int, int]]:
        cls = type(self)
        if cls.written >= cls.limit:
            raise RuntimeError(f"failing before shard {shard}: {cls.written} images committed, limit {cls.limit} (test hook)")
        for done in super().process(shard):
            cls.written += done[1]
            yield done


def kill_after_images(limit: int) -> None:
    """From now on, SIGKILL this process at the end of the batch that brings its mined images to ``limit``."""
    results, add = stages.ShardMiner._results, stages.ProgressFile.add
    state = {"mined": 0, "batch": 0, "pending": 0}

    def counted_results(self, batch):
        out = results(self, batch)
        state["batch"] = state["pending"] = len(out)  # one result per image of the batch
        return out

    def counted_add(self, result):
        add(self, result)
        state["pending"] -= 1
        if state["pending"] == 0:  # the batch's last result: all of them are in the writer and the progress file
            state["mined"] += state["batch"]
            if state["mined"] >= limit:
                os.kill(os.getpid(), signal.SIGKILL)

    stages.ShardMiner._results = counted_results
    stages.ProgressFile.add = counted_add


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--kill-after-images":
        sys.exit(__doc__)
    kill_after_images(int(sys.argv[2]))
    from maskmine.pipelines.cli import console_main

    sys.argv = ["maskmine", *sys.argv[3:]]
    console_main()
