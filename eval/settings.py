"""The choices and defaults of the segmentation settings ``eval`` and ``demo`` take, torch-free.

Declared here, not in the modules that run them (which need torch), so that a
command's parser takes them without importing torch: OVSeg's mask threshold (its
eval's and its demo's), its test-time size, the demo's inferences and the granularity fusion variants.
"""
from __future__ import annotations

from typing import Literal, get_args

DEFAULT_MASK_THRESHOLD = 0.4  # OVSeg's MODEL.CLIP_ADAPTER.MASK_THR default (open_vocab_seg/config.py)
OVSEG_DEMO_MASK_THRESHOLD = 0.35  # MASK_THR in configs/ovseg_swinB_vitL_demo.yaml line 49

OVSEG_MIN_SIZE_TEST = 640  # INPUT.MIN_SIZE_TEST in every OVSeg config (eval/shortest_edge.py)
OVSEG_MAX_SIZE_TEST = 2560  # INPUT.MAX_SIZE_TEST in every OVSeg config

DEMO_INFERENCES = ("maskmine", "ovseg-demo")  # how the demo paints MaskFormer's masks (eval/demo.py's docstring)

# Granularity fusion's G where nothing else is given: eval's with SAM proposals, and the demo slider's start.
SAM_GRANULARITY = 0.8

FusionMode = Literal["assigned", "ovseg"]  # granularity fusion (eval/fusion.py): one class per mask, or OVSeg's SAM demo
FUSION_MODES: tuple[FusionMode, ...] = get_args(FusionMode)
