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

:func:`masked_crops` cuts any number of masks of one image in one call, on a given
device (torch throughout): mask by mask with ``F.interpolate`` on the CPU, all masks at
once with the same bicubic taps on a GPU (see its docstring); :func:`masked_crop` is one mask.
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

from maskmine.transforms.devices import resolve_device
from maskmine.transforms.crop_config import (  # noqa: F401 - the crop's settings, imported from here too
    CROP_EXPAND,
    LEGACY_RESAMPLE,
    MASK_THRESHOLD,
    OPENAI_MEAN,
    OPENAI_STD,
    CropConfig,
    CropFill,
    CropResample,
    CropResize,
)


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
        raw = self.clip_input.cpu() * std + mean
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


CropStrategy = Literal["auto", "loop", "batched"]  # how the torch crop cuts K masks, see masked_crops
BATCHED_DEVICE_TYPES = ("cuda",)  # where "auto" cuts a whole image's masks at once (benchmarks/masked_crops.py)
CHUNK_BYTES = 256 * 2**20  # bound on the batched path's gathered intermediates per chunk of masks


def masked_crops(image: np.ndarray, masks: np.ndarray | torch.Tensor | Sequence[np.ndarray],
                 config: CropConfig = CropConfig(), *, device: str | torch.device | None = None,
                 strategy: CropStrategy = "auto", out: torch.Tensor | None = None) -> list[MaskedCrop]:
    """Cut every mask of ``masks`` (K, H, W) out of ``image`` (H, W, 3) uint8; ValueError on an empty mask.

    ``device`` is where the torch crop runs (``None``: the CPU, as before; a string goes through
    :func:`maskmine.transforms.devices.resolve_device`); the crops' ``clip_input`` stay there, their
    masks come back as numpy. ``strategy`` "loop" cuts mask by mask with ``F.interpolate`` (OVSeg's own
    code path); "batched" cuts all masks of the image at once with precomputed separable cubic taps
    (:func:`_batched_crops`), equal to the loop within float rounding (the tests hold it to 1e-4 abs,
    masks and boxes identical); "auto" batches on the device types of :data:`BATCHED_DEVICE_TYPES` and
    loops elsewhere, because on the CPU with a worker's one torch thread the loop is about 4.5x faster
    (benchmarks/masked_crops.py) and keeps the CPU's crops bit for bit what they were. The PIL crop
    always runs on the CPU, mask by mask.

    ``out``, a (K, 3, S, S) float32 tensor on ``device``, receives the CLIP inputs, and each crop's
    ``clip_input`` is its row: a caller that embeds many crops in one call (the mining worker, eval)
    gets them stacked without a copy (about 30 ms an image of 100 crops at 224 px on one CPU core).
    """
    if strategy not in ("auto", "loop", "batched"):
        raise ValueError(f"unknown strategy {strategy!r}: expected 'auto', 'loop' or 'batched'")
    masks = _as_stack(masks)
    image = np.asarray(image)
    _check(image, masks)
    if out is not None and (out.dtype != torch.float32 or out.shape != (len(masks), 3, config.input_size, config.input_size)):
        raise ValueError(f"out must be ({len(masks)}, 3, {config.input_size}, {config.input_size}) float32, "
                         f"got {tuple(out.shape)} {out.dtype}")
    if config.resample == "pil":
        masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else masks
        return _written([_pil_crop(image, binarize(m, config.threshold), config) for m in masks], out)
    if config.resample != "torch":
        raise ValueError(f"unknown resample {config.resample!r}: expected 'torch' or 'pil'")
    if config.resize not in ("stretch", "pad"):
        raise ValueError(f"unknown resize {config.resize!r}: expected 'stretch' or 'pad'")
    target = torch.device("cpu") if device is None else resolve_device(device)
    if strategy == "auto":
        strategy = "batched" if target.type in BATCHED_DEVICE_TYPES else "loop"
    if out is not None and (out.device.type != target.type or target.index not in (None, out.device.index)):
        raise ValueError(f"out is on {out.device}, the crops are cut on {target}")
    if strategy == "batched":
        return _batched_crops(image, masks, config, target, out)
    return _looped_crops(image, masks, config, target, out)


