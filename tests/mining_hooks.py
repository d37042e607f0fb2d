"""Test-only ways to interrupt a maskmine command (tests/test_resume.py, tests/test_endings.py); the product code has no hooks for them.

- ``FailAfterImages``: a ``MineShardDoFn`` whose worker process, once its
  committed shards hold ``limit`` images, fails before starting its next
  shard. A test swaps it in for the DoFn the pipeline builds
  (``monkeypatch.setattr(maskmine.pipelines.mine, "MineShardDoFn", FailAfterImages)``);
  the in-process runner runs it in the test's own process.
- ``after_images``: runs an action once this process has mined ``limit``
  images (counted per CLIP unit, one image on CPU, right after a unit's
  results are in the shard writer and the progress file, in the worker's own
  thread while its stage threads run on), wherever its shards are at that moment:
  ``kill_after_images`` sends this process SIGKILL (or another signal),
  ``wait_after_images`` writes ``FILE.reached`` and waits until ``FILE`` exists
  (a job held alive mid-run for as long as a test needs).
- ``signal_at``: sends this process a signal when ``module:attribute`` (a
  function or method) is called for the N-th time: any command, interrupted
  at a chosen point.

Run as a script it is ``maskmine`` with the hooks armed, for tests that stop
a fresh ``maskmine`` process:

    python tests/mining_hooks.py --kill-after-images K [--signal SIGTERM] mine --captions ...
    python tests/mining_hooks.py --wait-after-images K FILE mine --captions ...
    python tests/mining_hooks.py --signal-at maskmine.finetune.train:Trainer.save 1 SIGTERM train ...
"""
from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from maskmine.pipelines import mine_dofn
from maskmine.transforms.progress_files import ProgressFile
from maskmine.transforms.shard_mining import ShardMiner


class FailAfterImages(mine_dofn.MineShardDoFn):
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


def after_images(limit: int, action: Callable[[], None]) -> None:
    """From now on, run ``action`` (once) at the end of the unit that brings this process's mined images to ``limit``."""
    results, add = ShardMiner._results, ProgressFile.add
    state = {"mined": 0, "batch": 0, "pending": 0, "done": False}

    def counted_results(self, unit):
        out = results(self, unit)
        state["batch"] = state["pending"] = len(out)  # one result per image of the unit
        return out

    def counted_add(self, result):
        add(self, result)
        state["pending"] -= 1
        if state["pending"] == 0:  # the unit's last result: all of them are in the writer and the progress file
            state["mined"] += state["batch"]
            if state["mined"] >= limit and not state["done"]:
                state["done"] = True
                action()

    ShardMiner._results = counted_results
    ProgressFile.add = counted_add


def kill_after_images(limit: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` (SIGKILL) to this process once it has mined ``limit`` images."""
    after_images(limit, lambda: os.kill(os.getpid(), signum))


def wait_after_images(limit: int, gate: str) -> None:
    """Once ``limit`` images are mined, write ``gate + '.reached'`` and wait until ``gate`` exists."""

    def wait() -> None:
        Path(gate + ".reached").write_text(str(os.getpid()))
        while not Path(gate).exists():
            time.sleep(0.05)

    after_images(limit, wait)


def signal_at(target: str, calls: int, signum: int) -> None:
    """Send ``signum`` to this process at the ``calls``-th call of ``target`` ("module:Class.method" or "module:function")."""
    module_name, _, attr_path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    count = {"n": 0}

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def main(argv: list[str]) -> None:
    """Arm the hooks the leading options name, then run ``maskmine`` with the rest."""
    args = list(argv)
    if not args or not args[0].startswith("--"):
        sys.exit(__doc__)
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option == "--kill-after-images":
            limit, signum = int(args.pop(0)), signal.SIGKILL
            if args[:1] == ["--signal"]:
                signum = signal.Signals[args[1]]
                del args[:2]
            kill_after_images(limit, signum)
        elif option == "--wait-after-images":
            wait_after_images(int(args.pop(0)), args.pop(0))
        elif option == "--signal-at":
            signal_at(args.pop(0), int(args.pop(0)), signal.Signals[args.pop(0)])
        else:
            sys.exit(f"unknown hook {option}\n{__doc__}")
    from maskmine.pipelines.cli import console_main

    sys.argv = ["maskmine", *args]
    console_main()


if __name__ == "__main__":
    main(sys.argv[1:])
