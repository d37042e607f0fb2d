"""How a region becomes CLIP's input: :class:`CropConfig`, its choices and ranges, torch-free.

The settings of :mod:`maskmine.transforms.masked_crop`'s crop (which needs torch), declared
here so that a command's parser (``pipelines/cli_options.add_crop_arguments``) takes its
choices, ranges and defaults without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from maskmine.transforms.errors import SettingError
from maskmine.transforms.ranges import POSITIVE_FLOAT, POSITIVE_INT, Range, check_choice

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
MEAN_VALUE = Range(float, lo=0.0, hi=1.0)  # a channel's mean pixel, as a fraction of 255


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

    def __post_init__(self) -> None:
        """Refuse a value out of its range or choices, however the config is made (flags, a run.json,
        a checkpoint, a library caller): a SettingError named as the command line's setting
        (``expand_ratio`` is ``--crop-expand``'s ``crop_expand``)."""
        POSITIVE_INT.check("crop_input_size", self.input_size)
        CROP_EXPAND.check("crop_expand", self.expand_ratio)
        MASK_THRESHOLD.check("mask_threshold", self.threshold)
        check_choice("crop_fill", self.fill, get_args(CropFill))
        check_choice("crop_resize", self.resize, get_args(CropResize))
        check_choice("crop_resample", self.resample, get_args(CropResample))
        for setting, values, rng in (("crop_mean", self.mean, MEAN_VALUE), ("crop_std", self.std, POSITIVE_FLOAT)):
            if len(values) != 3:
                raise SettingError(setting, f"must be 3 numbers (R, G, B), got {len(values)}")
            for value in values:
                rng.check(setting, value)

    def fill_pixel(self) -> np.ndarray:
        """The PIL crop's uint8 fill (the mean rounded; ``fill`` is checked on construction)."""
        if self.fill == "zero":
            return np.zeros(3, dtype=np.uint8)
        return np.round(np.asarray(self.mean) * 255.0).astype(np.uint8)

    def fill_values(self) -> list[float]:
        """The torch crop's fill, as OVSeg's adapter.py lines 97-101: ``[255.0 * c for c in mean]``."""
        if self.fill == "zero":
            return [0.0, 0.0, 0.0]
        return [255.0 * c for c in self.mean]
