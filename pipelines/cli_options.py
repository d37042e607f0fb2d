"""The flags several subcommands share, each declared once, and the one way from parsed flags to settings.

Each ``add_*`` function adds one group of flags (device, precision, progress,
proposals, proposal filters, masked crop, CLIP, adapted CLIP, SAM's filters) to a
command's parser with one help text and one range; each range is a
:class:`~maskmine.transforms.ranges.Range` the library checks too, so a value is
refused with the same words at parse time and in library code (where it is a
:class:`~maskmine.transforms.errors.SettingError`, which ``maskmine`` words as the
flag: :func:`flag_error`). :func:`settings` builds a command's settings object from
the parsed flags, field by field, the same way for every command.

A command's own flags (those no other command has) take their defaults from
torch-free homes where there are some (``transforms/mine_settings.py``,
``eval/settings.py``, ...); others still write the number beside the settings
field's, because those settings modules import torch and ``--help`` must not:
``tests/test_cli_options.py`` holds every such pair equal.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

from maskmine.transforms import ranges
from maskmine.transforms.errors import SettingError
from maskmine.transforms.ranges import Range

if TYPE_CHECKING:
    from maskmine.transforms.clip_models import ClipSpec
    from maskmine.transforms.crop_config import CropConfig
    from maskmine.finetune.pretrain_config import SamplePretrainConfig
    from maskmine.transforms.proposals.factory import ProposalSpec, SamOptions

T = TypeVar("T")
P = TypeVar("P", bound="SamplePretrainConfig")
Group = argparse._ActionsContainer


# ---- numbers in a range: argparse ``type=`` functions -------------------------------------------

def arg_type(rng: Range):
    """An argparse ``type=`` for a finite number in ``rng``.

    A value outside it is an argparse error, so the command stops with one
    line, ``maskmine COMMAND: error: argument --flag: must be ...``, before any
    work; the words are :meth:`Range.problem`'s, the library's own.
    """
    def parse(text: str):
        try:
            value = rng.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if rng.kind is int else 'a number'}: {text!r}") from None
        problem = rng.problem(value, shown=text)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer" if rng.kind is int else "number"
    return parse


def number(kind: type = float, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False):
    """:func:`arg_type` of a range only one flag has (``--port``, ``--confidence``)."""
    return arg_type(Range(kind, lo, hi, lo_open, hi_open))


POSITIVE_INT = arg_type(ranges.POSITIVE_INT)
NON_NEGATIVE_INT = arg_type(ranges.NON_NEGATIVE_INT)
FRACTION = arg_type(ranges.FRACTION)
POSITIVE_FLOAT = arg_type(ranges.POSITIVE_FLOAT)
NON_NEGATIVE_FLOAT = arg_type(ranges.NON_NEGATIVE_FLOAT)


# ---- settings from parsed flags -------------------------------------------------------------------

def settings(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """The dataclass ``cls`` from the parsed flags: each field from ``given``, else from the flag whose
    dest is the field's name, else the field's default.

    ``given`` holds the fields that are not one flag (nested specs, values derived
    from several flags); a name in it that is not a field is a bug (TypeError).
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = set(given) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    values = {name: getattr(args, name) for name in names if name not in given and hasattr(args, name)}
    return cls(**values, **given)


MENTION = re.compile(r"`([a-z][a-z0-9_]*)`")  # a setting a library message names: `steps`


def flag_words(parser: argparse.ArgumentParser, message: str) -> str:
    """``message`` with each setting it names in backquotes (`` `steps` ``) worded as the flag of
    ``parser`` that sets it (``--steps``); a name no flag of ``parser`` has stays as it is."""
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return MENTION.sub(lambda m: flags.get(m.group(1), m.group(0)), message)


def flag_error(parser: argparse.ArgumentParser, exc: SettingError) -> str:
    """A library SettingError worded as the flag that set it: ``argument --mask-threshold: must be ...``
    (argparse's words for a refused value), the other settings it names as their flags
    (:func:`flag_words`); the library's own words for a setting no flag of ``parser`` sets."""
    for action in parser._actions:
        if action.dest == exc.setting and action.option_strings:
            return f"argument {'/'.join(action.option_strings)}: {flag_words(parser, exc.problem)}"
    return flag_words(parser, str(exc))


