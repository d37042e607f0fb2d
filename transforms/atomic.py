"""Atomic writes, the one home: bytes, text, JSON, torch objects, and files streamed in pieces.

A writer fills a temporary sibling and renames it over ``path``, so a killed
process never leaves a half-written file under a final name and readers see
the old or the new content, never a mix. On an exception the temporary file
is removed; after a SIGKILL it stays, as ``.NAME.tmp-<uuid>`` (a whole local
file) or ``NAME.tmp-<uuid>`` (streamed with :class:`AtomicWriter`, or remote): both match
``*.tmp-*``, which a mining rerun deletes in its run folder (``storage.remove_temporaries``).

A write that fails for want of space or quota (ENOSPC, EDQUOT) is raised as
:class:`~maskmine.transforms.errors.DiskFull`, naming the final path and the
bytes written, with the temporary file already removed: the CLI prints it as
one line, and a rerun resumes.

Local paths are written here with ``os.replace``; a remote path (``scheme://``,
e.g. gs://) goes through Beam's FileSystems, imported only for it, so
training, eval and the sample world never import Beam.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from maskmine.transforms.errors import DiskFull, is_disk_full
from maskmine.transforms.storage import beam_filesystems, is_remote  # Beam: imported for remote paths alone


def temporary_sibling(path: str | Path) -> Path:
    """A fresh hidden name next to ``path`` for content that will be renamed onto it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    Creates ``path``'s parent folder. Used by every helper below, and directly
    by writers that need a file name rather than bytes (``torch.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with _reporting_disk_full(path, lambda: _size_of(tmp)):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _reporting_disk_full(path: str | Path, written: Callable[[], int | None]) -> Iterator[None]:
    """An ENOSPC or EDQUOT in the block comes out as DiskFull(path, written())."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(str(path), written(), exc.errno) from exc
        raise


def _size_of(path: Path) -> int | None:
    """Bytes in a file or folder (None when it is gone): how much a failed write got down."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


def _no_space_left(folder: Path) -> bool:
    """Whether ``folder``'s file system has (next to) no space left for this user."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < (1 << 20)


@contextmanager
def replacing_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces the folder ``path``, on error it is removed.

    A folder cannot be renamed over a non-empty one, so an existing ``path`` is
    deleted just before the rename: a kill in that instant leaves no ``path``
    (and the complete temporary folder), never a mix of old and new files.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        with _reporting_disk_full(path, lambda: _size_of(tmp)):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` (local or remote) atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    if is_remote(path):
        with AtomicWriter(str(path)) as writer:
            writer.write(data)
            writer.commit()
        return
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """``json.dumps(obj, **dumps)`` written atomically as UTF-8."""
    atomic_write(path, json.dumps(obj, **dumps))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically (torch imported here, so callers of the rest need none)."""
    import torch

    with replacing(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's C++ writer reports a full disk without an errno
            if _no_space_left(tmp.parent):
                raise DiskFull(str(path), _size_of(tmp)) from exc
            raise


class AtomicWriter:
    """A file written in pieces under a temporary sibling name, renamed to ``path`` by ``commit()``.

    ``tell()`` counts the bytes written and ``sha256`` hashes them, so a
    streamed tar knows its size and checksum without being read back.
    ``abort()`` (or leaving a ``with`` block on an exception) deletes the
    temporary file; a SIGKILL leaves it behind as ``PATH.tmp-<uuid>``, which
    ``storage.remove_temporaries`` clears before a rerun. The parent folder is
    created for a local path.
    """

    def __init__(self, path: str | Path) -> None:
        import hashlib

        self.path = str(path)
        self.tmp = f"{self.path}.tmp-{uuid.uuid4().hex}"
        self.remote = is_remote(self.path)
        if self.remote:
            self._handle: BinaryIO = beam_filesystems().create(self.tmp)
        else:
            os.makedirs(os.path.dirname(self.tmp) or ".", exist_ok=True)
            self._handle = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
        with _reporting_disk_full(self.path, lambda: self._size):
            self._handle.write(data)
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        pass

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> None:
        with _reporting_disk_full(self.path, lambda: self._size):
            self._handle.close()  # flushes what is buffered: the last place a full disk shows
        if not self.remote:
            os.replace(self.tmp, self.path)
            return
        fs = beam_filesystems()
        if fs.exists(self.path):
            fs.delete([self.path])
        fs.rename([self.tmp], [self.path])

    def abort(self) -> None:
        try:
            self._handle.close()
        except OSError:  # flushing bytes that are being thrown away (a full disk): nothing to keep
            pass
        finally:
            if not self.remote:
                Path(self.tmp).unlink(missing_ok=True)
            elif beam_filesystems().exists(self.tmp):
                beam_filesystems().delete([self.tmp])

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
