"""Small file helpers over Beam's FileSystems, so outputs may live on gs:// too.

Every output file is written atomically: to a temporary name first, then
renamed, so a killed job never leaves a half-written file under a final name.
Writers of local files that must not import Beam (train, eval, the sample
world) use :mod:`maskmine.transforms.atomic` instead.
"""
from __future__ import annotations

import os
import posixpath
import uuid

from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    return FileSystems.join(str(base), *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(str(path))


def makedirs(path: str) -> None:
    if not FileSystems.exists(str(path)):
        try:
            FileSystems.mkdirs(str(path))
        except OSError:
            if not FileSystems.exists(str(path)):
                raise


def read_bytes(path: str) -> bytes:
    with FileSystems.open(str(path)) as handle:
        return handle.read()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and a rename (an :class:`AtomicWriter`)."""
    with AtomicWriter(path) as writer:
        writer.write(data)
        writer.commit()


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (no error when nothing matches)."""
    result = FileSystems.match([str(pattern)])[0]
    return sorted(m.path for m in result.metadata_list)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/"))


class AtomicWriter:
    """A file written in pieces under a temporary sibling name, renamed to ``path`` by ``commit()``.

    ``tell()`` counts the bytes written and ``sha256`` hashes them, so a
    streamed tar knows its size and checksum without being read back.
    ``abort()`` (or leaving a ``with`` block on an exception) deletes the
    temporary file; a SIGKILL leaves it behind under its ``.tmp-`` name,
    which ``remove_temporaries`` clears before a rerun.
    """

    def __init__(self, path: str) -> None:
        import hashlib

        self.path = str(path)
        self.tmp = f"{self.path}.tmp-{uuid.uuid4().hex}"
        self._handle = FileSystems.create(self.tmp)
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
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
        self._handle.close()
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])
        FileSystems.rename([self.tmp], [self.path])

    def abort(self) -> None:
        try:
            self._handle.close()
        finally:
            if FileSystems.exists(self.tmp):
                FileSystems.delete([self.tmp])

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()


def remove_temporaries(folder: str) -> int:
    """Delete the ``*.tmp-*`` files a killed writer left directly in ``folder``; returns how many."""
    stale = glob(join(folder, "*.tmp-*"))
    if stale:
        FileSystems.delete(stale)
    return len(stale)


def delete(paths: list[str]) -> None:
    paths = [str(p) for p in paths if FileSystems.exists(str(p))]
    if paths:
        FileSystems.delete(paths)


def remove_empty_folder(path: str) -> None:
    """Remove a local folder once nothing is left in it (object stores have no folders to remove)."""
    if "://" in str(path):
        return
    try:
        os.rmdir(str(path))
    except OSError:  # not empty, or already gone
        pass


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with FileSystems.open(str(path)) as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()
