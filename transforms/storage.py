"""Files on local disk or an object store (gs://): join, list, read, delete. Beam's FileSystems underneath.

Run folders and inputs may live on gs://, so the mining job, verify and the audit
reach them through here. Beam is imported when a helper first needs it, not by
importing this module, so code that only imports the run-folder modules (shards,
tasks) does not load Beam. Writes are atomic and have one home,
:mod:`maskmine.transforms.atomic` (local paths written there directly, remote ones
through Beam), for run-folder files too.
"""
from __future__ import annotations

import json
import os
import posixpath

__all__ = [
    "basename", "beam_filesystems", "delete", "exists", "glob", "is_remote", "join", "makedirs", "open_read",
    "parse_json", "read_bytes", "remove_empty_folder", "remove_temporaries", "sha256_of",
]


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote file (``scheme://...``) rather than a local one."""
    return "://" in str(path)


def beam_filesystems():
    """Beam's FileSystems (local paths and gs:// alike), imported on first use."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(base: str, *parts: str) -> str:
    return beam_filesystems().join(str(base), *parts)


def exists(path: str) -> bool:
    return beam_filesystems().exists(str(path))


def makedirs(path: str) -> None:
    if not beam_filesystems().exists(str(path)):
        try:
            beam_filesystems().mkdirs(str(path))
        except OSError:
            if not beam_filesystems().exists(str(path)):
                raise


def open_read(path: str):
    """A binary file object reading ``path``."""
    return beam_filesystems().open(str(path))


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (no error when nothing matches)."""
    result = beam_filesystems().match([str(pattern)])[0]
    return sorted(m.path for m in result.metadata_list)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def remove_temporaries(folder: str) -> int:
    """Delete the ``*.tmp-*`` files a killed writer left directly in ``folder``; returns how many."""
    stale = glob(join(folder, "*.tmp-*"))
    if stale:
        beam_filesystems().delete(stale)
    return len(stale)


def delete(paths: list[str]) -> None:
    paths = [str(p) for p in paths if beam_filesystems().exists(str(p))]
    if paths:
        beam_filesystems().delete(paths)


def remove_empty_folder(path: str) -> None:
    """Remove a local folder once nothing is left in it (object stores have no folders to remove)."""
    if is_remote(path):
        return
    try:
        os.rmdir(str(path))
    except OSError:  # not empty, or already gone
        pass


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open_read(path) as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def parse_json(data: bytes | str):
    """``json.loads`` for files a user or a run folder hands us: nesting too deep for Python's
    parser (a RecursionError) is a JSONDecodeError like any other malformed JSON, so callers say
    one line instead of printing a traceback."""
    try:
        return json.loads(data)
    except RecursionError:
        error = json.JSONDecodeError("nested too deeply", "", 0)
        error.args = ("JSON nested too deeply to read",)
        raise error from None