class FlagWords(logging.Filter):
    """maskmine's log lines worded as :func:`flag_words` words its errors: a setting a warning names
    (`` `resume` ``) becomes the flag of ``parser`` that sets it (``--resume``). Other loggers' lines
    are left as they are."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "maskmine":
            message = record.getMessage()
            if "`" in message:
                record.msg, record.args = flag_words(self.parser, message), ()
        return True


# ---- execution --------------------------------------------------------------------------------------

def add_device_argument(group: Group) -> None:
    """``--device``: where every model of the command runs (``transforms/devices.resolve_device`` reads it)."""
    group.add_argument("--device", default="auto",
                       help="where the models run: auto (CUDA when present), cpu, cuda or cuda:N (default auto)")


def add_precision_argument(group: Group) -> None:
    """``--precision``: the proposal model's autocast dtype on a GPU (``transforms/devices.autocast_dtype``)."""
    from maskmine.transforms.devices import PRECISIONS

    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="proposal model precision on GPU (auto: bf16 where supported; default auto)")


def add_progress_argument(group: Group) -> None:
    """``--no-progress``, read as ``args.progress`` (True unless given), the settings objects' field name."""
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# ---- proposals ----------------------------------------------------------------------------------------

BACKEND_HELP = {
    "maskformer": "maskformer: MaskFormer/Mask2Former queries (HF transformers)",
    "sam": "sam: SAM's automatic masks (segment_anything)",
    "coco-gt": "coco-gt: the ground-truth masks, the oracle (mine: the --instances masks; eval: one per class "
               "present in the label map, which measures the classification step alone)",
    "coco-gt+distractors": "coco-gt+distractors: the ground-truth masks plus plausible wrong ones (merged "
                           "instances, parts, background blobs): a benchmark of the matching step",
}


def add_proposal_arguments(group: Group, backends: Iterable[str] | None, default: str | None = None) -> None:
    """``--proposals`` (``backends``; required when ``default`` is None; no flag when ``backends`` is None),
    ``--proposal-checkpoint`` and ``--sam-model-type``."""
    from maskmine.transforms.proposals.factory import DEFAULT_MASKFORMER_CHECKPOINT, SAM_MODEL_TYPES

    if backends is not None:
        backends = tuple(backends)
        group.add_argument("--proposals", choices=backends, default=default, required=default is None,
                           help="mask proposals: " + "; ".join(BACKEND_HELP[b] for b in backends)
                           + (f" (default {default})" if default else ""))
    group.add_argument("--proposal-checkpoint", default="", metavar="CKPT",
                       help="the proposal model: for MaskFormer a hub id or local save_pretrained folder (default "
                            f"{DEFAULT_MASKFORMER_CHECKPOINT}; 'sample' = the small class-agnostic Mask2Former "
                            "trained on the sample world, committed; 'maskmine-tiny' = a tiny random model for tests)"
                            + ("; for --proposals sam the SAM .pth file" if backends and "sam" in backends else ""))
    group.add_argument("--sam-model-type", default="vit_h", choices=SAM_MODEL_TYPES,
                       help="SAM architecture of the checkpoint: vit_h, vit_l, vit_b, or maskmine-tiny "
                            "(tiny random SAM, no checkpoint needed) (default vit_h)")


def add_proposal_filter_arguments(group: Group) -> None:
    """maskmine's mining filters of the proposals; unset (None) is the ProposalSpec's default."""
    from maskmine.transforms.proposals.factory import DEDUP_IOU, MIN_AREA_FRACTION, ProposalSpec

    d = ProposalSpec()
    group.add_argument("--top-k", type=POSITIVE_INT, default=None, metavar="K",
                       help=f"keep at most K proposals per image (default {d.top_k})")
    group.add_argument("--min-mask-area", "--min-area-fraction", dest="min_area_fraction", metavar="F",
                       type=arg_type(MIN_AREA_FRACTION), default=None,
                       help=f"drop proposals smaller than F of the image (default {d.min_area_fraction:g})")
    group.add_argument("--dedup-iou", type=arg_type(DEDUP_IOU), default=None, metavar="IOU",
                       help=f"drop a proposal whose mask IoU with a better one reaches IOU (default {d.dedup_iou:g})")


PROPOSAL_FILTERS = ("top_k", "min_area_fraction", "dedup_iou")


def proposal_spec(args: argparse.Namespace, **given: Any) -> "ProposalSpec":
    """The ProposalSpec of the proposal flags a command has (the others at their defaults)."""
    from maskmine.transforms.proposals.factory import ProposalSpec

    if "backend" not in given and getattr(args, "proposals", None) is not None:
        given["backend"] = args.proposals
    if "checkpoint" not in given and hasattr(args, "proposal_checkpoint"):
        given["checkpoint"] = args.proposal_checkpoint
    for name in PROPOSAL_FILTERS:  # unset filters keep the spec's defaults
        if name not in given and getattr(args, name, None) is None:
            given[name] = getattr(ProposalSpec, name)
    return settings(ProposalSpec, args, **given)


