"""The batched masked crop (all masks of an image at once, on a device) against OVSeg's per-box crop.

The reference below is written from OVSeg's code (facebookresearch/ov-seg@36f49d4,
open_vocab_seg/modeling/clip_adapter/utils.py 11-66 ``expand_box`` / ``crop_with_mask`` and
adapter.py 147-198 ``_preprocess_image``: float pixels, ``region * mask + (1 - mask) * fill``,
normalise, ``F.interpolate`` bicubic for the region and nearest for the mask, one box at a time),
plus maskmine's ``resize="pad"`` (the box centred on a fill-coloured square before the resize).
It does not call maskmine's crop helpers.

Tolerance: the batched path adds the same 4x4 cubic taps as F.interpolate, in the same order, but
its float32 weights can differ from the kernel's in the last bits, so its CLIP inputs (values of
about -2..2.7) are held to ``ATOL = 1e-4`` absolute; crop masks and boxes must be identical. Typical
mistakes are far larger: an off-by-half source index (align_corners) or a one-pixel shift moves
these crops by more than 0.05 (``test_tolerance_has_teeth``), a wrong clamp at the box's edge
changes the edge rows of the border and 1-pixel cases by the jump between a pixel and the fill.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import BATCHED_DEVICE_TYPES, CropConfig, masked_crops

ATOL = 1e-4


def reference_crop(image: np.ndarray, mask: np.ndarray, config: CropConfig):
    """OVSeg's crop of one mask: (clip_input (3, S, S), mask (S, S) bool, box (x, y, w, h))."""
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)  # utils.py expand_box
    w, h = (x2 - x1) * config.expand_ratio, (y2 - y1) * config.expand_ratio
    l, t, r, b = (int(v) for v in (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h))
    height, width = mask.shape
    l, t, r, b = max(l, 0), max(t, 0), min(r, width), min(b, height)  # crop_with_mask
    # maskmine's one guard beyond OVSeg (whose crop fails on an empty box): at least 1x1, inside the image
    l, t = min(l, width - 1), min(t, height - 1)
    r, b = max(r, l + 1), max(b, t + 1)
    fill = [255.0 * c for c in config.mean] if config.fill == "mean" else [0.0, 0.0, 0.0]
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    keep = torch.from_numpy(mask).float()[None, t:b, l:r]
    canvas = torch.cat([pixels.new_full((1, b - t, r - l), fill_value=v) for v in fill])
    region = pixels[:, t:b, l:r] * keep + (1 - keep) * canvas
    if config.resize == "pad":
        side = max(r - l, b - t)
        oy, ox = (side - (b - t)) // 2, (side - (r - l)) // 2
        square = torch.cat([pixels.new_full((1, side, side), fill_value=v) for v in fill])
        square[:, oy : oy + b - t, ox : ox + r - l] = region
        square_keep = torch.zeros(1, side, side)
        square_keep[:, oy : oy + b - t, ox : ox + r - l] = keep
        region, keep = square, square_keep
    mean = torch.Tensor(config.mean).reshape(1, 3, 1, 1) * 255.0
    std = torch.Tensor(config.std).reshape(1, 3, 1, 1) * 255.0
    size = (config.input_size, config.input_size)
    crop = F.interpolate((region[None] - mean) / std, size=size, mode="bicubic")[0]
    crop_mask = F.interpolate(keep[None], size=size, mode="nearest")[0, 0] > 0.5
    return crop, crop_mask.numpy(), (l, t, r - l, b - t)


def assert_matches_reference(image: np.ndarray, masks: np.ndarray, config: CropConfig) -> float:
    """Both strategies against the reference; returns the batched path's largest difference."""
    loop = masked_crops(image, masks, config, strategy="loop")
    batched = masked_crops(image, masks, config, strategy="batched")
    assert len(loop) == len(batched) == len(masks)
    worst = 0.0
    for mask, a, b in zip(masks, loop, batched):
        crop, crop_mask, box = reference_crop(image, mask, config)
        assert a.box == b.box == box
        np.testing.assert_array_equal(a.mask, crop_mask)
        np.testing.assert_array_equal(b.mask, crop_mask)
        assert torch.equal(a.clip_input, crop)  # the loop is OVSeg's code path itself
        assert b.clip_input.shape == crop.shape and b.clip_input.dtype == torch.float32
        worst = max(worst, float((b.clip_input - crop).abs().max()))
    assert worst <= ATOL, worst
    return worst


def blob_masks(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Ellipses of many sizes with ragged edges (thresholded soft masks look like this)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:height, :width]
    masks = np.zeros((count, height, width), dtype=bool)
    for k in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.5, height / 2), rng.uniform(0.5, width / 2)
        masks[k] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & (rng.random((height, width)) > 0.1)
        masks[k, min(int(cy), height - 1), min(int(cx), width - 1)] = True
    return masks


