"""``maskmine eval``: open-vocabulary semantic segmentation on a prepared benchmark, with mIoU."""
from __future__ import annotations

import argparse
from typing import get_args

from maskmine.pipelines.cli_options import (
    FRACTION,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    PROPOSAL_FILTERS,
    add_adapted_argument,
    add_clip_arguments,
    add_device_argument,
    add_mask_threshold_argument,
    add_progress_argument,
    add_proposal_arguments,
    add_proposal_filter_arguments,
    add_sam_filter_arguments,
    add_test_size_argument,
    check_out_dir,
    clip_spec,
    proposal_spec,
    sam_options,
    settings,
)
from maskmine.eval.datasets import CLASS_ORDERS, UNKNOWN_LABELS
from maskmine.eval.settings import FUSION_MODES, SAM_GRANULARITY
from maskmine.eval.templates import TemplateSet

# Eval's proposal backends: the mining oracle's distractors have no place in a benchmark.
EVAL_BACKENDS = ("maskformer", "sam", "coco-gt")

DATASET_CHOICES = (
    "ade20k-150", "ade20k-847", "pascal-context-59", "pascal-context-459", "pascal-voc-20", "sample",
)
DESCRIPTION = """\
Each validation image: class-agnostic mask proposals -> masked crops -> CLIP
class probabilities over the dataset's class names (14 ViLD prompt templates)
-> a per-pixel label map (OVSeg's semantic inference on the soft masks, or SAM
granularity fusion) -> a confusion matrix. As OVSeg: masks binarised at
mask > 0.4 for the crops, no proposal filter, the proposal model's class
softmax over the evaluated classes plus no-object. Writes OUT/metrics.json, OUT/per_class_iou.csv,
OUT/visualisations/*.png and a per-image prediction cache OUT/predictions/
(a rerun with the same settings reuses it: after SIGINT/SIGTERM, status 130/143,
or a full disk, rerun the same command). One eval per --out: a second one on a
folder a live one holds stops at once (status 2), naming it.

Dataset layouts under --root (as the OVSeg, FC-CLIP/ODISE *_d2 and CAT-Seg prepare scripts write them):
  ade20k-150          ADEChallengeData2016/{images,annotations_detectron2}/validation
  ade20k-847          ADE20K_2021_17_01/{images_detectron2,annotations_detectron2}/validation (16-bit .tif)
  pascal-context-59   pascal_ctx_d2/{images,annotations_ctx59}/validation (d2 order), or
                      VOCdevkit/VOC2010/{JPEGImages,annotations_detectron2/pc59_val} (OVSeg or CAT-Seg order)
  pascal-context-459  pascal_ctx_d2/{images,annotations_ctx459}/validation (16-bit .tif), or
                      VOCdevkit/VOC2010/{JPEGImages,annotations_detectron2/pc459_val}
  pascal-voc-20       pascal_voc_d2/{images,annotations_pascal20}/validation, or
                      VOCdevkit/VOC2012/{JPEGImages,annotations_detectron2/val}
  sample              semseg/{images,annotations}/validation + semseg/classes.txt
A classes.txt (one name per line, line k = label k-1) in the label folder or the
dataset's top folder wins over the built-in class lists.

example:
  maskmine eval --dataset ade20k-150 --root datasets --proposals sam \\
      --proposal-checkpoint sam_vit_h.pth --granularity 0.8 \\
      --clip-model ViT-B-16 --clip-pretrained openai --out runs/eval-ade150
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("dataset")
    d.add_argument("--dataset", required=True, choices=DATASET_CHOICES,
                   help="which benchmark's validation split to evaluate")
    d.add_argument("--unknown-labels", choices=UNKNOWN_LABELS, default="error",
                   help="a ground-truth value that is neither a class id nor the dataset's ignore value: "
                        "stop with an error naming the file (default), or count it as ignore")
    d.add_argument("--class-order", choices=CLASS_ORDERS, default=None,
                   help="whose preparation script wrote the labels, where the data cannot tell (PASCAL Context 59 "
                        "at VOCdevkit/VOC2010/annotations_detectron2/pc59_val: ovseg or catseg); default: "
                        "told apart from the data, or a one-line error asking")
    d.add_argument("--root", required=True, metavar="DATA",
                   help="datasets root holding the prepared dataset folder (or that folder itself)")
    d.add_argument("--limit", type=POSITIVE_INT, default=None, metavar="N",
                   help="evaluate only the first N images (sorted by name)")

    p = parser.add_argument_group("proposals")
    add_proposal_arguments(p, EVAL_BACKENDS)
    add_sam_filter_arguments(p)
    add_mask_threshold_argument(p, "segment")
    p.add_argument("--hard-masks", action="store_true",
                   help="semantic inference on the binary masks, pixels no classified mask covers left "
                        "unlabelled (maskmine's earlier variant); default: OVSeg's, on the soft masks")
    add_test_size_argument(p, ". Granularity fusion has no scores: its label map is resized back with nearest "
                              "neighbour; coco-gt regions are cut from the label map resized the same way")
    p.add_argument("--proposal-filters", action="store_true",
                   help="apply maskmine's mining filters to the proposals (minimum objectness, and the "
                        "mining filters group below: --top-k, --min-mask-area, --dedup-iou); default: none, as OVSeg")
    p.add_argument("--granularity", type=FRACTION, default=None, metavar="G",
                   help="SAM granularity fusion: per class keep the masks scoring >= G x the class's "
                        "best mask score and merge them. 1 = only the single best mask per class "
                        f"(precision), lower = merge more parts (recall), 0 = every mask. Default {SAM_GRANULARITY:g} "
                        "with --proposals sam; with maskformer/coco-gt the default is MaskFormer's "
                        "semantic inference, and giving G switches them to fusion too")
    p.add_argument("--fusion-mode", choices=FUSION_MODES, default="assigned",
                   help="granularity fusion variant: 'assigned' (one class per mask) or 'ovseg' "
                        "(OVSeg's SAM demo) (default assigned)")
    p.add_argument("--ensemble-lambda", type=FRACTION, default=None, metavar="L",
                   help="OVSeg's CLIP_ENSEMBLE_WEIGHT: p = p_proposal^(1-L) * p_clip^L with the proposal "
                        "model's own class scores (maskformer only; every class name must be in the "
                        "checkpoint's closed label set); 0 = CLIP alone, as OVSeg. Default: OVSeg's "
                        "evaluation weight (0.7 ADE, 0.6 PASCAL Context, 0.45 VOC, else 0.7) with "
                        "--proposals maskformer when its head scores every class, else CLIP alone")

    add_proposal_filter_arguments(parser.add_argument_group(
        "mining filters", "maskmine's proposal filters, applied with --proposal-filters only (OVSeg: none)"))

    c = parser.add_argument_group("classifier")
    add_clip_arguments(c)
    add_adapted_argument(c)
    c.add_argument("--templates", choices=get_args(TemplateSet), default="vild",
                   help="prompt templates averaged per class: the 14 ViLD ones or 'a photo of a {}.'")
    c.add_argument("--clip-temperature", type=_temperature, default=100.0, metavar="T|model",
                   help="multiplier of CLIP's cosine similarities before the softmax: default 100, OVSeg's "
                        "fixed temperature; 'model' uses the CLIP's own exp(logit_scale) (a trained one "
                        "for --adapted models)")

    o = parser.add_argument_group("output and runtime")
    o.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: metrics.json, per_class_iou.csv, visualisations/, predictions/")
    o.add_argument("--visualise", type=NON_NEGATIVE_INT, default=4, metavar="K",
                   help="write image | ground truth | prediction PNGs for the first K images (default 4)")
    add_device_argument(o)
    add_progress_argument(o)


def _temperature(text: str) -> float | None:
    """``--clip-temperature``: a positive number, or 'model' (None: the CLIP's own)."""
    if text == "model":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'model', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number or 'model', got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> "EvalConfig":
    """The eval settings of the parsed flags."""
    from maskmine.eval.run import EvalConfig
    from maskmine.transforms.errors import UserError

    if args.proposals != "sam" and args.sam_model_type != "vit_h":
        raise UserError("--sam-model-type applies to --proposals sam only")
    if args.proposals == "coco-gt" and args.proposal_checkpoint:
        raise UserError("--proposals coco-gt takes no --proposal-checkpoint")
    if not args.proposal_filters and any(getattr(args, name) is not None for name in PROPOSAL_FILTERS):
        raise UserError("--top-k, --min-mask-area and --dedup-iou are mining filters: they need --proposal-filters")
    granularity = SAM_GRANULARITY if args.granularity is None and args.proposals == "sam" else args.granularity
    return settings(
        EvalConfig, args,
        proposals=proposal_spec(args, sam=sam_options(args)),
        clip=clip_spec(args),
        granularity=granularity,
    )


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.eval.run import run_eval
    from maskmine.transforms import run_lock

    check_out_dir(args.out, "--out")
    config = config_from_args(args)
    with run_lock.holding(args.out, "eval"):  # one eval per --out: they share the prediction cache
        result = run_eval(config, log_fn=print)
    return 0 if result.images else 1
