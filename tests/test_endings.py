"""How commands end when they cannot finish (pipelines/endings.py): SIGINT/SIGTERM and a full disk, each one line.

Mining's cases, with the resumed run compared byte for byte, are in
tests/test_resume.py. Here: `train` (with DataLoader worker processes),
`audit` and `verify` stopped by a signal at a chosen point
(tests/mining_hooks.py --signal-at), and the atomic writers on a real full
file system (a 1 MB tmpfs; skipped where it cannot be mounted).
"""
from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from maskmine.pipelines import endings
from maskmine.pipelines.mine import run_mining
from maskmine.transforms.atomic import AtomicWriter, atomic_torch_save, atomic_write
from maskmine.transforms.errors import DiskFull
from mining_helpers import coco_mini_config

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "mining_hooks.py"


def maskmine(*argv: str, signal_at: tuple[str, int, signal.Signals] | None = None) -> subprocess.CompletedProcess:
    """`maskmine ARGV` in a fresh process; ``signal_at`` = (target, N, signal): the signal comes at the N-th call of target."""
    cmd = [sys.executable, "-m", "maskmine.pipelines.cli", *argv]
    if signal_at is not None:
        target, calls, sig = signal_at
        cmd = [sys.executable, str(HOOKS), "--signal-at", target, str(calls), sig.name, *argv]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=600)


def assert_interrupted(done: subprocess.CompletedProcess, command: str, sig: signal.Signals, hint: str) -> None:
    err = done.stderr.decode()
    assert done.returncode == 128 + sig, err[-3000:]
    assert err.strip().splitlines()[-1] == f"maskmine {command}: interrupted ({sig.name}); {hint}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


@pytest.fixture(scope="module")
def run_dir(coco_cc_by, tmp_path_factory) -> Path:
    """Ground-truth category pairs of the 12 committed COCO images in 2 shards."""
    out = tmp_path_factory.mktemp("endings") / "run"
    run_mining(coco_mini_config(coco_cc_by, out, labels="categories", num_shards=2, limit=12), progress=False)
    return out


TRAIN = ("--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--mode", "prompt", "--batch-size", "8",
         "--steps", "4", "--warmup-steps", "1", "--save-every", "1", "--no-progress")


def test_train_stopped_by_a_signal_says_so_and_resumes(run_dir, tmp_path):
    """SIGTERM, as a batch system stops a job, with DataLoader worker processes running."""
    out, sig = tmp_path / "train", signal.SIGTERM
    argv = ("train", "--shards", str(run_dir / "pairs-{000000..000001}.tar"), "--out", str(out), "--workers", "2", *TRAIN)
    stopped = maskmine(*argv, signal_at=("maskmine.finetune.train:Trainer.step", 3, sig))
    assert_interrupted(stopped, "train", sig, "rerun it with --resume to continue from the newest checkpoint")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000001", "step-00000002"]
    assert not (out / ".maskmine.lock").exists()
    again = maskmine(*argv, "--resume")
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    summary = json.loads(again.stdout)
    assert summary["step"] == 4 and summary["finished"]
    assert "resuming" in again.stderr.decode() and "from step 2" in again.stderr.decode()


def test_audit_stopped_by_sigterm_says_so_and_a_rerun_writes_the_report(run_dir, tmp_path):
    argv = ("audit", str(run_dir), "--out", str(tmp_path / "report"), "--no-progress")
    stopped = maskmine(*argv, signal_at=("maskmine.transforms.audit.plots:histogram", 1, signal.SIGTERM))
    assert_interrupted(stopped, "audit", signal.SIGTERM, "rerun the same command")
    again = maskmine(*argv)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert (tmp_path / "report" / "index.html").is_file()


def test_verify_stopped_by_sigint_says_so(run_dir):
    stopped = maskmine("verify", str(run_dir), signal_at=("maskmine.transforms.verify_run:check_shard", 1, signal.SIGINT))
    assert_interrupted(stopped, "verify", signal.SIGINT, "rerun the same command")


def test_a_streamed_write_to_a_full_disk_names_the_file_and_the_bytes_written(small_disk):
    path = small_disk / "pairs-000003.tar"
    writer = AtomicWriter(path)
    with pytest.raises(DiskFull) as full, writer:
        for _ in range(40):
            writer.write(b"x" * 65536)
        writer.commit()
    assert full.value.errno == errno.ENOSPC and full.value.path == str(path)
    written = full.value.written  # counted by the writer: the whole writes before the one that failed
    assert 0 < written <= 1 << 20 and written % 65536 == 0
    assert str(full.value) == f"disk full writing {path} ({written / 1e6:.1f} MB written)"
    assert list(small_disk.iterdir()) == []  # no temporary file left behind


def test_whole_file_writes_to_a_full_disk_are_disk_full_too(small_disk):
    with pytest.raises(DiskFull, match=rf"^disk full writing {re.escape(str(small_disk / 'stats.json'))} \("):
        atomic_write(small_disk / "stats.json", b"x" * 2_000_000)
    import torch

    with pytest.raises(DiskFull, match=rf"^disk full writing {re.escape(str(small_disk / 'model.pt'))}"):
        atomic_torch_save({"w": torch.zeros(500_000)}, small_disk / "model.pt")  # torch's writer has no errno
    assert list(small_disk.iterdir()) == []


def test_a_full_disk_is_found_however_it_reached_the_driver():
    full = DiskFull("runs/x/pairs-000003.tar", 12_345_678)
    assert endings.disk_full_message(full) == "disk full writing runs/x/pairs-000003.tar (12.3 MB written)"
    try:  # Beam's in-process runner re-raises a copy with its step's name, the original as its context
        try:
            raise full
        except DiskFull as exc:
            raise RuntimeError(f"DiskFull: {exc} [while running 'MineShard']") from None
    except RuntimeError as wrapped:
        wrapped.__context__ = full
        assert endings.disk_full_message(wrapped) == str(full)
    # a worker process's error comes back as the text of its traceback
    text = RuntimeError("Pipeline failed\nTraceback (most recent call last):\n  ...\nmaskmine.transforms.errors."
                        "DiskFull: disk full writing runs/x/pairs-000003.tar (12.3 MB written) [while running 'MineShard']\n")
    assert endings.disk_full_message(text) == str(full)
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "runs/x/stats.json")
    assert endings.disk_full_message(quota) == "disk full writing runs/x/stats.json"
    assert endings.disk_full_message(RuntimeError("something else")) is None
    assert endings.ending("mine", full, "rerun the same command to resume") == (
        "maskmine mine: error: disk full writing runs/x/pairs-000003.tar (12.3 MB written); "
        "free space and rerun the same command to resume",
        endings.DISK_FULL_STATUS,
    )