def edge_masks(height: int, width: int) -> np.ndarray:
    """1-pixel masks (corners and inside), thin lines, masks on every border, the full image."""
    masks = []
    for y, x in [(0, 0), (height - 1, width - 1), (0, width - 1), (height // 2, width // 3)]:
        m = np.zeros((height, width), bool)
        m[y, x] = True
        masks.append(m)
    for rows, cols in [(slice(None), slice(0, 1)), (slice(0, 1), slice(None)), (slice(None), slice(width - 2, None)),
                       (slice(height - 3, None), slice(2, 9)), (slice(None), slice(None)), (slice(3, 5), slice(0, width))]:
        m = np.zeros((height, width), bool)
        m[rows, cols] = True
        masks.append(m)
    m = np.zeros((height, width), bool)  # two far pixels: a box that is almost all background
    m[1, 2] = m[height - 2, width - 3] = True
    masks.append(m)
    return np.stack(masks)


CONFIGS = [
    CropConfig(),
    CropConfig(resize="pad"),
    CropConfig(expand_ratio=1.5),
    CropConfig(expand_ratio=2.0, resize="pad", fill="zero"),
    CropConfig(input_size=17),  # downscaling and upscaling both
    CropConfig(input_size=64, expand_ratio=1.25),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.resize}-{c.fill}-x{c.expand_ratio}-{c.input_size}")
def test_random_and_edge_masks_match_ovsegs_crop(config: CropConfig) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    masks = np.concatenate([blob_masks(12, 61, 83, seed=2), edge_masks(61, 83)])
    assert_matches_reference(image, masks, config)


def test_coco_sized_image_with_many_masks_in_several_chunks() -> None:
    """A 480x640 image, 40 masks, cut in chunks small enough that no chunk holds them all."""
    from maskmine.transforms import masked_crop

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    masks = np.concatenate([blob_masks(36, 480, 640, seed=4), edge_masks(480, 640)[[0, 1, 8, 9]]])
    config = CropConfig()
    whole = masked_crops(image, masks, config, strategy="batched")
    chunked = masked_crop._batched_crops(image, masks, config, torch.device("cpu"), chunk_bytes=2**20)
    for a, b in zip(whole, chunked):  # chunking changes nothing
        assert torch.equal(a.clip_input, b.clip_input) and np.array_equal(a.mask, b.mask) and a.box == b.box
    assert_matches_reference(image, masks, config)


def test_real_coco_masks(coco_cc_by) -> None:
    """Instance masks of the committed COCO images (their polygons rasterised by pycocotools)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    data = json.loads((coco_cc_by / "annotations" / "instances_train2017.json").read_text())
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    checked = 0
    for info in sorted(data["images"], key=lambda i: i["id"])[:4]:
        anns = by_image.get(info["id"], [])
        h, w = info["height"], info["width"]
        masks = []
        for ann in anns:
            seg = ann["segmentation"]
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else (
                mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg)
            m = mask_utils.decode(rle)
            m = (m.max(axis=2) if m.ndim == 3 else m).astype(bool)
            if m.any():
                masks.append(m)
        if not masks:
            continue
        with Image.open(coco_cc_by / "train2017" / info["file_name"]) as im:
            image = np.asarray(im.convert("RGB"))
        for config in (CropConfig(), CropConfig(resize="pad", expand_ratio=1.2)):
            assert_matches_reference(image, np.stack(masks), config)
        checked += len(masks)
    assert checked >= 10


def test_soft_masks_torch_masks_and_devices() -> None:
    """Soft masks are binarised ``> threshold`` on the device as numpy does; torch masks and device
    strings are taken; auto loops on the CPU (bit for bit the loop) and a missing CUDA is refused."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    soft = rng.random((6, 30, 40)).astype(np.float32) * 0.6
    soft[:, 10:20, 5:25] += 0.4
    soft[2, 0, 0] = np.float32(0.4)  # exactly at the threshold: out (strict, as OVSeg)
    config = CropConfig(threshold=0.4)
    binary = soft > 0.4
    expected = masked_crops(image, binary, config, strategy="loop")
    for masks in (soft, torch.from_numpy(soft), torch.from_numpy(binary)):
        for device in (None, "cpu", torch.device("cpu")):
            got = masked_crops(image, masks, config, device=device, strategy="batched")
            assert [c.box for c in got] == [c.box for c in expected]
            assert all(np.array_equal(a.mask, b.mask) for a, b in zip(got, expected))
            assert max(float((a.clip_input - b.clip_input).abs().max()) for a, b in zip(got, expected)) <= ATOL
    auto = masked_crops(image, soft, config, device="cpu")
    assert "cpu" not in BATCHED_DEVICE_TYPES
    assert all(torch.equal(a.clip_input, b.clip_input) for a, b in zip(auto, expected))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            masked_crops(image, soft, config, device="cuda")
    with pytest.raises(ValueError, match="empty mask"):
        masked_crops(image, np.zeros((2, 30, 40), bool), config, strategy="batched")
    with pytest.raises(ValueError, match="strategy"):
        masked_crops(image, binary, config, strategy="fast")
    assert masked_crops(image, np.zeros((0, 30, 40), bool), config, strategy="batched") == []


def test_tolerance_has_teeth() -> None:
    """The mistakes a batched resize could make move these crops far beyond ATOL."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    masks = blob_masks(6, 61, 83, seed=7)
    config = CropConfig()
    batched = masked_crops(image, masks, config, strategy="batched")
    mean = torch.Tensor(config.mean).reshape(1, 3, 1, 1) * 255.0
    std = torch.Tensor(config.std).reshape(1, 3, 1, 1) * 255.0
    for mask, got in zip(masks, batched):
        x, y, w, h = got.box
        keep = torch.from_numpy(mask[y : y + h, x : x + w]).float()[None]
        fill = torch.tensor([255.0 * c for c in config.mean]).view(3, 1, 1)
        region = torch.from_numpy(image[y : y + h, x : x + w]).permute(2, 0, 1).float() * keep + (1 - keep) * fill
        normalised = (region[None] - mean) / std
        half = F.interpolate(normalised, size=(224, 224), mode="bicubic", align_corners=True)[0]
        shifted = F.interpolate(torch.roll(normalised, 1, dims=3), size=(224, 224), mode="bicubic")[0]
        edge = F.interpolate(F.pad(normalised, (1, 1, 1, 1), mode="constant", value=0.0), size=(226, 226),
                             mode="bicubic")[0, :, 1:-1, 1:-1]  # zero beyond the box instead of its edge
        for wrong in (half, shifted, edge):
            assert float((got.clip_input - wrong).abs().max()) > 50 * ATOL
