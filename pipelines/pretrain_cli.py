"""``maskmine pretrain-sample-clip``: train the small CLIP behind ``--clip-model sample``."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from maskmine.pipelines.cli_options import add_pretrain_arguments, pretrain_settings

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
    from maskmine.finetune.pretrain_config import CONTRASTIVE_BATCH, PretrainConfig

    add_pretrain_arguments(p, PretrainConfig, "checkpoint path", "initialisation, batches and crops",
                           "val images for the sanity metrics", batch_size=CONTRASTIVE_BATCH)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.finetune.pretrain_sample import PretrainConfig, pretrain

    config = pretrain_settings(PretrainConfig, args)
    command = "maskmine " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    record = pretrain(config, progress=args.progress, command=command)
    summary = {k: record[k] for k in ("steps", "final_loss", "train_seconds", "wall_seconds", "checkpoint_bytes")}
    summary["sanity"] = {k: v for k, v in record["sanity"].items() if k != "crop_accuracy_per_class"}
    print(json.dumps({"checkpoint": args.out, **summary}, indent=1))
    return 0