def _written(crops: list[MaskedCrop], out: torch.Tensor | None) -> list[MaskedCrop]:
    """The PIL crops with their CLIP inputs copied into ``out``'s rows (and viewed from there)."""
    if out is None:
        return crops
    for row, crop in zip(out, crops):
        row.copy_(crop.clip_input)
        crop.clip_input = row
    return crops


def _as_stack(masks: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> np.ndarray | torch.Tensor:
    """(K, H, W) numpy or torch masks; one (H, W) mask becomes K=1."""
    if not isinstance(masks, (np.ndarray, torch.Tensor)):
        masks = np.stack([np.asarray(m) for m in masks])
    return masks[None] if masks.ndim == 2 else masks


def _normalised_image(image: np.ndarray, config: CropConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, H, W) image and the (3,) fill, normalised on ``device`` as OVSeg normalises its regions:
    ``(x - pixel_mean) / pixel_std`` with its buffers (adapter.py 111-116: float32 constants times 255; 183)."""
    mean = (torch.Tensor(config.mean) * 255.0).to(device)
    std = (torch.Tensor(config.std) * 255.0).to(device)
    pixels = torch.from_numpy(image if image.flags.writeable else image.copy()).to(device)
    normalised = (pixels.permute(2, 0, 1).float() - mean[:, None, None]) / std[:, None, None]
    fill = (torch.tensor(config.fill_values(), dtype=torch.float32, device=device) - mean) / std
    return normalised, fill


def _looped_crops(image: np.ndarray, masks: np.ndarray | torch.Tensor, config: CropConfig,
                  device: torch.device, out: torch.Tensor | None = None) -> list[MaskedCrop]:
    """OVSeg's crop mask by mask: crop_with_mask, normalise, F.interpolate (bicubic; nearest for the mask).

    The image is normalised once, and each region is ``where(mask, normalised, normalised fill)``:
    bit for bit OVSeg's ``region * mask + (1 - mask) * fill`` then ``(x - mean) / std`` (with a 0/1
    mask and finite pixels the products and sums are exact, and the normalisation is the same
    elementwise operation on the same values), without three full-size passes per mask. The
    resize is ``F.interpolate``'s operator (``upsample_bicubic2d``), written straight into ``out``.
    """
    masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else masks
    binary = torch.from_numpy(np.ascontiguousarray(binarize(masks, config.threshold)))
    normalised, fill_normalised = _normalised_image(image, config, device)
    fill_normalised = fill_normalised[:, None, None]
    size = (config.input_size, config.input_size)
    height, width = image.shape[:2]
    if out is None:
        out = torch.empty((len(binary), 3, *size), dtype=torch.float32, device=device)
    crops = []
    for mask, row in zip(binary, out):
        box = ovseg_expand_box(mask_box(mask.numpy()), config.expand_ratio, width, height)
        x, y, w, h = box
        keep = mask[y : y + h, x : x + w].to(device)  # (h, w) bool
        region = torch.where(keep, normalised[:, y : y + h, x : x + w], fill_normalised)  # utils.py line 66
        if config.resize == "pad":
            side = max(w, h)
            oy, ox = (side - h) // 2, (side - w) // 2
            square = fill_normalised.expand(3, side, side).clone()
            square[:, oy : oy + h, ox : ox + w] = region
            square_keep = keep.new_zeros((side, side))
            square_keep[oy : oy + h, ox : ox + w] = keep
            region, keep = square, square_keep
        # adapter.py 186-188: F.interpolate(mode="bicubic") is this operator (align_corners False, no scales)
        torch.ops.aten.upsample_bicubic2d.out(region.unsqueeze(0), list(size), False, None, None, out=row[None])
        crop_mask = F.interpolate(keep[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
        crops.append(MaskedCrop(clip_input=row, mask=crop_mask.cpu().numpy(), box=box, config=config))
    return crops


CUBIC_A = -0.75  # F.interpolate's bicubic (no antialias) coefficient


def _cubic_taps(sizes: torch.Tensor, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """F.interpolate's bicubic taps (align_corners=False) from inputs of ``sizes`` (K,) to ``out_size``.

    Returns source indices (K, S, 4) clamped to ``[0, size - 1]`` (the input's edge, as F.interpolate
    clamps) and float32 weights (K, S, 4): ``scale = size / S`` in float32, source coordinate
    ``scale * (i + 0.5) - 0.5`` (not clamped at 0, as for cubic), taps at floor - 1 .. floor + 2.
    """
    scale = sizes.to(torch.float32) / out_size
    dst = torch.arange(out_size, dtype=torch.float32, device=sizes.device)
    real = scale[:, None] * (dst + 0.5)[None] - 0.5
    first = real.floor()
    t = (real - first).clamp(0.0, 1.0)
    a = CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(t + 1.0), near(t), near(1.0 - t), far((1.0 - t) + 1.0)], dim=-1)
    offsets = torch.arange(-1, 3, device=sizes.device)
    index = first.to(torch.int64)[..., None] + offsets
    index = torch.minimum(index, (sizes - 1)[:, None, None]).clamp_(min=0)
    return index, weights


def _nearest_taps(sizes: torch.Tensor, out_size: int) -> torch.Tensor:
    """F.interpolate's nearest source index (K, S): ``min(floor(i * (size / S)), size - 1)`` in float32."""
    scale = sizes.to(torch.float32) / out_size
    dst = torch.arange(out_size, dtype=torch.float32, device=sizes.device)
    index = (dst[None] * scale[:, None]).floor().to(torch.int64)
    return torch.minimum(index, (sizes - 1)[:, None])


