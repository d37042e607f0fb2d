"""Reading images robustly: every failure becomes a skip reason, never a crash."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskmine.transforms.records import SKIP_CORRUPT_IMAGE, SKIP_MISSING_IMAGE


class ImageSkip(Exception):
    """The image cannot be used; ``reason`` is one of the skip-reason constants."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(data: bytes) -> np.ndarray:
    """Bytes → (H, W, 3) uint8 RGB, EXIF orientation applied; grayscale/CMYK/palette converted."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageSkip(SKIP_CORRUPT_IMAGE, str(exc)) from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file; missing → ImageSkip(missing-image), undecodable → corrupt-image."""
    from apache_beam.io.filesystems import FileSystems  # local paths and gs:// alike

    path = str(path)
    try:
        with FileSystems.open(path) as handle:
            data = handle.read()
    except (FileNotFoundError, IOError, OSError) as exc:
        if not FileSystems.exists(path):
            raise ImageSkip(SKIP_MISSING_IMAGE, path) from exc
        raise ImageSkip(SKIP_CORRUPT_IMAGE, f"{path}: {exc}") from exc
    return decode_image(data)
