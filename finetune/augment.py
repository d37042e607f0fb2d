"""OVSeg's training augmentation of a masked crop: ``RandomResizedCrop(scale=(0.9, 1.0))``.

OVSeg's training transform (open_clip_training/src/open_clip/transform.py lines 127-140,
facebookresearch/ov-seg@36f49d4) is ``RandomResizedCrop(image_size, scale=(scale_min,
scale_max), interpolation=BICUBIC)`` on the PIL crop, defaults ``--scale_min 0.9
--scale_max 1.0`` (training/params.py). Here torchvision's own ``RandomResizedCrop.get_params``
draws the window (ratio (3/4, 4/3), its default) under a seed taken from the stream's
seeded RNG, so a resumed epoch draws the same windows; the image is resized with PIL
bicubic like OVSeg's, the crop's mask with the same window, nearest-neighbour.

Differences from OVSeg, by construction of the data: OVSeg's crops are image files at
the region's own size, maskmine's shards hold them at CLIP's input size already, so the
window is taken from that; OVSeg's stage 2 recovers the mask from the pixels that equal
(124, 116, 103) after the augmentation (transform.py lines 72-84), maskmine crops its
stored mask with the same window.
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF


def random_resized_crop(pixels: np.ndarray, mask: np.ndarray, size: int, scale: Sequence[float],
                        rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (S, S, 3) uint8, mask (S, S) bool) of a random window of the crop, resized to ``size``."""
    image = Image.fromarray(pixels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(63))
        top, left, height, width = RandomResizedCrop.get_params(image, list(scale), [3.0 / 4.0, 4.0 / 3.0])
    out = TF.resized_crop(image, top, left, height, width, [size, size], InterpolationMode.BICUBIC)
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255)
    out_mask = TF.resized_crop(mask_image, top, left, height, width, [size, size], InterpolationMode.NEAREST)
    return np.asarray(out), np.asarray(out_mask) > 127
