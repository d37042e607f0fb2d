"""``maskmine pretrain-sample-clip``: train the small CLIP behind ``--clip-model sample``."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from maskmine.pipelines.cli_options import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT
from maskmine.transforms.clip_models import SAMPLE_CHECKPOINT

HELP = "train the small sample CLIP (--clip-model sample) on the sample set's whole images and captions"
DESCRIPTION = """\
Train the small open_clip model `maskmine-sample` contrastively on (whole image,
caption) pairs of a sample set's train split (`maskmine sample --out DATA`),
then write an fp16 checkpoint (default: the one `--clip-model sample` loads)
and a JSON record beside it (command, seed, steps, loss, wall time, and sanity
metrics on the val split: caption retrieval and masked-crop classification).
Deterministic for a given seed and thread count; about 12 minutes on a busy 2-core machine
(10000 train images, 1000 steps of 128).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/sample", help="sample set folder (default data/sample)")
    p.add_argument("--out", default=str(SAMPLE_CHECKPOINT), help=f"checkpoint path (default {SAMPLE_CHECKPOINT})")
    p.add_argument("--steps", type=POSITIVE_INT, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128, help="images per step (default 128)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3, help="peak learning rate, cosine schedule (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and crops (default 0)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="torch CPU threads (default 1: fastest on a busy machine; results depend on it)")
    p.add_argument("--eval-images", type=NON_NEGATIVE_INT, default=300, help="val images for the sanity metrics (0: skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.finetune.pretrain_sample import PretrainConfig, pretrain

    config = PretrainConfig(
        data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, threads=args.threads, eval_images=args.eval_images,
    )
    command = "maskmine " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    record = pretrain(config, progress=not args.no_progress, command=command)
    summary = {k: record[k] for k in ("steps", "final_loss", "train_seconds", "wall_seconds", "checkpoint_bytes")}
    summary["sanity"] = {k: v for k, v in record["sanity"].items() if k != "crop_accuracy_per_class"}
    print(json.dumps({"checkpoint": args.out, **summary}, indent=1))
    return 0