def add_sam_filter_arguments(group: Group) -> None:
    """SAM's automatic-mask-generator grid and filters (SamOptions' defaults, SAM's own), for ``eval`` and ``demo``."""
    from maskmine.transforms.proposals.factory import SamOptions

    d = SamOptions()
    group.add_argument("--sam-points-per-side", type=POSITIVE_INT, default=d.points_per_side, metavar="N",
                       help=f"SAM automatic mask generator point grid (default {d.points_per_side})")
    group.add_argument("--sam-pred-iou-thresh", type=FRACTION, default=d.pred_iou_thresh, metavar="T",
                       help=f"SAM: drop masks whose predicted IoU is below T (default {d.pred_iou_thresh:g})")
    group.add_argument("--sam-stability-thresh", type=FRACTION, default=d.stability_score_thresh, metavar="T",
                       help=f"SAM: drop masks whose stability score is below T (default {d.stability_score_thresh:g})")
    group.add_argument("--sam-box-nms", type=FRACTION, default=d.box_nms_thresh, metavar="T",
                       help=f"SAM: box NMS IoU threshold between masks (default {d.box_nms_thresh:g})")


def sam_options(args: argparse.Namespace) -> "SamOptions":
    """The SamOptions of :func:`add_sam_filter_arguments`'s flags."""
    from maskmine.transforms.proposals.factory import SamOptions

    return SamOptions(
        points_per_side=args.sam_points_per_side,
        pred_iou_thresh=args.sam_pred_iou_thresh,
        stability_score_thresh=args.sam_stability_thresh,
        box_nms_thresh=args.sam_box_nms,
    )


# ---- masked crops ---------------------------------------------------------------------------------------

def add_mask_threshold_argument(group: Group, job: str) -> None:
    """``--mask-threshold`` with its one range (``transforms/crop_config.MASK_THRESHOLD``) and the default of
    ``job``: "mine" (the crops' CropConfig default, 0.5), "segment" (eval: OVSeg's MASK_THR, 0.4) or "demo"
    (the default of its --inference: 0.4, or 0.35 for OVSeg's demo)."""
    from maskmine.eval.settings import DEFAULT_MASK_THRESHOLD, OVSEG_DEMO_MASK_THRESHOLD
    from maskmine.transforms.crop_config import MASK_THRESHOLD, CropConfig

    if job == "mine":
        default, use = CropConfig.threshold, "the masked crops are cut from these"
    elif job == "demo":
        group.add_argument("--mask-threshold", type=arg_type(MASK_THRESHOLD), default=None, metavar="T",
                           help=f"binarise soft masks as mask > T, T {MASK_THRESHOLD.describe()} (at 1 no pixel "
                                f"passes) (default {DEFAULT_MASK_THRESHOLD:g}, OVSeg's MODEL.CLIP_ADAPTER.MASK_THR; "
                                f"{OVSEG_DEMO_MASK_THRESHOLD:g} with --inference ovseg-demo, OVSeg's demo config)")
        return
    else:
        default = DEFAULT_MASK_THRESHOLD
        use = ("a proposal's pixels are those above T: they make its crop, and a mask without any is not "
               "classified (OVSeg's MODEL.CLIP_ADAPTER.MASK_THR default)")
    group.add_argument("--mask-threshold", type=arg_type(MASK_THRESHOLD), default=default, metavar="T",
                       help=f"binarise soft masks as mask > T, T {MASK_THRESHOLD.describe()} "
                            f"(at 1 no pixel passes): {use} (default {default:g})")


def add_test_size_argument(group: Group, detail: str = "") -> None:
    """``--test-size S`` of eval and demo: OVSeg's test-time resize (``eval/shortest_edge.py``, its sizes from ``eval/settings.py``), ``detail``
    appended to its help."""
    from maskmine.eval.settings import OVSEG_MAX_SIZE_TEST, OVSEG_MIN_SIZE_TEST

    group.add_argument("--test-size", type=POSITIVE_INT, default=None, metavar="S",
                       help=f"resize each image so its short side is S (long side at most {OVSEG_MAX_SIZE_TEST}) "
                            "before proposals and crops, and interpolate the class scores back to the image's size "
                            f"(bilinear): OVSeg's test size is {OVSEG_MIN_SIZE_TEST} (INPUT.MIN_SIZE_TEST); default: "
                            f"the image at its own size (maskmine's choice){detail}")


