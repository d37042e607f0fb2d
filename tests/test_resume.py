"""A killed mining job, rerun with the same --out, ends identical to an uninterrupted run.

A shard is a task, committed as soon as its own images are done: a job
killed after its first shard keeps that shard, and a job killed at any point
loses only the shards in flight. Interruptions covered: the worker raises
after its first shard (``mining_hooks.FailAfterImages``, in process), and
`maskmine mine` subprocesses SIGKILLed from inside a worker after K mined
images (``tests/mining_hooks.py --kill-after-images K``), right after the first
shard and at a random K. Every run compared byte for byte is made under the same
conditions: the same process (in-process test) or fresh processes, with
--torch-threads 1.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from maskmine.pipelines import mine as mine_module
from maskmine.pipelines.mine import MineConfig, progress_counts, run_mining
from maskmine.pipelines.verify import verify_run
from maskmine.transforms.shards import shard_of
from mining_helpers import coco_mini_config, mine_command
from mining_hooks import FailAfterImages

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "mining_hooks.py"
SHARDS = 4
LIMIT = 32
ARGS = ("--labels", "categories", "--num-shards", str(SHARDS), "--limit", str(LIMIT), "--batch-size", "4")


def config(coco_mini: Path, out: Path) -> MineConfig:
    return coco_mini_config(
        coco_mini, out,
        labels="categories",  # resume does not depend on the labels; this skips NLTK and is faster
        num_shards=SHARDS,
        limit=LIMIT,
        batch_size=4,
        torch_threads=1,
    )


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


def manifests(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "manifest").glob("pairs-*.json")) if (out / "manifest").is_dir() else []


def mine(coco_mini: Path, out: Path, kill_after: int | None = None) -> subprocess.CompletedProcess:
    """`maskmine mine` in a fresh process; with ``kill_after``, one that SIGKILLs itself after that many mined images."""
    cmd = mine_command(coco_mini, out, *ARGS)
    if kill_after is not None:
        assert cmd[1:3] == ["-m", "maskmine.pipelines.cli"]
        cmd[1:3] = [str(HOOKS), "--kill-after-images", str(kill_after)]
    return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(coco_mini, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("resume") / "whole"
    done = mine(coco_mini, out)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards"] == SHARDS and stats["images_read"] == LIMIT
    return out, stats


def assert_same_run(run: Path, whole: Path, stats: dict) -> None:
    assert digests(run) == digests(whole) and len(digests(run)) == SHARDS
    table = pd.read_parquet(run / "parquet")
    assert table.equals(pd.read_parquet(whole / "parquet"))
    assert table["key"].is_unique and len(table) == stats["pairs"]
    assert verify_run(str(run)).ok
    assert sorted(p.name for p in run.rglob("*.tmp-*")) == []  # the rerun cleared what the kill left


def test_writer_failure_then_resume(coco_mini, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    stats = run_mining(config(coco_mini, whole), progress=False)  # the same process as the runs it is compared with
    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # the worker fails before its next shard once it has committed 1 image
        patch.setattr(FailAfterImages, "limit", 1)
        patch.setattr(FailAfterImages, "written", 0)
        patch.setattr(mine_module, "MineShardDoFn", FailAfterImages)
        with pytest.raises(Exception, match="test hook"):
            run_mining(config(coco_mini, run), progress=False)
    done = manifests(run)
    assert len(done) == 1  # the first shard was committed, then the job failed
    assert not (run / "stats.json").exists()
    again = run_mining(config(coco_mini, run), progress=False)
    assert again["shards_resumed"] == 1
    assert {k: again[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")} == {
        k: stats[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")
    }
    assert_same_run(run, whole, stats)


def shard_sizes(coco_mini: Path) -> list[int]:
    captions = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    ids = sorted({a["image_id"] for a in captions["annotations"]})[:LIMIT]
    sizes = [0] * SHARDS
    for i in ids:
        sizes[shard_of(i, SHARDS)] += 1
    return sizes


def killed_then_resumed(coco_mini: Path, run: Path, kill_after: int) -> list[str]:
    """Mine with a worker that SIGKILLs its process after ``kill_after`` images; return the shards it committed."""
    killed = mine(coco_mini, run, kill_after=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (run / "stats.json").exists()
    return manifests(run)


def test_first_shard_is_committed_while_the_job_runs(uninterrupted, coco_mini, tmp_path):
    whole, stats = uninterrupted
    sizes = shard_sizes(coco_mini)
    run = tmp_path / "run"
    # One in-process worker mines shard after shard. Killed once it has mined more images than the
    # largest shard holds, it has finished its first shard and is inside another one.
    kept = killed_then_resumed(coco_mini, run, max(sizes) + 1)
    assert 1 <= len(kept) < SHARDS
    # The kept shards are final, byte for byte those of the uninterrupted run, and the shard in
    # flight was being streamed to a temporary file when the kill came.
    for name in kept:
        tar = name.replace(".json", ".tar")
        assert digests(run)[tar] == digests(whole)[tar]
    assert list(run.glob("pairs-*.tar.tmp-*"))
    # and the progress bar's source shows it under way: images and pairs done so far, per shard in flight
    in_flight = progress_counts(str(run), {s: "" for s in range(SHARDS) if f"pairs-{s:06d}.json" not in kept}, dict(enumerate(sizes)))
    assert 0 < in_flight[0] < LIMIT and in_flight[1] > 0
    committed_now = {int(n[6:12]): "" for n in kept}
    seen: dict[int, int] = {}  # what a watcher carries between calls: each committed manifest read once
    done = progress_counts(str(run), committed_now, dict(enumerate(sizes)), seen)
    assert done[0] == sum(sizes[int(n[6:12])] for n in kept) and sorted(seen) == sorted(committed_now)
    assert progress_counts(str(run), committed_now, dict(enumerate(sizes))) == done  # with or without the memory
    # a shard whose manifest still has the tar digest it had at the start is a retry not yet rewritten
    old = {s: json.loads((run / "manifest" / f"pairs-{s:06d}.json").read_text())["tar_sha256"] for s in committed_now}
    assert progress_counts(str(run), old, dict(enumerate(sizes)))[0] == 0
    again = json.loads(mine(coco_mini, run).stdout)
    assert again["shards_resumed"] == len(kept) and again["pairs"] == stats["pairs"]
    assert_same_run(run, whole, stats)


def test_sigkill_at_a_random_point_then_resume(uninterrupted, coco_mini, tmp_path):
    whole, stats = uninterrupted
    seed = random.randrange(2**32)
    kill_after = random.Random(seed).randint(1, LIMIT - 1)
    run = tmp_path / "run"
    kept = killed_then_resumed(coco_mini, run, kill_after)
    assert len(kept) < SHARDS, f"seed {seed}, kill after {kill_after} images"
    again = mine(coco_mini, run)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert json.loads(again.stdout)["shards_resumed"] == len(kept)
    assert_same_run(run, whole, stats)


def test_multi_process_runner_gives_the_same_shards(uninterrupted, coco_mini, tmp_path):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    done = subprocess.run(
        mine_command(coco_mini, run, *ARGS, "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                     "--direct_num_workers", "2"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout)["images_read"] == LIMIT
    # the shards were spread over both worker processes (each logs the shards it committed)
    committed = re.findall(r"shard (\d+) committed: .* \(worker pid (\d+)\)", done.stderr.decode())
    assert sorted(int(s) for s, _ in committed) == list(range(SHARDS))
    assert len({pid for _, pid in committed}) == 2
    assert_same_run(run, whole, stats)
