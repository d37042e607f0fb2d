"""Reading images robustly: every failure becomes a skip reason, never a crash.

* a file that does not exist: ``missing-image``; one that exists but cannot be
  read (no permission): ``permission-denied``;
* an image over the pixel cap (``--max-megapixels``, default
  ``DEFAULT_MAX_MEGAPIXELS``), judged from its header before any pixel is
  decoded, or one Pillow flags as a decompression bomb: ``too-large``;
* an undecodable or truncated file: ``corrupt-image``;
* an image whose size differs from the width/height of its entry in the
  annotation file, as stored and upright alike: ``size-mismatch`` (its
  polygons and RLEs would land in the wrong place, so it is skipped rather
  than mined with misplaced masks).

EXIF orientation: annotations are drawn on one frame of an image, the stored
pixels or the upright (EXIF-rotated) picture, and the masks only fit that one.
COCO's are on the stored pixels (pycocotools, its annotation tools and
torchvision's COCO reader ignore EXIF); some tools annotate the upright
picture. Where the caller knows the annotations' size (``frame``), the image is
returned in the frame of that size, the stored one first; without it (an
upload to the demo) it is returned upright, as a viewer shows it.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskmine.transforms.records import (
    SKIP_CORRUPT_IMAGE,
    SKIP_MISSING_IMAGE,
    SKIP_PERMISSION_DENIED,
    SKIP_SIZE_MISMATCH,
    SKIP_TOO_LARGE,
    ImageRecord,
)

# 40 MP: a 7300x5500 photograph decodes to 120 MB of RGB; COCO images are about 0.3 MP.
DEFAULT_MAX_MEGAPIXELS = 40.0


class ImageSkip(Exception):
    """The image cannot be used; ``reason`` is one of the skip-reason constants."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, frame: tuple[int, int] | None = None
) -> np.ndarray:
    """Bytes → (H, W, 3) uint8 RGB; grayscale/CMYK/palette converted.

    ``frame``: the (height, width) of the annotations the image goes with. The
    stored pixels when they have that size (COCO's convention), else the
    EXIF-upright image when it has; when neither has, the stored pixels (the
    caller's size check reports the mismatch). None: the upright image.
    An image of more than ``max_megapixels`` (None: no cap) is refused from its
    header, before its pixels are decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if max_megapixels is not None and width * height > max_megapixels * 1e6:
                    raise ImageSkip(
                        SKIP_TOO_LARGE,
                        f"{width}x{height} = {width * height / 1e6:.1f} MP, over --max-megapixels {max_megapixels:g}",
                    )
                img.load()  # truncated files fail here, not later
                stored = (img.height, img.width)
                if frame is None or stored != tuple(frame):
                    upright = ImageOps.exif_transpose(img)
                    if frame is None or (upright.height, upright.width) == tuple(frame):
                        img = upright
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSkip(SKIP_TOO_LARGE, f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise ImageSkip(SKIP_CORRUPT_IMAGE, str(exc)) from exc


def read_image(
    path: str | Path, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, frame: tuple[int, int] | None = None
) -> np.ndarray:
    """Read an image file (``frame`` as in :func:`decode_image`); missing → missing-image,
    unreadable → permission-denied, undecodable → corrupt-image."""
    from apache_beam.io.filesystems import FileSystems  # local paths and gs:// alike

    path = str(path)
    try:
        with FileSystems.open(path) as handle:
            data = handle.read()
    except PermissionError as exc:
        raise ImageSkip(SKIP_PERMISSION_DENIED, f"{path}: {exc.strerror or exc}") from exc
    except (FileNotFoundError, IOError, OSError) as exc:
        if not FileSystems.exists(path):
            raise ImageSkip(SKIP_MISSING_IMAGE, path) from exc
        if isinstance(exc.__cause__ or exc.__context__, PermissionError) or "Permission denied" in str(exc):
            raise ImageSkip(SKIP_PERMISSION_DENIED, f"{path}: permission denied") from exc
        raise ImageSkip(SKIP_CORRUPT_IMAGE, f"{path}: {exc}") from exc
    return decode_image(data, max_megapixels, frame)


def read_record_image(images_dir: str, record: ImageRecord, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """The image of ``record`` in the frame of its annotations (see the module docstring);
    ``size-mismatch`` when neither its stored nor its upright size is the record's width/height."""
    from maskmine.transforms import fileio

    entry = (record.height, record.width)
    known = bool(record.width and record.height)
    image = read_image(fileio.join(images_dir, record.file_name), max_megapixels, entry if known else None)
    if known and image.shape[:2] != entry:
        raise ImageSkip(
            SKIP_SIZE_MISMATCH,
            f"{record.file_name} is {image.shape[1]}x{image.shape[0]}, its entry says {record.width}x{record.height}",
        )
    return image
