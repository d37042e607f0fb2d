"""One job per output folder: a lock the kernel drops when its holder dies, however it dies.

``maskmine mine``, ``train`` and ``eval`` hold ``OUT/.maskmine.lock``
(:data:`~maskmine.transforms.run_folder.LOCK_FILE`) with ``flock(2)`` for as
long as they run. A second command on the same folder fails at once with one
line naming the holder (host, pid, command, start time: written inside the
file by the holder). The kernel releases a ``flock`` when the last descriptor
of it closes, so a job ended by SIGKILL, a crash or the OOM killer leaves no
lock behind: the next command takes the folder over (the file's text is only
the message, never the lock). The holder deletes the file when it ends; a
taker checks that the file it locked is still the one at the path, so a file
deleted between its ``open`` and its ``flock`` is never taken twice.

Only the command's own process holds the lock (the Beam driver, not its
workers); the descriptor is not inherited across ``exec``. Forked children
(DataLoader workers) share it and die with their parent.

What is guaranteed where:
- local file systems: exactly one holder per folder, among all processes of
  this machine;
- NFS: Linux maps ``flock`` onto NFS byte-range locks, so one holder among
  all clients when the server grants locks (NFSv4, or v3 with lockd); a
  client that dies loses its lock when the server's lease runs out (about
  90 s on NFSv4). A file system that refuses locks (``ENOLCK``,
  ``EOPNOTSUPP``) gets a warning and no lock;
- remote folders (``gs://``...): not locked (an object store has no lock that
  its holder's death releases); a warning says so, and keeping one job per
  folder is the user's part.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from maskmine.transforms.errors import UserError
from maskmine.transforms.run_folder import LOCK_FILE
from maskmine.transforms.storage import is_remote

log = logging.getLogger(__name__)
# A file system that cannot lock: the job runs unlocked, with a warning.
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class LockHolder:
    """Who holds a folder: written into the lock file for the message of a second job."""

    host: str
    pid: int
    command: str
    started: str  # local time, ISO 8601

    def __str__(self) -> str:
        return f"maskmine {self.command} (pid {self.pid} on {self.host}, started {self.started})"


class FolderBusy(UserError):
    """Another live job holds the output folder (exit status 2, like every UserError)."""


def _written_holder(fd: int) -> LockHolder | None:
    """The holder written in the lock file; None when nothing (readable) is written."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return LockHolder(str(data["host"]), int(data["pid"]), str(data["command"]), str(data["started"]))
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _read_holder(fd: int) -> LockHolder | None:
    """The live holder's name; it writes it right after it locks, so wait for it up to a second."""
    for _ in range(20):
        holder = _written_holder(fd)
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def acquire(folder: str, command: str) -> int | None:
    """Lock ``folder`` (created if needed) for ``command``; returns the descriptor to hold.

    Raises :class:`FolderBusy` naming the holder when a live job has it.
    None: not locked (a remote folder, or a file system without locks), with a warning.
    """
    if is_remote(folder):
        log.warning("%s is not locked (remote folders cannot be): make sure no other job writes to it", folder)
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = str(holder) if holder else "another maskmine job (it has not written its name yet)"
            raise FolderBusy(f"{folder} is in use by {who}: wait for it to end, or use another output folder") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_LOCKS:
                raise
            log.warning("%s cannot be locked (%s): make sure no other job writes to it", folder, exc.strerror)
            return None
        if _same_file(fd, path):  # not deleted by a holder that ended between our open and our flock
            break
        os.close(fd)
    previous = _written_holder(fd)  # what a killed job left: nobody writes it now
    if previous is not None:
        log.info("%s: taking over from %s, which ended without releasing it", folder, previous)
    holder = LockHolder(socket.gethostname(), os.getpid(), command, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    data = json.dumps(asdict(holder)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return fd


def release(folder: str, fd: int | None) -> None:
    """Delete the lock file, then let the lock go (in this order: see the module's docstring)."""
    if fd is None:
        return
    try:
        os.unlink(os.path.join(folder, LOCK_FILE))
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _missing_folders(folder: str) -> list[str]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


@contextmanager
def holding(folder: str, command: str) -> Iterator[None]:
    """Hold ``folder`` for ``command`` while the block runs (see :func:`acquire`).

    Folders the lock had to create and that are still empty at the end are
    removed: a command refused before any work leaves no output folder behind.
    """
    created = [] if is_remote(folder) else _missing_folders(folder)
    fd = acquire(folder, command)
    try:
        yield
    finally:
        release(folder, fd)
        for path in created:
            try:
                os.rmdir(path)
            except OSError:  # not empty: the command wrote its output there
                break
