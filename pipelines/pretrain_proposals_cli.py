"""``maskmine pretrain-sample-proposals``: train the small Mask2Former behind ``--proposal-checkpoint sample``."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from maskmine.pipelines.cli_options import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT
from maskmine.transforms.proposals.factory import SAMPLE_PROPOSAL_DIR

HELP = "train the small class-agnostic Mask2Former (--proposal-checkpoint sample) on the sample set's instance masks"
DESCRIPTION = """\
Train a small Hugging Face Mask2Former (Swin backbone, 128 px square input, 50
queries, one class "object") on a sample set's train split (`maskmine sample --out DATA`):
every visible instance mask, things and stuff bands, is a class-agnostic target, as
OVSeg's proposal network learns COCO panoptic's segments; the loss is the model's own
(Hungarian matching, mask BCE + dice + class). Writes a save_pretrained folder (fp16
weights; default: the one `--proposal-checkpoint sample` loads) and a JSON record beside
it (command, seed, steps, losses, wall time, mask recall on the val split).
Deterministic for a given seed and thread count; about 30 minutes on a busy 2-core
machine (4000 train images, 800 steps of 16).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/sample", help="sample set folder (default data/sample)")
    p.add_argument("--out", default=str(SAMPLE_PROPOSAL_DIR), help=f"checkpoint folder (default {SAMPLE_PROPOSAL_DIR})")
    p.add_argument("--steps", type=POSITIVE_INT, default=800, help="optimizer steps (default 800)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="images per step (default 16)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=5e-4, help="peak learning rate, AdamW, cosine schedule (default 5e-4)")
    p.add_argument("--queries", type=POSITIVE_INT, default=50, help="Mask2Former queries: masks per image (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and flips (default 0)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="torch CPU threads (default 1: fastest on a busy machine; results depend on it)")
    p.add_argument("--eval-images", type=NON_NEGATIVE_INT, default=100, help="val images for the recall in the record (0: skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.finetune.pretrain_proposals import ProposalPretrainConfig, pretrain_proposals

    config = ProposalPretrainConfig(
        data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        num_queries=args.queries, seed=args.seed, threads=args.threads, eval_images=args.eval_images,
    )
    command = "maskmine " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    record = pretrain_proposals(config, progress=not args.no_progress, command=command)
    summary = {k: record[k] for k in ("steps", "first_loss", "final_loss", "train_seconds", "wall_seconds", "checkpoint_bytes")}
    print(json.dumps({"checkpoint": args.out, **summary, "val_recall": record["val_recall"]}, indent=1))
    return 0
