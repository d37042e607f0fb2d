"""Command-line flags that several subcommands share, defined once so their meaning cannot drift."""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maskmine.transforms.clip_models import ClipSpec
    from maskmine.transforms.proposals.factory import SamOptions


def add_clip_arguments(group: argparse._ActionsContainer) -> None:
    """``--clip-model`` and ``--clip-pretrained`` as ``maskmine.transforms.clip_models.load_clip`` reads them."""
    group.add_argument("--clip-model", default="ViT-B-16",
                       help="open_clip model name, 'sample' or 'maskmine-tiny' (default ViT-B-16)")
    group.add_argument("--clip-pretrained", default=None,
                       help="open_clip pretrained tag, checkpoint file, or 'none' for random weights "
                            "(default: openai where open_clip has it, the committed checkpoint for "
                            "--clip-model sample, random otherwise)")
    group.add_argument("--clip-activation", choices=("auto", "quick_gelu", "gelu"), default="auto",
                       help="transformer activation: auto (default) builds QuickGELU where the weights were "
                            "trained with it (every openai tag, -quickgelu configs, exports that record it), "
                            "as OVSeg; quick_gelu forces it; gelu keeps open_clip's config as it is")


def clip_spec(args: argparse.Namespace) -> "ClipSpec":
    """The ClipSpec of ``--clip-model``, ``--clip-pretrained`` and ``--device``."""
    from maskmine.transforms.clip_models import ClipSpec

    return ClipSpec(model=args.clip_model, pretrained=args.clip_pretrained, device=args.device,
                    activation=args.clip_activation)


def add_sam_filter_arguments(group: argparse._ActionsContainer) -> None:
    """SAM's automatic-mask-generator grid and filters (its own defaults), for ``eval`` and ``demo``."""
    group.add_argument("--sam-points-per-side", type=POSITIVE_INT, default=32, metavar="N",
                       help="SAM automatic mask generator point grid (default 32)")
    group.add_argument("--sam-pred-iou-thresh", type=FRACTION, default=0.88, metavar="T",
                       help="SAM: drop masks whose predicted IoU is below T (default 0.88)")
    group.add_argument("--sam-stability-thresh", type=FRACTION, default=0.95, metavar="T",
                       help="SAM: drop masks whose stability score is below T (default 0.95)")


def sam_options(args: argparse.Namespace, box_nms_thresh: float | None = None) -> "SamOptions":
    """The SamOptions of :func:`add_sam_filter_arguments`'s flags; ``box_nms_thresh`` None is SAM's default."""
    from maskmine.transforms.proposals.factory import SamOptions

    return SamOptions(
        points_per_side=args.sam_points_per_side,
        pred_iou_thresh=args.sam_pred_iou_thresh,
        stability_score_thresh=args.sam_stability_thresh,
        **({} if box_nms_thresh is None else {"box_nms_thresh": box_nms_thresh}),
    )


def _bound_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def number(kind: type = float, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False):
    """An argparse ``type=`` for a finite ``kind`` (int or float) in a range.

    A value outside it is an argparse error, so the command stops with one
    line, ``maskmine COMMAND: error: argument --flag: must be ...``, before any work.
    """
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {_bound_text(lo, hi, lo_open, hi_open)}, got {text}")
        return value

    parse.__name__ = "integer" if kind is int else "number"
    return parse


POSITIVE_INT = number(int, lo=1)
NON_NEGATIVE_INT = number(int, lo=0)
FRACTION = number(float, lo=0.0, hi=1.0)
POSITIVE_FLOAT = number(float, lo=0.0, lo_open=True)
NON_NEGATIVE_FLOAT = number(float, lo=0.0)


def check_out_dir(path: str, flag: str) -> None:
    """An output folder must be a folder (or not exist yet) that this process can write in.

    Raises UserError naming the problem, before any work starts.
    """
    import os
    import tempfile
    from pathlib import Path

    from maskmine.transforms.errors import UserError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    existing = out
    while not existing.exists():  # the nearest folder that exists is where it will be created
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    try:  # a real write, not os.access: root passes os.access on a read-only mount
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".maskmine-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {existing}: {exc.strerror or exc}") from None
