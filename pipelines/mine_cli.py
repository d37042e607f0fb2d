"""``maskmine mine``: the dataset-building job."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE
from maskmine.pipelines.cli_options import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_clip_arguments,
    add_crop_arguments,
    add_device_argument,
    add_mask_threshold_argument,
    add_precision_argument,
    add_progress_argument,
    add_proposal_arguments,
    add_proposal_filter_arguments,
    check_out_dir,
    clip_spec,
    crop_config,
    number,
    proposal_spec,
    settings,
)
from maskmine.transforms import mine_settings, run_lock, storage
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS
from maskmine.transforms.errors import UserError
from maskmine.transforms.records import LABELS, LABELS_NOUNS, RETRYABLE_REASONS
from maskmine.transforms.proposals.factory import BACKENDS
from maskmine.transforms.run_folder import RUN_FILE

DESCRIPTION = """\
Reads COCO-format captions (and instances), extracts nouns with NLTK, makes
class-agnostic mask proposals, pairs each noun with the proposal CLIP finds most
similar, and writes OUT/pairs-NNNNNN.tar (WebDataset), OUT/parquet/*.parquet (one row per
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
    io.add_argument("--captions-per-image", type=POSITIVE_INT, default=mine_settings.CAPTIONS_PER_IMAGE,
                    help=f"use the first N captions per image (OVSeg: 1 or 5; default {mine_settings.CAPTIONS_PER_IMAGE})")
    io.add_argument("--limit", type=POSITIVE_INT, help="mine only the first N images (by image id)")
    io.add_argument("--labels", choices=LABELS, default=LABELS_NOUNS,
                    help="nouns: pair caption nouns with proposals (default); categories: pair every "
                    "ground-truth mask with its category name (validation shards, OVSeg's COCO-GT set)")

    prop = p.add_argument_group("mask proposals")
    add_proposal_arguments(prop, BACKENDS, default="maskformer")
    add_proposal_filter_arguments(prop)

    clip = p.add_argument_group("CLIP matching")
    add_clip_arguments(clip)
    clip.add_argument("--min-score", type=number(float, -1.0, 1.0), help="drop pairs whose cosine score (-1..1) is below this (counted in stats.json)")
    add_crop_arguments(clip)
    clip.add_argument("--caption-template", default=DEFAULT_CAPTION_TEMPLATE,
                      help="what each sample's txt member holds: this text with {noun} filled in (default "
                      f"{DEFAULT_CAPTION_TEMPLATE.replace('%', '%%')!r}, the text maskmine train encodes, so open_clip's "
                      "trainer reading txt trains on the same text; recorded in run.json)")
    add_mask_threshold_argument(clip, "mine")

    run = p.add_argument_group("execution")
    add_device_argument(run)
    add_precision_argument(run)
    run.add_argument("--batch-size", type=POSITIVE_INT, default=mine_settings.BATCH_SIZE,
                     help=f"images per GPU batch (default {mine_settings.BATCH_SIZE})")
    run.add_argument("--max-batch-bytes", type=POSITIVE_INT,
                     help="byte budget of a GPU batch (decoded images plus proposal masks); an image over it "
                     "travels alone (default: no budget, --batch-size only)")
    run.add_argument("--num-shards", type=POSITIVE_INT,
                     help="number of output shards (default: images / --images-per-shard, but at least "
                          f"{mine_settings.MIN_SHARDS} so that loaders with several workers, such as open_clip's "
                          "trainer, get a shard each)")
    run.add_argument("--images-per-shard", type=POSITIVE_INT, default=mine_settings.IMAGES_PER_SHARD,
                     help=f"target images per shard when --num-shards is not given (default {mine_settings.IMAGES_PER_SHARD})")
    run.add_argument("--torch-threads", type=POSITIVE_INT,
                     help="torch CPU threads per worker process (default: the machine's cores ÷ its worker "
                     "processes; byte-identical reruns need the same value)")
    run.add_argument("--retry-skipped", type=_reasons, default=(), metavar="REASONS",
                     help=f"comma-separated skip reasons ({', '.join(RETRYABLE_REASONS)}): re-mine the images a previous "
                     "run in --out skipped for them (after restoring the files) and rewrite only their shards")
    run.add_argument("--max-megapixels", type=POSITIVE_FLOAT, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                     help="skip images over MP megapixels as too-large, judged from the header before decoding "
                     f"(default {DEFAULT_MAX_MEGAPIXELS:g})")
    add_progress_argument(run)


def _reasons(value: str) -> tuple[str, ...]:
    reasons = tuple(sorted({r.strip() for r in value.split(",") if r.strip()}))
    if not reasons:
        raise argparse.ArgumentTypeError("give one or more skip reasons, e.g. missing-image,corrupt-image")
    return reasons


def config_from_args(args: argparse.Namespace) -> "MineConfig":
    """The mining settings of the parsed flags."""
    from maskmine.pipelines.mine import MineConfig  # Beam and torch: imported to run, not for --help

    return settings(MineConfig, args, proposals=proposal_spec(args), clip=clip_spec(args, crop=crop_config(args)))


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
    from maskmine.pipelines.mine import run_mining

    if not storage.is_remote(args.out):  # remote folders are checked by Beam's filesystem
        check_out_dir(args.out, "--out")
    with run_lock.holding(args.out, "mine"):  # this process, the driver, holds --out; Beam's workers do not
        if not storage.is_remote(args.out):
            check_run_file(args.out)
        stats = run_mining(config_from_args(args), extra, progress=args.progress)
    print(json.dumps(stats, indent=1))
    return 0
