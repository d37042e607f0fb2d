"""A killed mining job, rerun with the same --out, ends identical to an uninterrupted run.

Two interruptions: the writer fails after K images (test hook
MASKMINE_FAIL_AFTER_IMAGES, in process), and a `maskmine mine` subprocess
SIGKILLed from outside while some shards are complete and the rest are not.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from maskmine.pipelines import stages
from maskmine.pipelines.mine import MineConfig, run_mining
from maskmine.pipelines.verify import verify_run
from mining_helpers import coco_mini_config

REPO = Path(__file__).resolve().parents[1]
SHARDS = 4
LIMIT = 32


def config(coco_mini: Path, out: Path) -> MineConfig:
    return coco_mini_config(
        coco_mini, out,
        labels="categories",  # resume does not depend on the labels; this skips NLTK and is faster
        num_shards=SHARDS,
        limit=LIMIT,
        batch_size=4,
    )


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


def manifests(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "manifest").glob("pairs-*.json")) if (out / "manifest").is_dir() else []


@pytest.fixture(scope="module")
def uninterrupted(coco_mini, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("resume") / "whole"
    stats = run_mining(config(coco_mini, out), progress=False)
    assert stats["shards"] == SHARDS and stats["images_read"] == LIMIT
    return out, stats


def assert_same_run(run: Path, whole: Path, stats: dict) -> None:
    assert digests(run) == digests(whole) and len(digests(run)) == SHARDS
    table = pd.read_parquet(run / "parquet")
    assert table.equals(pd.read_parquet(whole / "parquet"))
    assert table["key"].is_unique and len(table) == stats["pairs"]
    assert verify_run(str(run)).ok


def test_writer_failure_then_resume(uninterrupted, coco_mini, tmp_path, monkeypatch):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    monkeypatch.setattr(stages, "_images_written", 0)
    monkeypatch.setenv(stages.FAIL_AFTER_ENV, "1")
    with pytest.raises(Exception, match="test hook"):
        run_mining(config(coco_mini, run), progress=False)
    done = manifests(run)
    assert len(done) == 1  # the first shard was written, then the job failed
    assert not (run / "stats.json").exists()
    monkeypatch.delenv(stages.FAIL_AFTER_ENV)
    again = run_mining(config(coco_mini, run), progress=False)
    assert again["shards_resumed"] == 1
    assert {k: again[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")} == {
        k: stats[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")
    }
    assert_same_run(run, whole, stats)


def test_sigkill_mid_run_then_resume(uninterrupted, coco_mini, tmp_path):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    ann = coco_mini / "annotations"
    cmd = [
        sys.executable, "-m", "maskmine.pipelines.cli", "mine", "--captions", str(ann / "captions_train2017.json"),
        "--instances", str(ann / "instances_train2017.json"), "--images", str(coco_mini / "train2017"),
        "--out", str(run), "--proposals", "coco-gt", "--labels", "categories", "--clip-model", "maskmine-tiny", "--clip-pretrained", "none",
        "--device", "cpu", "--num-shards", str(SHARDS), "--limit", str(LIMIT), "--batch-size", "4", "--no-progress",
    ]
    # The hook makes the writer block after its first shard, so the kill lands mid-run for certain.
    env = {**os.environ, stages.FAIL_AFTER_ENV: "1", stages.FAIL_MODE_ENV: "hang"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not manifests(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert manifests(run), "no shard completed in time"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(manifests(run)) == 1 and not (run / "stats.json").exists()
    again = run_mining(config(coco_mini, run), progress=False)
    assert again["shards_resumed"] == 1 and again["pairs"] == stats["pairs"]
    assert_same_run(run, whole, stats)
    leftovers = sorted(p.name for p in run.rglob("*.tmp-*"))
    assert leftovers == []  # a SIGKILL between shards leaves no half-written file behind
