"""Gallery thumbnails: the source image with the chosen mask outlined, and the crop CLIP saw.

The full-image mask is rebuilt from the pair's COCO RLE, shrunk with the image
(nearest neighbour), and its boundary (mask minus its 4-neighbour erosion,
thickened by one pixel) is painted in a bright colour; the outside of the mask
is dimmed a little, and masks of a few thumbnail pixels get a frame as well.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

OUTLINE_RGB = (255, 40, 200)
SMALL_MASK_FRACTION = 0.004  # masks below this share of the thumbnail also get a frame
FRAME_PAD = 6


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask from COCO compressed RLE counts."""
    rle = {"size": [int(height), int(width)], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion; pixels on the image border count as outside."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )


def dilate(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary dilation."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    )


def boundary(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """The mask's inner boundary, ``thickness`` pixels wide."""
    edge = mask & ~erode(mask)
    for _ in range(max(0, thickness - 1)):
        edge = dilate(edge)
    return edge


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def outlined_thumbnail(image: np.ndarray, mask: np.ndarray, max_side: int = 320, dim: float = 0.45) -> np.ndarray:
    """Downscaled RGB image with the mask outlined and the background dimmed by ``dim``."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    h, w = fit_size(*mask.shape, max_side)
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    if not small_mask.any() and mask.any():  # a mask smaller than one thumbnail pixel: mark where it is
        ys, xs = np.nonzero(mask)
        small_mask[min(h - 1, int(ys.mean() * h / mask.shape[0])), min(w - 1, int(xs.mean() * w / mask.shape[1]))] = True
    out = small.copy()
    out[~small_mask] *= 1.0 - dim
    out[boundary(small_mask)] = OUTLINE_RGB
    if 0 < small_mask.sum() < SMALL_MASK_FRACTION * h * w:  # tiny masks: also frame them so the eye finds them
        ys, xs = np.nonzero(small_mask)
        y0, y1 = max(0, ys.min() - FRAME_PAD), min(h - 1, ys.max() + FRAME_PAD)
        x0, x1 = max(0, xs.min() - FRAME_PAD), min(w - 1, xs.max() + FRAME_PAD)
        out[[y0, y1], x0 : x1 + 1] = OUTLINE_RGB
        out[y0 : y1 + 1, [x0, x1]] = OUTLINE_RGB
    return out.clip(0, 255).astype(np.uint8)


def resized(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = fit_size(*image.shape[:2], max_side)
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


def crop_preview(crop_jpg: bytes, size: int = 160) -> np.ndarray:
    """The stored crop (as CLIP saw it), shown at a fixed square size with sharp pixels."""
    with Image.open(io.BytesIO(crop_jpg)) as img:
        resample = Image.NEAREST if max(img.size) <= size else Image.BICUBIC  # enlarge sharp, shrink smooth
        return np.asarray(img.convert("RGB").resize((size, size), resample))


def encode_jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
