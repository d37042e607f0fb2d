"""How a command ends when it cannot finish: SIGINT/SIGTERM, or a full disk, said in one line.

``console_main`` installs :func:`install_signal_handlers`: the first SIGINT or
SIGTERM is recorded and raised as ``KeyboardInterrupt`` in the main thread, so
the command unwinds as it does on Ctrl-C (``finally`` blocks run, atomic
writers delete their temporary files, the run-folder lock is released, Beam
stops its workers, the DataLoader its processes). Whatever exception then
reaches ``console_main`` (Beam wraps it as ``RuntimeError: KeyboardInterrupt
[while running 'MineShard']``), the recorded signal decides the ending:
``maskmine CMD: interrupted (SIGTERM); <how to resume>`` and status 128 +
signal number (130 for SIGINT, 143 for SIGTERM). A second signal during the
unwinding ends the process at once with the same line and status.

A full disk (ENOSPC or EDQUOT, as :class:`~maskmine.transforms.errors.DiskFull`
from the atomic writers, a plain ``OSError`` elsewhere, or the text of either
in an error a Beam worker process sent back) is ``maskmine CMD: error: disk
full writing PATH (N MB written); free space and <how to resume>``, status
:data:`DISK_FULL_STATUS`. While a command stops this way, the tracebacks Beam
logs on its way out are dropped (:class:`QuietStop`): the line is the message.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from maskmine.transforms.errors import DiskFull, is_disk_full

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DISK_FULL_STATUS = 1
_received: list[int] = []
_command: list[str] = []  # the command and its resume hint, for the second signal's line
_forwarding: list[bool] = []  # non-empty while signals_to_children() is in force
# The line of a DiskFull as it reads in a worker's traceback text, up to Beam's step annotation.
_DISK_FULL_TEXT = re.compile(r"DiskFull: (disk full writing .*?)(?: \[while running [^\]]*\])*$", re.MULTILINE)
_ERRNO_TEXT = re.compile(r"\[Errno (?:28|122)\] [^:\n]*(?:: '([^'\n]*)')?")


def signal_status(signum: int) -> int:
    """The shell's convention: 128 + the signal's number."""
    return 128 + int(signum)


def interrupted_line(command: str, signum: int, hint: str) -> str:
    return f"maskmine {command}: interrupted ({signal.Signals(signum).name}); {hint}"


def _on_signal(signum: int, frame) -> None:
    if _received:  # already unwinding: the user insists, end now
        command, hint = _command or ("", "rerun the same command")
        print(interrupted_line(command, signum, hint), file=sys.stderr, flush=True)
        os._exit(signal_status(signum))
    _received.append(signum)
    if _forwarding:
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _children() -> list[int]:
    """This process's child processes (Linux /proc; none found elsewhere)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


@contextmanager
def signals_to_children() -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM also end this process's children, with SIGKILL.

    For Beam's worker processes (``--direct_running_mode multi_processing``):
    they then stop at once instead of finishing their bundle of shards first,
    and say nothing (a SIGTERM makes their gRPC threads print "terminate
    called without an active exception"). What they were writing stays a
    temporary file, which the rerun deletes; committed shards are whole.
    """
    _forwarding.append(True)
    try:
        yield
    finally:
        _forwarding.pop()


def install_signal_handlers(command: str, hint: str) -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (see the module docstring)."""
    _received.clear()
    _command[:] = [command, hint]
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, _on_signal)
    previous = threading.excepthook

    def quiet_threads(args) -> None:  # Beam's threads that watched the workers die as the job stops
        if not is_stopping(args.exc_value):
            previous(args)

    threading.excepthook = quiet_threads


def received_signal() -> int | None:
    return _received[0] if _received else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full_message(exc: BaseException) -> str | None:
    """The one line of a full disk somewhere in ``exc`` (its chain, or the text a worker sent back); None if none."""
    found: DiskFull | None = None
    plain: OSError | None = None
    for link in _chain(exc):
        if isinstance(link, DiskFull):
            found = link  # the innermost: Beam re-raises copies with its step's name appended
        elif is_disk_full(link) and plain is None:
            plain = link
    if found is not None:
        return found.message()
    if plain is not None:
        return f"disk full writing {plain.filename}" if plain.filename else "disk full (no space left on device)"
    text = "\n".join(str(link) for link in _chain(exc))
    match = _DISK_FULL_TEXT.search(text)
    if match:
        return match.group(1)
    match = _ERRNO_TEXT.search(text)
    if match:
        return f"disk full writing {match.group(1)}" if match.group(1) else "disk full (no space left on device)"
    return None


def is_stopping(exc: BaseException | None) -> bool:
    """Whether the command is ending by a signal or a full disk (its tracebacks are noise)."""
    return bool(_received) or (exc is not None and disk_full_message(exc) is not None)


class QuietStop(logging.Filter):
    """Drops log records that carry a traceback while the command stops by a signal or a full disk."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        return not is_stopping(record.exc_info[1])


def ending(command: str, exc: BaseException, hint: str) -> tuple[str, int] | None:
    """(line, status) for an exception that ends a command by a signal or a full disk; None for others."""
    signum = received_signal()
    if signum is not None:
        return interrupted_line(command, signum, hint), signal_status(signum)
    if isinstance(exc, KeyboardInterrupt):  # a SIGINT before the handlers were in place
        return interrupted_line(command, signal.SIGINT, hint), signal_status(signal.SIGINT)
    message = disk_full_message(exc)
    if message is not None:
        return f"maskmine {command}: error: {message}; free space and {hint}", DISK_FULL_STATUS
    return None
