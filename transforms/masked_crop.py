"""The one masked-crop preprocessing shared by mining, finetuning and eval.

OVSeg classifies a region by showing CLIP only that region: pixels outside the
mask are filled with CLIP's mean pixel (so they become ~0 after normalisation),
the image is cropped to the mask's tight box and resized to CLIP's input size.
``masked_crop`` does this on uint8 pixels (what the shards store as ``jpg``);
``to_clip_tensor`` is the normalisation every consumer applies afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


CropFill = Literal["mean", "zero"]  # the background of a masked crop
CropResize = Literal["stretch", "pad"]  # how the box becomes a square


@dataclass(frozen=True)
class CropConfig:
    """How a region becomes CLIP's input.

    fill: "mean" paints the background with ``mean`` (OVSeg), "zero" with black.
    resize: "stretch" resizes the box to the square input (OVSeg, default);
    "pad" pads the box to a square with the fill colour first, keeping aspect.
    expand_ratio: the box is scaled about its centre by this factor (clipped to
    the image) before cropping; 1.0 is the tight box.
    threshold: soft masks are binarised with ``mask > threshold`` (strictly, as OVSeg's
    ``mask > MASK_THR``). Mining records it in run.json; ``maskmine eval`` binarises its
    proposals itself with ``--mask-threshold`` (default 0.4, OVSeg's MASK_THR default).
    """

    input_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    fill: CropFill = "mean"
    resize: CropResize = "stretch"
    expand_ratio: float = 1.0
    threshold: float = 0.5

    def fill_pixel(self) -> np.ndarray:
        if self.fill == "zero":
            return np.zeros(3, dtype=np.uint8)
        if self.fill == "mean":
            return np.round(np.asarray(self.mean) * 255.0).astype(np.uint8)
        raise ValueError(f"unknown fill {self.fill!r}: expected 'mean' or 'zero'")


@dataclass
class MaskedCrop:
    pixels: np.ndarray  # (S, S, 3) uint8: the region as CLIP sees it before normalisation
    mask: np.ndarray  # (S, S) bool: the region's mask, resized the same way (nearest)
    box: tuple[int, int, int, int]  # the cropped box in image pixels: x, y, w, h


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean masks as they are; soft masks ``mask > threshold`` (OVSeg's strict test)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    return mask > threshold


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box (x, y, w, h) of a non-empty boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return x0, y0, x1 - x0, y1 - y0


def expand_box(
    box: tuple[int, int, int, int], ratio: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Scale a box about its centre, clipped to the image, at least 1x1 pixel."""
    x, y, w, h = box
    if ratio == 1.0:
        return box
    cx, cy = x + w / 2.0, y + h / 2.0
    nw, nh = w * ratio, h * ratio
    x0 = max(0, int(np.floor(cx - nw / 2.0)))
    y0 = max(0, int(np.floor(cy - nh / 2.0)))
    x1 = min(width, int(np.ceil(cx + nw / 2.0)))
    y1 = min(height, int(np.ceil(cy + nh / 2.0)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def masked_crop(image: np.ndarray, mask: np.ndarray, config: CropConfig = CropConfig()) -> MaskedCrop:
    """Turn (image, mask) into CLIP's input region; raises ValueError on an empty mask."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    binary = binarize(mask, config.threshold)
    if binary.shape != image.shape[:2]:
        raise ValueError(f"mask {binary.shape} does not match image {image.shape[:2]}")
    height, width = binary.shape
    box = expand_box(mask_box(binary), config.expand_ratio, width, height)
    x, y, w, h = box
    region = image[y : y + h, x : x + w].copy()
    region_mask = binary[y : y + h, x : x + w]
    fill = config.fill_pixel()
    region[~region_mask] = fill
    if config.resize == "pad":
        side = max(w, h)
        padded = np.empty((side, side, 3), dtype=np.uint8)
        padded[:] = fill
        padded_mask = np.zeros((side, side), dtype=bool)
        oy, ox = (side - h) // 2, (side - w) // 2
        padded[oy : oy + h, ox : ox + w] = region
        padded_mask[oy : oy + h, ox : ox + w] = region_mask
        region, region_mask = padded, padded_mask
    elif config.resize != "stretch":
        raise ValueError(f"unknown resize {config.resize!r}: expected 'stretch' or 'pad'")
    size = (config.input_size, config.input_size)
    pixels = np.asarray(Image.fromarray(region).resize(size, Image.BICUBIC))
    crop_mask = np.asarray(
        Image.fromarray(region_mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)
    ) > 127
    return MaskedCrop(pixels=pixels, mask=crop_mask, box=box)


def to_clip_tensor(
    pixels: np.ndarray | Sequence[np.ndarray] | torch.Tensor, config: CropConfig = CropConfig()
) -> torch.Tensor:
    """uint8 crops ``(N, S, S, 3)`` (or a list of ``(S, S, 3)``) → normalised ``(N, 3, S, S)`` float."""
    if isinstance(pixels, torch.Tensor):
        batch = pixels
    else:
        batch = torch.from_numpy(np.stack(list(pixels)) if not isinstance(pixels, np.ndarray) else pixels)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (batch - mean) / std
