"""The one masked-crop preprocessing shared by mining, finetuning and eval.

OVSeg classifies a region by showing CLIP only that region: the image is cut to
the mask's box, pixels outside the mask are filled with CLIP's mean pixel (so
they become 0 after normalisation), the region is normalised and resized to
CLIP's input size. ``resample="torch"`` (the default) does this exactly as
OVSeg's ``MaskFormerClipAdapter._preprocess_image`` and ``crop_with_mask``
(facebookresearch/ov-seg@36f49d4, open_vocab_seg/modeling/clip_adapter/
adapter.py lines 147-198 and utils.py lines 11-66): float32 pixels,
``region * mask + (1 - mask) * fill`` with ``fill = 255 * mean`` unrounded,
normalisation, then ``F.interpolate(mode="bicubic")`` (no antialiasing, no
clamping) for the pixels and ``mode="nearest"`` for the mask.
``resample="pil"`` is the crop maskmine cut before (uint8 pixels, rounded mean
fill, PIL bicubic with antialiasing): it stays so that runs and models made
with it are cut the same way again (settings that record no ``resample`` are
such runs).

:func:`masked_crops` cuts any number of masks of one image in one call (torch
throughout, so it can run where the image is); :func:`masked_crop` is one mask.
A crop's :attr:`MaskedCrop.clip_input` is what CLIP sees; :attr:`MaskedCrop.pixels`
is its uint8 picture (what the shards store as ``jpg``), and ``to_clip_tensor``
normalises such uint8 pictures again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskmine.transforms.ranges import Range

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


CropFill = Literal["mean", "zero"]  # the background of a masked crop
CropResize = Literal["stretch", "pad"]  # how the box becomes a square
CropResample = Literal["torch", "pil"]  # OVSeg's float torch crop, or maskmine's former uint8 PIL crop
LEGACY_RESAMPLE: CropResample = "pil"  # what recorded settings without a ``resample`` field were cut with

# Soft masks are probabilities in [0, 1] binarised strictly (``mask > threshold``, OVSeg's test):
# at 1 no pixel can pass, every mask would be empty, so 1 is refused (mining and eval alike).
MASK_THRESHOLD = Range(float, lo=0.0, hi=1.0, hi_open=True)
# The box scale of ``CropConfig.expand_ratio`` a command accepts: the tight box up to ten times it.
CROP_EXPAND = Range(float, lo=1.0, hi=10.0)


@dataclass(frozen=True)
class CropConfig:
    """How a region becomes CLIP's input.

    fill: "mean" paints the background with ``255 * mean`` (OVSeg), "zero" with black.
    resize: "stretch" resizes the box to the square input (OVSeg, default);
    "pad" pads the box to a square with the fill colour first, keeping aspect.
    expand_ratio: the box is scaled about its centre by this factor (clipped to
    the image) before cropping; 1.0 is the tight box (OVSeg's default).
    threshold: soft masks are binarised with ``mask > threshold`` (strictly, as OVSeg's
    ``mask > MASK_THR``). Mining records it in run.json; ``maskmine eval`` binarises its
    proposals itself with ``--mask-threshold`` (default 0.4, OVSeg's MASK_THR default).
    resample: "torch" (OVSeg's crop, default) or "pil" (maskmine's former crop), see the module.
    """

    input_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    fill: CropFill = "mean"
    resize: CropResize = "stretch"
    expand_ratio: float = 1.0
    threshold: float = 0.5
    resample: CropResample = "torch"

    def fill_pixel(self) -> np.ndarray:
        """The PIL crop's uint8 fill (the mean rounded)."""
        if self.fill == "zero":
            return np.zeros(3, dtype=np.uint8)
        if self.fill == "mean":
            return np.round(np.asarray(self.mean) * 255.0).astype(np.uint8)
        raise ValueError(f"unknown fill {self.fill!r}: expected 'mean' or 'zero'")

    def fill_values(self) -> list[float]:
        """The torch crop's fill, as OVSeg's adapter.py lines 97-101: ``[255.0 * c for c in mean]``."""
        if self.fill == "zero":
            return [0.0, 0.0, 0.0]
        if self.fill == "mean":
            return [255.0 * c for c in self.mean]
        raise ValueError(f"unknown fill {self.fill!r}: expected 'mean' or 'zero'")


@dataclass
class MaskedCrop:
    clip_input: torch.Tensor  # (3, S, S) float32, CLIP-normalised: what CLIP sees
    mask: np.ndarray  # (S, S) bool: the region's mask, resized the same way (nearest)
    box: tuple[int, int, int, int]  # the cropped box in image pixels: x, y, w, h
    config: "CropConfig"

    @property
    def pixels(self) -> np.ndarray:
        """(S, S, 3) uint8: the crop as a picture (un-normalised, rounded and clipped to 0..255)."""
        mean = torch.tensor(self.config.mean).view(3, 1, 1) * 255.0
        std = torch.tensor(self.config.std).view(3, 1, 1) * 255.0
        raw = self.clip_input * std + mean
        return raw.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


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
    """The PIL crop's box expansion: scale about the centre, floor/ceil, clipped, at least 1x1."""
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


def ovseg_expand_box(
    box: tuple[int, int, int, int], ratio: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The torch crop's box: OVSeg's ``expand_box`` (utils.py 11-33, ``int()`` truncation) and
    ``crop_with_mask``'s clipping (utils.py 56-61), as (x, y, w, h), at least 1x1."""
    x, y, w, h = box
    x1, y1, x2, y2 = float(x), float(y), float(x + w), float(y + h)
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    nw, nh = (x2 - x1) * ratio, (y2 - y1) * ratio
    left, top, right, bottom = (int(b) for b in (cx - 0.5 * nw, cy - 0.5 * nh, cx + 0.5 * nw, cy + 0.5 * nh))
    left, top = min(max(left, 0), width - 1), min(max(top, 0), height - 1)  # inside the image, as the PIL crop
    right, bottom = min(right, width), min(bottom, height)
    return left, top, max(1, right - left), max(1, bottom - top)


def _check(image: np.ndarray, masks: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"mask {masks.shape[1:]} does not match image {image.shape[:2]}")


def masked_crops(image: np.ndarray, masks: np.ndarray | Sequence[np.ndarray],
                 config: CropConfig = CropConfig()) -> list[MaskedCrop]:
    """Cut every mask of ``masks`` (K, H, W) out of ``image`` (H, W, 3) uint8; ValueError on an empty mask."""
    image = np.asarray(image)
    masks = np.stack([np.asarray(m) for m in masks]) if not isinstance(masks, np.ndarray) else masks
    if masks.ndim == 2:
        masks = masks[None]
    _check(image, masks)
    if config.resample == "pil":
        return [_pil_crop(image, binarize(m, config.threshold), config) for m in masks]
    if config.resample != "torch":
        raise ValueError(f"unknown resample {config.resample!r}: expected 'torch' or 'pil'")
    if config.resize not in ("stretch", "pad"):
        raise ValueError(f"unknown resize {config.resize!r}: expected 'stretch' or 'pad'")
    pixels = torch.from_numpy(image if image.flags.writeable else image.copy())
    pixels = pixels.permute(2, 0, 1).float()  # (3, H, W), as OVSeg's image.type(dtype)
    fill = config.fill_values()
    # OVSeg's pixel_mean / pixel_std buffers (adapter.py 111-116): float32 constants times 255
    mean = torch.Tensor(config.mean).reshape(1, 3, 1, 1) * 255.0
    std = torch.Tensor(config.std).reshape(1, 3, 1, 1) * 255.0
    size = (config.input_size, config.input_size)
    height, width = image.shape[:2]
    out = []
    for soft in masks:
        binary = binarize(soft, config.threshold)
        box = ovseg_expand_box(mask_box(binary), config.expand_ratio, width, height)
        x, y, w, h = box
        keep = torch.tensor(binary[y : y + h, x : x + w], dtype=torch.float32)[None]  # (1, h, w)
        canvas = torch.cat([pixels.new_full((1, h, w), fill_value=v) for v in fill])
        region = pixels[:, y : y + h, x : x + w] * keep + (1 - keep) * canvas  # utils.py line 66
        if config.resize == "pad":
            side = max(w, h)
            oy, ox = (side - h) // 2, (side - w) // 2
            square = torch.cat([pixels.new_full((1, side, side), fill_value=v) for v in fill])
            square[:, oy : oy + h, ox : ox + w] = region
            square_keep = keep.new_zeros((1, side, side))
            square_keep[:, oy : oy + h, ox : ox + w] = keep
            region, keep = square, square_keep
        normalised = (region.unsqueeze(0) - mean) / std  # adapter.py line 183, then the resize (186-188)
        resized = F.interpolate(normalised, size=size, mode="bicubic")
        crop_mask = F.interpolate(keep.unsqueeze(0), size=size, mode="nearest")[0, 0] > 0.5
        out.append(MaskedCrop(clip_input=resized[0], mask=crop_mask.numpy(), box=box, config=config))
    return out


def masked_crop(image: np.ndarray, mask: np.ndarray, config: CropConfig = CropConfig()) -> MaskedCrop:
    """Turn (image, mask) into CLIP's input region; raises ValueError on an empty mask."""
    return masked_crops(image, np.asarray(mask)[None], config)[0]


def clip_batch(crops: Sequence[MaskedCrop]) -> torch.Tensor:
    """(N, 3, S, S) CLIP input of crops (what CLIP embeds)."""
    return torch.stack([c.clip_input for c in crops])


def _pil_crop(image: np.ndarray, binary: np.ndarray, config: CropConfig) -> MaskedCrop:
    """maskmine's former crop: uint8, rounded mean fill, PIL bicubic (antialiased) resize."""
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
    return MaskedCrop(clip_input=to_clip_tensor(pixels, config)[0], mask=crop_mask, box=box, config=config)


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
