"""A killed mining job, rerun with the same --out, ends identical to an uninterrupted run.

A shard is a task, committed as soon as its own images are done: a job
killed after its first shard keeps that shard, and a job killed at any point
loses only the shards in flight. Interruptions covered: the worker raises
after its first shard (``mining_hooks.FailAfterImages``, in process), and
`maskmine mine` subprocesses SIGKILLed from inside a worker after K mined
images (``tests/mining_hooks.py --kill-after-images K``), right after the first
shard and at a random K; SIGINT and SIGTERM (one line, status 130/143, in
process and to the driver of worker processes); a full disk (one line); and a
second job on the same --out, which stops at once while the first one finishes.
Every run compared byte for byte is made under the same
conditions: the same process (in-process test) or fresh processes, with
--torch-threads 1. A finished run holds no working files (tasks/, progress/,
temporary files, the lock), however it was interrupted on the way.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from maskmine.pipelines import mine as mine_module
from maskmine.pipelines.mine import MineConfig, progress_counts, run_mining
from maskmine.transforms.verify_run import verify_run
from maskmine.transforms.run_folder import LOCK_FILE
from maskmine.transforms.shards import shard_of
from mining_helpers import coco_mini_config, mine_command
from mining_hooks import FailAfterImages

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "mining_hooks.py"
SHARDS = 4
LIMIT = 12  # every committed image (coco_cc_by)
ARGS = ("--labels", "categories", "--num-shards", str(SHARDS), "--limit", str(LIMIT), "--batch-size", "4")


def config(coco_cc_by: Path, out: Path) -> MineConfig:
    return coco_mini_config(
        coco_cc_by, out,
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


def hooked(cmd: list[str], *hooks: str) -> list[str]:
    """``cmd`` (a `maskmine` command line) run through tests/mining_hooks.py with ``hooks`` armed."""
    assert cmd[1:3] == ["-m", "maskmine.pipelines.cli"]
    return [cmd[0], str(HOOKS), *hooks, *cmd[3:]]


def mine(coco_cc_by: Path, out: Path, kill_after: int | None = None, *extra: str, signal_name: str = "SIGKILL") -> subprocess.CompletedProcess:
    """`maskmine mine` in a fresh process; with ``kill_after``, one that sends itself ``signal_name`` after that many mined images."""
    cmd = mine_command(coco_cc_by, out, *ARGS, *extra)
    if kill_after is not None:
        cmd = hooked(cmd, "--kill-after-images", str(kill_after), "--signal", signal_name)
    return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(coco_cc_by, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("resume") / "whole"
    done = mine(coco_cc_by, out)
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
    # a finished run holds its results only: no tasks, progress files or lock, whatever happened on the way
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in whole.iterdir()) == sorted([
        "README.md", "manifest", *digests(whole), "parquet", "rejects.jsonl", "run.json", "sizes.json", "stats.json",
        "vocabulary.json",
    ])


def test_writer_failure_then_resume(coco_cc_by, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    stats = run_mining(config(coco_cc_by, whole), progress=False)  # the same process as the runs it is compared with
    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # the worker fails before its next shard once it has committed 1 image
        patch.setattr(FailAfterImages, "limit", 1)
        patch.setattr(FailAfterImages, "written", 0)
        patch.setattr(mine_module, "MineShardDoFn", FailAfterImages)
        with pytest.raises(Exception, match="test hook"):
            run_mining(config(coco_cc_by, run), progress=False)
    done = manifests(run)
    assert len(done) == 1  # the first shard was committed, then the job failed
    assert not (run / "stats.json").exists()
    again = run_mining(config(coco_cc_by, run), progress=False)
    assert again["shards_resumed"] == 1
    assert {k: again[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")} == {
        k: stats[k] for k in ("images_read", "images_mined", "pairs", "unique_nouns")
    }
    assert_same_run(run, whole, stats)


def shard_sizes(coco_cc_by: Path) -> list[int]:
    captions = json.loads((coco_cc_by / "annotations" / "captions_train2017.json").read_text())
    ids = sorted({a["image_id"] for a in captions["annotations"]})[:LIMIT]
    sizes = [0] * SHARDS
    for i in ids:
        sizes[shard_of(i, SHARDS)] += 1
    return sizes


def killed_then_resumed(coco_cc_by: Path, run: Path, kill_after: int) -> list[str]:
    """Mine with a worker that SIGKILLs its process after ``kill_after`` images; return the shards it committed."""
    killed = mine(coco_cc_by, run, kill_after=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (run / "stats.json").exists()
    assert (run / LOCK_FILE).is_file()  # the killed job's lock file: the rerun takes it over
    return manifests(run)


def test_first_shard_is_committed_while_the_job_runs(uninterrupted, coco_cc_by, tmp_path):
    whole, stats = uninterrupted
    sizes = shard_sizes(coco_cc_by)
    run = tmp_path / "run"
    # One in-process worker mines shard after shard. Killed once it has mined more images than the
    # largest shard holds, it has finished its first shard and is inside another one.
    kept = killed_then_resumed(coco_cc_by, run, max(sizes) + 1)
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
    again = json.loads(mine(coco_cc_by, run).stdout)
    assert again["shards_resumed"] == len(kept) and again["pairs"] == stats["pairs"]
    assert_same_run(run, whole, stats)


def test_sigkill_at_a_random_point_then_resume(uninterrupted, coco_cc_by, tmp_path):
    whole, stats = uninterrupted
    seed = random.randrange(2**32)
    kill_after = random.Random(seed).randint(1, LIMIT - 1)
    run = tmp_path / "run"
    kept = killed_then_resumed(coco_cc_by, run, kill_after)
    assert len(kept) < SHARDS, f"seed {seed}, kill after {kill_after} images"
    again = mine(coco_cc_by, run)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert json.loads(again.stdout)["shards_resumed"] == len(kept)
    assert_same_run(run, whole, stats)


def test_multi_process_runner_gives_the_same_shards(uninterrupted, coco_cc_by, tmp_path):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    done = subprocess.run(
        mine_command(coco_cc_by, run, *ARGS, "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
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


def interrupted_line(command: str, sig: signal.Signals) -> str:
    return f"maskmine {command}: interrupted ({sig.name}); rerun the same command to resume"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_mine_with_one_line_and_the_rerun_resumes(uninterrupted, coco_cc_by, tmp_path, sig):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    stopped = mine(coco_cc_by, run, max(shard_sizes(coco_cc_by)) + 1, signal_name=sig.name)  # inside the second shard
    err = stopped.stderr.decode()
    assert stopped.returncode == 128 + sig, err[-3000:]
    assert err.strip().splitlines()[-1] == interrupted_line("mine", sig)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    kept = manifests(run)
    assert 1 <= len(kept) < SHARDS and not (run / LOCK_FILE).exists()  # a clean stop releases its lock
    again = mine(coco_cc_by, run)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert json.loads(again.stdout)["shards_resumed"] == len(kept)
    assert_same_run(run, whole, stats)


@pytest.mark.slow  # worker processes start slowly: about a minute on 2 cores
def test_sigterm_to_the_driver_of_worker_processes_stops_them_and_the_rerun_resumes(uninterrupted, coco_cc_by, tmp_path):
    whole, stats = uninterrupted
    run = tmp_path / "run"
    cmd = mine_command(coco_cc_by, run, *ARGS, "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                       "--direct_num_workers", "2")
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not manifests(run) and driver.poll() is None:
            time.sleep(0.05)
        driver.send_signal(signal.SIGTERM)  # the driver alone, as a batch system stops a job
        _, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    err = err.decode()
    assert driver.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == interrupted_line("mine", signal.SIGTERM)
    assert "Traceback" not in err
    assert len(manifests(run)) < SHARDS
    workers = [int(pid) for _, pid in re.findall(r"shard (\d+) committed: .* \(worker pid (\d+)\)", err)]
    for pid in workers:  # the worker processes ended with their driver
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    again = mine(coco_cc_by, run)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert_same_run(run, whole, stats)


def test_a_second_mine_on_a_live_run_folder_stops_at_once_and_the_first_finishes(uninterrupted, coco_cc_by, tmp_path):
    whole, stats = uninterrupted
    run, gate = tmp_path / "run", tmp_path / "go"
    first = subprocess.Popen(hooked(mine_command(coco_cc_by, run, *ARGS), "--wait-after-images", "1", str(gate)),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not Path(f"{gate}.reached").exists():  # the first job is mid-run, held there
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        second = mine(coco_cc_by, run)
        gate.touch()
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 2
    line = second.stderr.decode().strip().splitlines()[-1]
    assert re.fullmatch(
        rf"maskmine mine: error: {re.escape(str(run))} is in use by maskmine mine \(pid {first.pid} on "
        rf"{re.escape(socket.gethostname())}, started [0-9T:+-]+\): wait for it to end, or use another output folder",
        line,
    ), line
    assert "Traceback" not in second.stderr.decode()
    assert first.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["shards_resumed"] == 0
    assert_same_run(run, whole, stats)


def test_a_full_disk_is_one_line_and_the_rerun_resumes(uninterrupted, coco_cc_by, small_disk):
    whole, stats = uninterrupted
    run = small_disk / "run"
    full = mine(coco_cc_by, run)
    err = full.stderr.decode()
    assert full.returncode == 1, err[-3000:]
    line = err.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"maskmine mine: error: disk full writing {re.escape(str(run))}/(\S+) \(([0-9.]+) (bytes|kB|MB) written\); "
        "free space and rerun the same command to resume",
        line,
    )
    assert match, line
    assert "Traceback" not in err
    assert sorted(p.name for p in run.rglob("*.tmp-*")) == []  # the failed write took its temporary file away
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    again = mine(coco_cc_by, run)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert_same_run(run, whole, stats)
