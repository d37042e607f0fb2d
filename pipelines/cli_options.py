"""Command-line flags that several subcommands share, defined once so their meaning cannot drift."""
from __future__ import annotations

import argparse


def add_clip_arguments(group: argparse._ActionsContainer) -> None:
    """``--clip-model`` and ``--clip-pretrained`` as ``maskmine.transforms.clip_models.load_clip`` reads them."""
    group.add_argument("--clip-model", default="ViT-B-16",
                       help="open_clip model name, 'sample' or 'maskmine-tiny' (default ViT-B-16)")
    group.add_argument("--clip-pretrained", default=None,
                       help="open_clip pretrained tag, checkpoint file, or 'none' for random weights "
                            "(default: openai where open_clip has it, the committed checkpoint for "
                            "--clip-model sample, random otherwise)")


def add_sam_filter_arguments(group: argparse._ActionsContainer) -> None:
    """SAM's automatic-mask-generator grid and filters (its own defaults), for ``eval`` and ``demo``."""
    group.add_argument("--sam-points-per-side", type=int, default=32, metavar="N",
                       help="SAM automatic mask generator point grid (default 32)")
    group.add_argument("--sam-pred-iou-thresh", type=float, default=0.88, metavar="T",
                       help="SAM: drop masks whose predicted IoU is below T (default 0.88)")
    group.add_argument("--sam-stability-thresh", type=float, default=0.95, metavar="T",
                       help="SAM: drop masks whose stability score is below T (default 0.95)")