def add_crop_arguments(group: Group) -> None:
    """How a mask becomes CLIP's crop (``transforms/crop_config.CropConfig``), except ``--mask-threshold``."""
    from typing import get_args

    from maskmine.transforms.crop_config import CROP_EXPAND, CropConfig, CropFill, CropResample, CropResize

    d = CropConfig()
    group.add_argument("--crop-fill", choices=get_args(CropFill), default=d.fill,
                       help=f"background fill of masked crops: mean = CLIP's mean pixel, as OVSeg; zero = black "
                            f"(default {d.fill})")
    group.add_argument("--crop-resize", choices=get_args(CropResize), default=d.resize,
                       help=f"stretch the box to a square (OVSeg) or pad it to keep its aspect (default {d.resize})")
    group.add_argument("--crop-resample", choices=get_args(CropResample), default=d.resample,
                       help="torch: OVSeg's crop, float pixels, unrounded mean fill, torch bicubic without "
                            "antialiasing; pil: maskmine's former uint8 crop with PIL's antialiased bicubic "
                            f"(default {d.resample})")
    group.add_argument("--crop-expand", type=arg_type(CROP_EXPAND), default=d.expand_ratio,
                       help=f"scale the mask's box by this ratio ({CROP_EXPAND.describe()}) before cropping "
                            f"(default {d.expand_ratio})")


def crop_config(args: argparse.Namespace) -> "CropConfig":
    """The CropConfig of :func:`add_crop_arguments`' flags and ``--mask-threshold``."""
    from maskmine.transforms.crop_config import CropConfig

    return CropConfig(fill=args.crop_fill, resize=args.crop_resize, expand_ratio=args.crop_expand,
                      threshold=args.mask_threshold, resample=args.crop_resample)


# ---- CLIP -----------------------------------------------------------------------------------------------------

def add_clip_arguments(group: Group) -> None:
    """``--clip-model``, ``--clip-pretrained`` and ``--clip-activation`` as ``transforms.clip_models.load_clip`` reads them."""
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


def clip_spec(args: argparse.Namespace, **given: Any) -> "ClipSpec":
    """The ClipSpec of ``--clip-model``, ``--clip-pretrained``, ``--clip-activation`` and ``--device``."""
    from maskmine.transforms.clip_models import ClipSpec

    return ClipSpec(model=args.clip_model, pretrained=args.clip_pretrained, device=args.device,
                    activation=args.clip_activation, **given)


def add_adapted_argument(group: Group) -> None:
    """``--adapted``: the CLIP a ``maskmine train`` run adapted, instead of the ``--clip-*`` one."""
    group.add_argument("--adapted", default=None, metavar="RUN_DIR",
                       help="use the adapted CLIP of a `maskmine train` run, with the crop settings recorded "
                            "in its export (overrides --clip-model/--clip-pretrained)")


# ---- the two sample-model trainers ---------------------------------------------------------------------------

def add_pretrain_arguments(p: argparse.ArgumentParser, config: "type[SamplePretrainConfig]", out_help: str,
                           seed_of: str, eval_help: str, batch_size: Range = ranges.POSITIVE_INT) -> None:
    """The flags ``pretrain-sample-clip`` and ``pretrain-sample-proposals`` share; defaults from ``config``
    (their config dataclass, whose class attributes are its defaults); ``batch_size`` is the trainer's range.
    :func:`pretrain_settings` reads them back."""
    schedule = config.schedule
    p.add_argument("--data", default="data/sample", help="sample set folder (default data/sample)")
    p.add_argument("--out", default=config.out, help=f"{out_help} (default {config.out})")
    p.add_argument("--steps", type=POSITIVE_INT, default=schedule.steps,
                   help=f"optimizer steps (default {schedule.steps})")
    p.add_argument("--batch-size", type=arg_type(batch_size), default=schedule.batch_size,
                   help=f"images per step (default {schedule.batch_size})")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=schedule.lr,
                   help=f"peak learning rate, AdamW, cosine schedule (default {schedule.lr:g})")
    p.add_argument("--seed", type=int, default=config.seed, help=f"seed of {seed_of} (default {config.seed})")
    p.add_argument("--threads", type=POSITIVE_INT, default=config.threads,
                   help=f"torch CPU threads (default {config.threads}: fastest on a busy machine; results depend on it)")
    p.add_argument("--eval-images", type=NON_NEGATIVE_INT, default=config.eval_images,
                   help=f"{eval_help} (0: skip; default {config.eval_images})")
    add_progress_argument(p)


def pretrain_settings(cls: "type[P]", args: argparse.Namespace) -> "P":
    """The pretrainer's config from :func:`add_pretrain_arguments`' flags: ``--steps``, ``--batch-size``
    and ``--lr`` replace those of its default schedule (its warmup and weight decay are not flags)."""
    schedule = dataclasses.replace(cls.schedule, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    return settings(cls, args, schedule=schedule)


# ---- output folders -------------------------------------------------------------------------------------------

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
