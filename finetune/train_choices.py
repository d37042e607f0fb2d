"""The choices of ``maskmine train``'s ``--mode`` and ``--loss``, and OVSeg's augmentation scale, torch-free.

Declared here, not beside the model, the losses and the augmentation (which need torch), so that the
command's parser takes them without importing torch.
"""
from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["prompt", "full", "full+prompt"]
MODES: tuple[str, ...] = get_args(Mode)

LossKind = Literal["clip", "clip-plain", "vocab"]
"""``maskmine train --loss``: :func:`maskmine.finetune.losses.clip_contrastive_loss` with same-noun
negatives masked (``clip``) or with every other row a negative (``clip-plain``, OVSeg's ClipLoss), or
:func:`maskmine.finetune.losses.vocab_cross_entropy` (``vocab``)."""
LOSSES: tuple[str, ...] = get_args(LossKind)

# OVSeg's RandomResizedCrop scale range of the training crops, its --scale_min / --scale_max defaults
# (training/params.py; finetune/augment.py).
OVSEG_AUGMENT_SCALE = (0.9, 1.0)