def _weighted_taps(values: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum_j values[..., j, ...] * weights[..., j, ...]`` over the 4 taps of ``dim``, left to right
    (F.interpolate's CPU kernel adds its taps in this order)."""
    out = values.select(dim, 0) * weights.select(dim, 0)
    for j in range(1, values.shape[dim]):
        out = out + values.select(dim, j) * weights.select(dim, j)
    return out


def _tight_boxes(binary: torch.Tensor) -> torch.Tensor:
    """(K, 4) tight boxes x, y, w, h of (K, H, W) boolean masks, on their device; ValueError on an empty one."""
    k, height, width = binary.shape
    rows, cols = binary.any(dim=2), binary.any(dim=1)
    if k and not bool(rows.any(dim=1).all()):
        raise ValueError("empty mask has no box")
    ys = torch.arange(height, device=binary.device)
    xs = torch.arange(width, device=binary.device)
    y0 = torch.where(rows, ys, height).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    x0 = torch.where(cols, xs, width).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1)


def _batched_crops(image: np.ndarray, masks: np.ndarray | torch.Tensor, config: CropConfig,
                   device: torch.device, out: torch.Tensor | None = None,
                   chunk_bytes: int = CHUNK_BYTES) -> list[MaskedCrop]:
    """All K crops of one image on ``device`` at once: OVSeg's crop without a per-mask F.interpolate.

    Every crop's pixel is ``(pixel - mean) / std`` inside its mask and ``(fill - mean) / std`` outside
    (what OVSeg's ``region * mask + (1 - mask) * fill`` then normalisation gives, exactly). The
    bicubic resize of K boxes of different sizes is separable: a horizontal pass over every source
    row of every box (gathering 4 taps per output column) then a vertical pass gathering 4 of those
    rows per output row; the taps and their clamping to the box's (or padded square's) edge are
    F.interpolate's (:func:`_cubic_taps`). Masks are grouped into chunks whose gathered values stay
    under ``chunk_bytes``. Each chunk's crops are written into their rows of ``out`` (allocated here
    when not given), which the crops' ``clip_input`` view.
    """
    size = config.input_size
    height, width = image.shape[:2]
    binary = torch.as_tensor(masks).to(device)
    if binary.dtype != torch.bool:
        binary = binary > config.threshold
    tight = _tight_boxes(binary).cpu().tolist()
    boxes = [ovseg_expand_box(tuple(b), config.expand_ratio, width, height) for b in tight]
    if not boxes:
        return []
    normalised, fill_normalised = _normalised_image(image, config, device)
    normalised = normalised.reshape(3, -1)
    if out is None:
        out = torch.empty((len(boxes), 3, size, size), dtype=torch.float32, device=device)
    geometry = torch.tensor(boxes, dtype=torch.int64, device=device)  # x, y, w, h
    if config.resize == "pad":
        side = geometry[:, 2:].amax(dim=1)
        source_h, source_w = side, side
        off_y, off_x = (side - geometry[:, 3]) // 2, (side - geometry[:, 2]) // 2
    else:
        source_h, source_w = geometry[:, 3], geometry[:, 2]
        off_y = off_x = torch.zeros_like(source_h)
    row_index, row_weight = _cubic_taps(source_h, size)
    col_index, col_weight = _cubic_taps(source_w, size)
    flat_masks = binary.reshape(len(boxes), -1)
    crops: list[MaskedCrop] = []
    # per source row: 4 taps per output column, each with 3 float values, two int64 indices, a weight, 2 flags
    row_bytes = size * 4 * (3 * 4 + 2 * 8 + 4 + 2)
    heights = source_h.cpu().tolist()
    start = 0
    while start < len(boxes):
        stop, rows = start, 0
        while stop < len(boxes) and (stop == start or (rows + heights[stop]) * row_bytes <= chunk_bytes):
            rows += heights[stop]
            stop += 1
        part = slice(start, stop)
        pixels_k, masks_k = _chunk(normalised, fill_normalised, flat_masks[part], geometry[part],
                                   source_h[part], source_w[part], off_y[part], off_x[part],
                                   row_index[part], row_weight[part], col_index[part], col_weight[part],
                                   size, height, width)
        out[part].copy_(pixels_k)
        masks_k = masks_k.cpu().numpy()
        for j in range(stop - start):
            crops.append(MaskedCrop(clip_input=out[start + j], mask=masks_k[j], box=boxes[start + j], config=config))
        start = stop
    return crops


def _chunk(normalised: torch.Tensor, fill: torch.Tensor, flat_masks: torch.Tensor, geometry: torch.Tensor,
           source_h: torch.Tensor, source_w: torch.Tensor, off_y: torch.Tensor, off_x: torch.Tensor,
           row_index: torch.Tensor, row_weight: torch.Tensor, col_index: torch.Tensor,
           col_weight: torch.Tensor, size: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, 3, S, S) resized crops (a permuted view) and (k, S, S) resized masks of one chunk
    (see :func:`_batched_crops`)."""
    device = normalised.device
    k = geometry.shape[0]
    x, y, w, h = geometry.unbind(dim=1)
    # every source row of every crop: which crop, which row of its (padded) box
    crop_of_row = torch.repeat_interleave(torch.arange(k, device=device), source_h)
    starts = torch.cumsum(source_h, dim=0) - source_h
    r = torch.arange(crop_of_row.numel(), device=device) - starts[crop_of_row]
    box_r = r - off_y[crop_of_row]
    row_in = (box_r >= 0) & (box_r < h[crop_of_row])
    image_y = (y[crop_of_row] + box_r).clamp(0, height - 1)
    box_c = col_index - off_x[:, None, None]  # (k, S, 4) columns of the box each tap reads
    col_in = (box_c >= 0) & (box_c < w[:, None, None])
    image_x = (x[:, None, None] + box_c).clamp(0, width - 1)
    flat = image_y[:, None, None] * width + image_x[crop_of_row]  # (R, S, 4) pixel of each tap
    inside = row_in[:, None, None] & col_in[crop_of_row] & flat_masks[crop_of_row[:, None, None], flat]
    values = torch.where(inside, normalised[:, flat], fill[:, None, None, None])  # (3, R, S, 4)
    across = _weighted_taps(values, col_weight[crop_of_row][None], dim=3)  # (3, R, S): horizontal pass
    del values, inside, flat
    picked = across[:, starts[:, None, None] + row_index]  # (3, k, S, 4, S): 4 rows per output row
    resized = _weighted_taps(picked, row_weight[None, :, :, :, None], dim=3).permute(1, 0, 2, 3)
    # the mask: F.interpolate's nearest pick of the (padded) box's mask
    near_r = _nearest_taps(source_h, size) - off_y[:, None]  # (k, S)
    near_c = _nearest_taps(source_w, size) - off_x[:, None]
    r_in = (near_r >= 0) & (near_r < h[:, None])
    c_in = (near_c >= 0) & (near_c < w[:, None])
    mask_y = (y[:, None] + near_r).clamp(0, height - 1)
    mask_x = (x[:, None] + near_c).clamp(0, width - 1)
    mask_flat = mask_y[:, :, None] * width + mask_x[:, None, :]
    crop_masks = flat_masks.gather(1, mask_flat.reshape(k, -1)).reshape(k, size, size)
    crop_masks = crop_masks & r_in[:, :, None] & c_in[:, None, :]
    return resized, crop_masks


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
    pixels = np.array(Image.fromarray(region).resize(size, Image.BICUBIC))  # writable, for torch.from_numpy
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
