"""``maskmine pretrain-sample-proposals``: train the small Mask2Former behind ``--proposal-checkpoint sample``."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from maskmine.pipelines.cli_options import POSITIVE_INT, add_pretrain_arguments, pretrain_settings

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
    from maskmine.finetune.pretrain_config import ProposalPretrainConfig

    add_pretrain_arguments(p, ProposalPretrainConfig, "checkpoint folder", "initialisation, batches and flips",
                           "val images for the recall in the record")
    p.add_argument("--queries", type=POSITIVE_INT, dest="num_queries", default=ProposalPretrainConfig.num_queries,
                   help=f"Mask2Former queries: masks per image (default {ProposalPretrainConfig.num_queries})")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.finetune.pretrain_proposals import ProposalPretrainConfig, pretrain_proposals

    config = pretrain_settings(ProposalPretrainConfig, args)
    command = "maskmine " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    record = pretrain_proposals(config, progress=args.progress, command=command)
    summary = {k: record[k] for k in ("steps", "first_loss", "final_loss", "train_seconds", "wall_seconds", "checkpoint_bytes")}
    print(json.dumps({"checkpoint": args.out, **summary, "val_recall": record["val_recall"]}, indent=1))
    return 0
