"""The choices of ``maskmine train``'s ``--mode`` and ``--loss``, torch-free.

Declared here, not beside the model and the losses (which need torch), so that the
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
