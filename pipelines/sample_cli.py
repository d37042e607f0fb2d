"""``maskmine sample``: generate the offline sample scene set (COCO format + semantic layout)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from maskmine.pipelines.cli_options import NON_NEGATIVE_INT, add_progress_argument, settings
from maskmine.transforms.errors import UserError

DESCRIPTION = """\
Generate the sample scene set: images of simple objects, shapes and stuff bands
(sky, grass, water...) with 5 COCO-style captions each, exact instance masks
(RLE, occlusion-aware) and a semantic-segmentation layout.

Writes OUT/images/{train,val}, OUT/annotations/{captions,instances}_{train,val}.json,
OUT/semseg/ (for `maskmine eval --dataset sample --root OUT`) and OUT/README.{txt,json}.
The same --seed gives the same files; val is drawn from --val-seed (default seed+1).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (e.g. data/sample)")
    p.add_argument("--images", type=NON_NEGATIVE_INT, default=2000, help="train images (default 2000)")
    p.add_argument("--val-images", type=NON_NEGATIVE_INT, default=300, help="val images (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train split (default 0)")
    p.add_argument("--val-seed", type=int, help="seed of the val split (default seed + 1)")
    add_progress_argument(p)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.transforms.sample_world.generate import SampleConfig, generate_sample

    if args.images + args.val_images == 0:
        raise UserError("nothing to generate: --images and --val-images are both 0")
    config = settings(SampleConfig, args)
    command = "maskmine " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    info = generate_sample(config, progress=args.progress, command=command)
    print(json.dumps({"out": args.out, "splits": {k: {"images": v["images"], "seed": v["seed"]} for k, v in info["splits"].items()}, "seconds": info["seconds"]}, indent=1))
    return 0
