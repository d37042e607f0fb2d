"""Reading images robustly: every failure becomes a skip reason, never a crash.

* a file that does not exist: ``missing-image``; one that exists but cannot be
  read (no permission): ``permission-denied``;
* a ``file_name`` that is absolute, a URL, or has a ``..`` part:
  ``outside-images``; one that is not text, is empty, or holds a NUL byte or a
  lone surrogate: ``bad-file-name``. Neither is ever opened: the annotation
  file is untrusted and names files only inside ``--images``;
* a path that is not a regular file (a folder, FIFO, device, socket, a
  symlink loop): ``not-a-file``, found with ``fstat`` on a descriptor opened
  with ``O_NONBLOCK``, so a FIFO never blocks the job;
* an image over the pixel cap (``--max-megapixels``, default
  ``DEFAULT_MAX_MEGAPIXELS``), judged from its header before any pixel is
  decoded, or one Pillow flags as a decompression bomb, or a file of more than
  ``MAX_BYTES_PER_PIXEL`` bytes per allowed pixel (judged before it is read): ``too-large``;
* an undecodable or truncated file: ``corrupt-image``;
* pixels that have no defined white level (see :func:`picture_rgb`): ``unsupported-mode``;
* an image whose size differs from the width/height of its entry in the
  annotation file, as stored and upright alike: ``size-mismatch`` (its
  polygons and RLEs would land in the wrong place, so it is skipped rather
  than mined with misplaced masks).

Symlinks: the annotation file can only name paths inside ``--images``, but a
symlink *inside* ``--images`` is followed wherever it points (a folder of
links into a dataset is a normal setup, and whoever made the folder made the
links); its target must still be a regular file.

EXIF orientation: annotations are drawn on one frame of an image, the stored
pixels or the upright (EXIF-rotated) picture, and the masks only fit that one.
COCO's are on the stored pixels (pycocotools, its annotation tools and
torchvision's COCO reader ignore EXIF); some tools annotate the upright
picture. Where the caller knows the annotations' size (``frame``), the image is
returned in the frame of that size, the stored one first; without it (an
upload to the demo) it is returned upright, as a viewer shows it.
"""
from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskmine.transforms.records import (
    ImageRecord,
    Skip,
)

# 40 MP: a 7300x5500 photograph decodes to 120 MB of RGB; COCO images are about 0.3 MP.
DEFAULT_MAX_MEGAPIXELS = 40.0
# A file larger than this many bytes per allowed pixel (16-bit RGBA, uncompressed) is too-large unread.
MAX_BYTES_PER_PIXEL = 8


