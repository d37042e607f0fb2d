"""Small file helpers over Beam's FileSystems, so outputs may live on gs:// too.

Every output file is written atomically: to a temporary name first, then
renamed, so a killed job never leaves a half-written file under a final name.
"""
from __future__ import annotations

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
    """Write ``data`` to ``path`` via a temporary sibling and a rename."""
    path = str(path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (no error when nothing matches)."""
    result = FileSystems.match([str(pattern)])[0]
    return sorted(m.path for m in result.metadata_list)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/"))
