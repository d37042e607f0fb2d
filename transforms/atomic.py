"""Atomic writes of local files: bytes, text, JSON and torch objects.

Each writer fills a hidden temporary sibling (``.NAME.tmp-<uuid>``) and
renames it over ``path`` with ``os.replace``, so a killed process never leaves
a half-written file under a final name and readers see the old or the new
content, never a mix. On an exception the temporary file is removed.

Local paths only, and no Beam import: training, eval and the sample world
use this. The mining job's outputs may live on gs://, so it writes through
:mod:`maskmine.transforms.fileio` (Beam's FileSystems) instead.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """``json.dumps(obj, **dumps)`` written atomically as UTF-8."""
    atomic_write(path, json.dumps(obj, **dumps))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically (torch imported here, so callers of the rest need none)."""
    import torch

    with replacing(path) as tmp:
        torch.save(obj, tmp)