class ImageSkip(Exception):
    """The image cannot be used; ``reason`` is one of the skip-reason constants."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _shown(name: object) -> str:
    return repr(name)[:200]


def confined_path(images_dir: str, file_name: object) -> str:
    """``images_dir`` joined with an annotation file's ``file_name``, which must be a plain
    relative path inside it; ImageSkip ``bad-file-name`` or ``outside-images`` otherwise.

    Checked on the name alone, before anything is opened: no absolute path, no
    URL (``scheme://``), no ``..`` part. (Symlinks inside the folder are the
    folder owner's and are followed; see the module docstring.)
    """
    if not isinstance(file_name, str):
        raise ImageSkip(Skip.BAD_FILE_NAME, f"file_name is a {type(file_name).__name__}, not text: {_shown(file_name)}")
    if not file_name.strip():
        raise ImageSkip(Skip.BAD_FILE_NAME, "file_name is empty")
    if "\0" in file_name:
        raise ImageSkip(Skip.BAD_FILE_NAME, f"file_name holds a NUL byte: {_shown(file_name)}")
    try:
        file_name.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageSkip(Skip.BAD_FILE_NAME, f"file_name is not valid Unicode (a lone surrogate): {_shown(file_name)}") from None
    if file_name.startswith("/") or "://" in file_name or os.path.isabs(file_name):
        raise ImageSkip(Skip.OUTSIDE_IMAGES, f"file_name {_shown(file_name)} is absolute, not a path inside the images folder")
    if ".." in file_name.replace("\\", "/").split("/"):
        raise ImageSkip(Skip.OUTSIDE_IMAGES, f"file_name {_shown(file_name)} climbs out of the images folder with '..'")
    from maskmine.transforms import storage

    return storage.join(str(images_dir), posixpath.normpath(file_name))


def _gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite (H, W, 4) uint8 RGBA over white: ``round((c * a + 255 * (255 - a)) / 255)``."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _sixteen_bit_source(rawmode: str, codec: str) -> bool:
    """Whether a mode ``I`` image came from 16-bit samples (PNG/TIFF ``I;16*``, PGM with maxval > 255)."""
    return "16" in rawmode or codec == "ppm"


def picture_rgb(img: Image.Image, rawmode: str = "", codec: str = "") -> np.ndarray:
    """The picture ``img`` holds as (H, W, 3) uint8 RGB, for every mode Pillow opens.

    * ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK`` (no ICC profile: Pillow's
      ``(255 - C) * (255 - K) / 255`` per channel), ``YCbCr``, ``HSV``, ``LAB`` (CIELAB D50 to sRGB, the same values as littleCMS):
      Pillow's conversion.
    * alpha (``LA``, ``PA``, ``RGBA``, ``RGBa``, a palette or colour with
      ``transparency``): composited over white, as a page shows the image,
      ``round((c * a + 255 * (255 - a)) / 255)``; the colour under a transparent pixel is not part of the picture.
    * 16-bit samples (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, and ``I`` read
      from 16-bit data: PNG, TIFF, PGM/PPM, which Pillow scales to 0..65535):
      the high byte, ``v >> 8``, as Pillow itself reduces 16-bit RGB(A) PNG and
      TIFF; 8-bit data stored as 16 bits (``v * 257``) comes back exactly.
    * ``F`` (float): white is 1.0 (the float-image convention of TIFF, scikit-image, OpenEXR):
      ``round(v * 255)``; values outside 0..1 or not finite are ``unsupported-mode``.
    * ``I`` from 32-bit data, ``La``, and anything else: ``unsupported-mode``
      (no defined white level, or no conversion), never guessed.

    ``rawmode``/``codec``: of the file's first tile (read before ``load()``), to tell 16-bit ``I`` from 32-bit.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return _gray_rgb(np.asarray(img).astype(np.uint16) >> 8)
    if mode == "I":
        values = np.asarray(img)
        if not _sixteen_bit_source(rawmode, codec):
            raise ImageSkip(Skip.UNSUPPORTED_MODE, f"32-bit integer pixels ({rawmode or 'I'}) have no defined white level")
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageSkip(Skip.UNSUPPORTED_MODE, f"16-bit pixels outside 0..65535 ({values.min()}..{values.max()})")
        return _gray_rgb(values.astype(np.uint16) >> 8)
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise ImageSkip(Skip.UNSUPPORTED_MODE, "float pixels outside 0..1 (or not finite) have no defined white level")
        return _gray_rgb(np.rint(values * 255.0))
    has_alpha = mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in img.info
    if has_alpha and mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa"):
        return _over_white(np.asarray(img.convert("RGBA")))
    if mode in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        return np.asarray(img.convert("RGB"))
    raise ImageSkip(Skip.UNSUPPORTED_MODE, f"mode {mode} has no conversion to RGB")


def decode_image(
    data: bytes, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, frame: tuple[int, int] | None = None
) -> np.ndarray:
    """Bytes → (H, W, 3) uint8 RGB, the picture the file holds (:func:`picture_rgb`).

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
                        Skip.TOO_LARGE,
                        f"{width}x{height} = {width * height / 1e6:.1f} MP, over the {max_megapixels:g} MP limit (`max_megapixels`)",
                    )
                tile = img.tile[0] if img.tile else None
                rawmode = str(tile.args[0] if isinstance(tile.args, tuple) else tile.args) if tile else ""
                codec = str(tile.codec_name) if tile else ""
                img.load()  # truncated files fail here, not later
                stored = (img.height, img.width)
                if frame is None or stored != tuple(frame):
                    upright = ImageOps.exif_transpose(img)
                    if frame is None or (upright.height, upright.width) == tuple(frame):
                        img = upright
                return picture_rgb(img, rawmode, codec)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSkip(Skip.TOO_LARGE, f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise ImageSkip(Skip.CORRUPT_IMAGE, str(exc)) from exc


def _read_local(path: str, max_bytes: float | None) -> bytes:
    """A local file's bytes, opened without following it into anything but a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once; ``fstat`` on the open
    descriptor (no race with a swapped path) refuses anything that is not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ImageSkip(Skip.MISSING_IMAGE, path) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageSkip(Skip.PERMISSION_DENIED, f"{path}: {exc.strerror}") from exc
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENODEV):
            raise ImageSkip(Skip.NOT_A_FILE, f"{path}: {exc.strerror}") from exc
        raise ImageSkip(Skip.CORRUPT_IMAGE, f"{path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise ImageSkip(Skip.NOT_A_FILE, f"{path} is {kind}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ImageSkip(Skip.TOO_LARGE,
                            f"{path} has {info.st_size} bytes, over the {max_bytes:.0f}-byte limit that `max_megapixels` sets")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            return handle.read()
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ImageSkip(Skip.NOT_A_FILE, f"{path}: {exc.strerror}") from exc
        raise ImageSkip(Skip.CORRUPT_IMAGE, f"{path}: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)


def _read_remote(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems  # gs:// and other object stores (no FIFOs there)

    try:
        with FileSystems.open(path) as handle:
            return handle.read()
    except PermissionError as exc:
        raise ImageSkip(Skip.PERMISSION_DENIED, f"{path}: {exc.strerror or exc}") from exc
    except (FileNotFoundError, IOError, OSError) as exc:
        if not FileSystems.exists(path):
            raise ImageSkip(Skip.MISSING_IMAGE, path) from exc
        if isinstance(exc.__cause__ or exc.__context__, PermissionError) or "Permission denied" in str(exc):
            raise ImageSkip(Skip.PERMISSION_DENIED, f"{path}: permission denied") from exc
        raise ImageSkip(Skip.CORRUPT_IMAGE, f"{path}: {exc}") from exc


def read_image(
    path: str | Path, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, frame: tuple[int, int] | None = None
) -> np.ndarray:
    """Read an image file (``frame`` as in :func:`decode_image`); missing → missing-image,
    unreadable → permission-denied, not a regular file → not-a-file, undecodable → corrupt-image."""
    path = str(path)
    if "://" in path:
        data = _read_remote(path)
    else:
        data = _read_local(path, None if max_megapixels is None else max_megapixels * 1e6 * MAX_BYTES_PER_PIXEL)
    return decode_image(data, max_megapixels, frame)


def read_folder_image(
    images_dir: str | Path, file_name: object, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    frame: tuple[int, int] | None = None,
) -> np.ndarray:
    """The image ``file_name`` (from an annotation file or a run's metadata) inside ``images_dir``,
    confined to it (:func:`confined_path`); ``frame`` as in :func:`decode_image`."""
    return read_image(confined_path(str(images_dir), file_name), max_megapixels, frame)


def read_record_image(images_dir: str, record: ImageRecord, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """The image of ``record`` in the frame of its annotations (see the module docstring);
    ``size-mismatch`` when neither its stored nor its upright size is the record's width/height."""
    entry = (record.height, record.width)
    known = bool(record.width and record.height)
    image = read_folder_image(images_dir, record.file_name, max_megapixels, entry if known else None)
    if known and image.shape[:2] != entry:
        raise ImageSkip(
            Skip.SIZE_MISMATCH,
            f"{record.file_name} is {image.shape[1]}x{image.shape[0]}, its entry says {record.width}x{record.height}",
        )
    return image
