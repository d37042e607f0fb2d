"""One job per output folder (transforms/run_lock.py): a live holder is named, a killed one's lock is taken over.

Mining's two-jobs case, end to end, is in tests/test_resume.py; here the lock
itself, and `train` and `eval` stopping at once on a folder another process holds.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from maskmine.pipelines.cli import main
from maskmine.transforms import run_lock
from maskmine.transforms.run_folder import LOCK_FILE

REPO = Path(__file__).resolve().parents[1]


def test_a_held_folder_is_refused_naming_the_holder_then_free_again(tmp_path):
    out = tmp_path / "run"
    with run_lock.holding(str(out), "mine"):
        written = json.loads((out / LOCK_FILE).read_text())
        assert written["pid"] == os.getpid() and written["host"] == socket.gethostname() and written["command"] == "mine"
        with pytest.raises(run_lock.FolderBusy) as busy:
            run_lock.acquire(str(out), "train")  # another open file description: flock refuses it, even in one process
        assert str(busy.value) == (
            f"{out} is in use by maskmine mine (pid {os.getpid()} on {socket.gethostname()}, started {written['started']}): "
            "wait for it to end, or use another output folder"
        )
    assert not (out / LOCK_FILE).exists()  # released and removed: a finished folder holds no lock file
    fd = run_lock.acquire(str(out), "train")
    assert json.loads((out / LOCK_FILE).read_text())["command"] == "train"
    run_lock.release(str(out), fd)


KILLED_HOLDER = """
import os, signal, sys
from maskmine.transforms import run_lock
run_lock.acquire(sys.argv[1], "mine")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_left_by_a_killed_job_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_HOLDER, str(out)], cwd=REPO, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    left = json.loads((out / LOCK_FILE).read_text())  # its name is still written, but the kernel dropped its lock
    assert left["command"] == "mine" and left["pid"] != os.getpid()
    with caplog.at_level("INFO", logger="maskmine.transforms.run_lock"):
        fd = run_lock.acquire(str(out), "mine")
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"pid {left['pid']} on {left['host']}" in caplog.text and "ended without releasing it" in caplog.text
    run_lock.release(str(out), fd)


def test_remote_folders_are_not_locked_and_say_so(caplog):
    with caplog.at_level("WARNING", logger="maskmine.transforms.run_lock"):
        assert run_lock.acquire("gs://bucket/run", "mine") is None
    assert "gs://bucket/run is not locked" in caplog.text


@pytest.mark.parametrize("command", [
    ["train", "--shards", "x/pairs-000000.tar", "--clip-model", "maskmine-tiny", "--clip-pretrained", "none",
     "--steps", "1", "--workers", "0", "--no-progress"],
    ["eval", "--dataset", "sample", "--root", "nowhere", "--proposals", "coco-gt", "--clip-model", "maskmine-tiny",
     "--clip-pretrained", "none", "--no-progress"],
])
def test_train_and_eval_stop_at_once_on_a_held_out_folder(tmp_path, capsys, command):
    out = tmp_path / "out"
    with run_lock.holding(str(out), "mine"):
        assert main([*command, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"maskmine {command[0]}: error: {out} is in use by maskmine mine (pid {os.getpid()} on ")
    assert not out.exists()  # the refused command wrote nothing; the holder created the folder and removed it


def test_a_folder_the_lock_created_is_removed_when_nothing_was_written(tmp_path):
    out = tmp_path / "a" / "run"
    with run_lock.holding(str(out), "mine"):
        assert (out / LOCK_FILE).is_file()
    assert not (tmp_path / "a").exists()  # a command refused before any work leaves no folder behind
    with run_lock.holding(str(out), "mine"):
        (out / "run.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
