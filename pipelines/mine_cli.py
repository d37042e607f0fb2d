"""``maskmine mine``: the dataset-building job."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE
from maskmine.pipelines.cli_options import POSITIVE_FLOAT, POSITIVE_INT, add_clip_arguments, number, check_out_dir
from maskmine.pipelines.mine import RETRYABLE_REASONS, MineConfig, run_mining
from maskmine.transforms import storage, run_lock
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS
from maskmine.transforms.errors import UserError
from maskmine.transforms.devices import PRECISIONS
from maskmine.transforms.masked_crop import CropConfig, CropFill, CropResample, CropResize
from maskmine.transforms.pairing import LABELS, LABELS_NOUNS
from maskmine.transforms.proposals.factory import BACKENDS, DEFAULT_MASKFORMER_CHECKPOINT, SAM_MODEL_TYPES, ProposalSpec
from maskmine.transforms.run_folder import RUN_FILE

HELP = "mine (masked crop, noun) pairs from COCO Captions into WebDataset shards (Apache Beam)"
DESCRIPTION = """\
Mine (masked crop, noun) pairs from COCO-format captions with Apache Beam.

Reads captions (and instances), extracts nouns with NLTK, makes class-agnostic
mask proposals, pairs each noun with the proposal CLIP finds most similar, and
writes OUT/pairs-NNNNNN.tar (WebDataset), OUT/parquet/*.parquet (one row per
pair), OUT/stats.json, OUT/rejects.jsonl and OUT/vocabulary.json.

A shard is a task: each shard is written and committed (manifest last) as
soon as its own images are done, while the rest of the job runs. Rerunning
with the same --out resumes: shards whose manifest entry exists are skipped,
the rest are mined again, with identical results (for the same
--torch-threads). --retry-skipped missing-image,corrupt-image re-mines only
the images skipped for those reasons and rewrites only their shards.

Arguments not listed here are Beam pipeline options and go to Beam, e.g.
  --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2
--runner DirectRunner (the default) runs in process, without Beam's Prism download.
  --runner DaskRunner --dask_client_address tcp://HOST:8786   (a dask.distributed cluster)
Runner options are checked before any work (pipelines/runner_config.py); check a
finished run with 'maskmine verify OUT'.

One job per --out: a second command on a folder a live job holds stops at once
(status 2) naming it; a killed job's lock is taken over. SIGINT/SIGTERM end the
job with one line (status 130/143) and a full disk with one line (status 1);
rerunning the same command resumes either way.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("input and output")
    io.add_argument("--captions", required=True, help="COCO captions JSON (captions_train2017.json)")
    io.add_argument("--images", required=True, help="folder of the images named in the captions file")
    io.add_argument("--out", required=True, help="run folder for shards, Parquet table and stats")
    io.add_argument("--instances", help="COCO instances JSON; needed by --proposals coco-gt and --labels categories")
    io.add_argument("--captions-per-image", type=POSITIVE_INT, default=5, help="use the first N captions per image (OVSeg: 1 or 5; default 5)")
    io.add_argument("--limit", type=POSITIVE_INT, help="mine only the first N images (by image id)")
    io.add_argument("--labels", choices=LABELS, default=LABELS_NOUNS,
                    help="nouns: pair caption nouns with proposals (default); categories: pair every "
                    "ground-truth mask with its category name (validation shards, OVSeg's COCO-GT set)")

    prop = p.add_argument_group("mask proposals")
    prop.add_argument("--proposals", choices=BACKENDS, default="maskformer",
                      help="maskformer (HF transformers), sam (segment_anything) or coco-gt (ground-truth masks, the oracle); default maskformer")
    prop.add_argument("--proposal-checkpoint", default="",
                      help=f"maskformer: hub id or local save_pretrained folder (default {DEFAULT_MASKFORMER_CHECKPOINT}; "
                      "'sample' = the small class-agnostic Mask2Former trained on the sample world, committed; "
                      "'maskmine-tiny' builds a small random Mask2Former for tests); sam: .pth file")
    prop.add_argument("--sam-model-type", default="vit_h", choices=SAM_MODEL_TYPES,
                      help="SAM architecture of the checkpoint (maskmine-tiny: a small random SAM for tests, no checkpoint needed)")
    prop.add_argument("--top-k", type=POSITIVE_INT, default=100, help="keep at most K proposals per image (default 100)")
    prop.add_argument("--min-mask-area", type=number(float, 0.0, 1.0, hi_open=True), default=0.0005, help="drop proposals smaller than this fraction of the image (default 0.0005)")
    prop.add_argument("--dedup-iou", type=number(float, 0.0, 1.0, lo_open=True), default=0.9, help="drop a proposal whose mask IoU with a better one reaches this (default 0.9)")

    clip = p.add_argument_group("CLIP matching")
    add_clip_arguments(clip)
    clip.add_argument("--min-score", type=number(float, -1.0, 1.0), help="drop pairs whose cosine score (-1..1) is below this (counted in stats.json)")
    clip.add_argument("--crop-fill", choices=get_args(CropFill), default="mean", help="background fill of masked crops (default mean: CLIP's mean pixel, as OVSeg)")
    clip.add_argument("--crop-resize", choices=get_args(CropResize), default="stretch", help="stretch the box to a square (OVSeg, default) or pad it to keep its aspect")
    clip.add_argument("--crop-resample", choices=get_args(CropResample), default="torch",
                      help="torch (default): OVSeg's crop, float pixels, unrounded mean fill, torch bicubic "
                           "without antialiasing; pil: maskmine's former uint8 crop with PIL's antialiased bicubic")
    clip.add_argument("--crop-expand", type=number(float, 1.0, 10.0), default=1.0, help="scale the mask's box by this ratio (1..10) before cropping (default 1.0)")
    clip.add_argument("--caption-template", default=DEFAULT_CAPTION_TEMPLATE,
                      help="what each sample's txt member holds: this text with {noun} filled in (default "
                      f"{DEFAULT_CAPTION_TEMPLATE.replace('%', '%%')!r}, the text maskmine train encodes, so open_clip's "
                      "trainer reading txt trains on the same text; recorded in run.json)")
    clip.add_argument("--mask-threshold", type=number(float, 0.0, 1.0, hi_open=True), default=0.5, help="binarise soft masks at this value (default 0.5)")

    run = p.add_argument_group("execution")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    run.add_argument("--precision", default="auto", choices=PRECISIONS, help="proposal model precision on GPU (auto: bf16 where supported)")
    run.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="images per GPU batch (default 8)")
    run.add_argument("--max-batch-bytes", type=POSITIVE_INT,
                     help="byte budget of a GPU batch (decoded images plus proposal masks); an image over it "
                     "travels alone (default: no budget, --batch-size only)")
    run.add_argument("--num-shards", type=POSITIVE_INT,
                     help="number of output shards (default: images / --images-per-shard, but at least 8 "
                     "so that loaders with several workers, such as open_clip's trainer, get a shard each)")
    run.add_argument("--images-per-shard", type=POSITIVE_INT, default=600, help="target images per shard when --num-shards is not given (default 600)")
    run.add_argument("--torch-threads", type=POSITIVE_INT,
                     help="torch CPU threads per worker process (default: the machine's cores ÷ its worker "
                     "processes; byte-identical reruns need the same value)")
    run.add_argument("--retry-skipped", type=_reasons, default=(), metavar="REASONS",
                     help=f"comma-separated skip reasons ({', '.join(RETRYABLE_REASONS)}): re-mine the images a previous "
                     "run in --out skipped for them (after restoring the files) and rewrite only their shards")
    run.add_argument("--max-megapixels", type=POSITIVE_FLOAT, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                     help="skip images over MP megapixels as too-large, judged from the header before decoding "
                     f"(default {DEFAULT_MAX_MEGAPIXELS:g})")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _reasons(value: str) -> tuple[str, ...]:
    reasons = tuple(sorted({r.strip() for r in value.split(",") if r.strip()}))
    if not reasons:
        raise argparse.ArgumentTypeError("give one or more skip reasons, e.g. missing-image,corrupt-image")
    return reasons


def config_from_args(args: argparse.Namespace) -> MineConfig:
    return MineConfig(
        captions=args.captions,
        images=args.images,
        out=args.out,
        instances=args.instances,
        proposals=ProposalSpec(
            backend=args.proposals,
            checkpoint=args.proposal_checkpoint,
            device=args.device,
            precision=args.precision,
            top_k=args.top_k,
            min_area_fraction=args.min_mask_area,
            dedup_iou=args.dedup_iou,
            sam_model_type=args.sam_model_type,
        ),
        clip=ClipSpec(
            model=args.clip_model,
            pretrained=args.clip_pretrained,
            device=args.device,
            activation=args.clip_activation,
            crop=CropConfig(
                fill=args.crop_fill, resize=args.crop_resize,
                expand_ratio=args.crop_expand, threshold=args.mask_threshold, resample=args.crop_resample,
            ),
        ),
        labels=args.labels,
        captions_per_image=args.captions_per_image,
        min_score=args.min_score,
        num_shards=args.num_shards,
        images_per_shard=args.images_per_shard,
        batch_size=args.batch_size,
        max_batch_bytes=args.max_batch_bytes,
        limit=args.limit,
        torch_threads=args.torch_threads,
        retry_skipped=args.retry_skipped,
        max_megapixels=args.max_megapixels,
        caption_template=args.caption_template,
    )


def check_run_file(out: str) -> None:
    """A run.json already in --out must be readable JSON with an identity (a resumed run compares them)."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return
    try:
        run = storage.parse_json(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is damaged ({exc}): remove it or use a new --out folder") from exc
    if not isinstance(run, dict) or not isinstance(run.get("identity"), dict):
        raise UserError(f"{path} is not a maskmine run file (no identity): use a new --out folder")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if "://" not in args.out:  # remote folders are checked by Beam's filesystem
        check_out_dir(args.out, "--out")
    with run_lock.holding(args.out, "mine"):  # this process, the driver, holds --out; Beam's workers do not
        if "://" not in args.out:
            check_run_file(args.out)
        stats = run_mining(config_from_args(args), extra, progress=not args.no_progress)
    print(json.dumps(stats, indent=1))
    return 0
