"""The embedded default's proof: does mining + mask adaptation work on the sample world?

    python -m benchmarks.sample --work runs/bench-sample [--seeds 0 1] [--images 2000 --val-images 300]

For each seed, with maskmine's own commands (each printed as it runs):

1. ``maskmine sample``: the scene set (train split from the seed, val from seed + 1);
2. ``maskmine mine --proposals coco-gt+distractors --clip-model sample`` on train and
   on val; pair precision on val (the chosen mask is the ground-truth instance of
   the noun's category) against chance (a proposal drawn uniformly per noun);
   and val mined with model proposals (``--proposals maskformer --proposal-checkpoint
   sample``), its pair precision counting a mask right at IoU >= 0.5;
3. ``maskmine mine --labels categories --proposals coco-gt`` on val: validation
   shards whose samples carry their ground-truth class;
4. ``maskmine train`` on the mined train pairs, ``--mode prompt``, ``full`` and
   ``full+prompt`` (both at once), plus OVSeg's two stages: ``full``, then
   ``--mode prompt --init`` the finetuned, frozen model;
5. OVSeg's "COCO GT" ablation: ``maskmine mine --labels categories --proposals
   coco-gt`` on the train split (every ground-truth mask paired with its class:
   the ceiling for mined pairs), trained ``full`` and ``full``, then ``prompt``;
6. masked-crop top-1/top-5 accuracy over the val vocabulary for the sample CLIP
   as is and every adapted model;
7. ``maskmine eval --dataset sample --proposals coco-gt`` mIoU for the same models.

The learning rates are explicit (``--lr`` for runs that train CLIP weights,
``--prompt-lr`` for the prompts): OVSeg's defaults (5e-6 and 0.05) are meant for a
pretrained ViT-L/14 and thousands of steps, not for the small sample CLIP.

Writes ``results.json`` and a Markdown table (``results.md``) under ``--work``.
The figures in docs/benchmarks.md come from this script; it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maskmine.pipelines.cli import main as maskmine
from maskmine.transforms.run_folder import TAR_GLOB

MODELS = ("sample CLIP", "prompt", "full", "full+prompt", "full, then prompt",
          "GT pairs: full", "GT pairs: full, then prompt")


@dataclass
class SeedResult:
    seed: int
    commands: list[str] = field(default_factory=list)
    pair_precision: dict[str, Any] = field(default_factory=dict)
    pair_precision_maskformer: dict[str, Any] = field(default_factory=dict)  # model proposals, IoU >= 0.5
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    miou: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_command(result: SeedResult, argv: list[str], stage: str) -> None:
    """Run one maskmine command in process, recording it and its wall time."""
    line = "maskmine " + " ".join(shlex.quote(a) for a in argv)
    print(f"\n$ {line}", flush=True)
    result.commands.append(line)
    start = time.perf_counter()
    code = maskmine(argv)
    result.seconds[stage] = result.seconds.get(stage, 0.0) + time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{line} failed with exit code {code}")


def slug(name: str) -> str:
    return name.replace(", then ", "-then-").replace(":", "").replace(" ", "-")


def mine_args(data: Path, split: str, out: Path, *extra: str) -> list[str]:
    return [
        "mine", "--captions", str(data / "annotations" / f"captions_{split}.json"),
        "--instances", str(data / "annotations" / f"instances_{split}.json"),
        "--images", str(data / "images" / split), "--out", str(out),
        "--clip-model", "sample", "--no-progress", *extra,
    ]


def crop_accuracy(model_dir: Path | None, val_shards: str) -> dict[str, float]:
    """Top-1/top-5 over the validation shards' vocabulary, with the trainer's own validator."""
    from maskmine.finetune.adapted import load_adapted
    from maskmine.finetune.data import PairStream, expand_shards
    from maskmine.finetune.model import MaskPromptCLIP
    from maskmine.finetune.validation import Validator
    from maskmine.finetune.vocab import vocabulary_for_shards
    from maskmine.transforms.clip_models import MINING_TEMPLATES, encode_texts, load_clip

    if model_dir is None:
        clip = load_clip("sample", None, "cpu")
        model = MaskPromptCLIP(clip.model, mode="full")  # no prompts: the plain CLIP forward
    else:
        adapted = load_adapted(model_dir, "cpu")
        clip, model = adapted.clip, adapted.model
    urls = expand_shards(val_shards)
    vocabulary = vocabulary_for_shards(urls)
    stream = PairStream(urls, vocabulary, clip.crop_config, 128, shuffle_buffer=0, seed=0)
    validator = Validator(stream, encode_texts(clip, vocabulary, MINING_TEMPLATES))
    return validator(model, torch.device("cpu"))


def shard_pattern(run: Path) -> str:
    tars = sorted(run.glob(TAR_GLOB))
    if not tars:
        raise SystemExit(f"{run} holds no shards")
    first, last = tars[0].stem.split("-")[1], tars[-1].stem.split("-")[1]
    return str(run / f"pairs-{{{first}..{last}}}.tar") if first != last else str(tars[0])


def run_seed(args: argparse.Namespace, seed: int) -> SeedResult:
    from maskmine.transforms.sample_world.scoring import pair_precision

    result = SeedResult(seed)
    work = Path(args.work) / f"seed-{seed}"
    data = work / "data"
    run_command(result, ["sample", "--out", str(data), "--images", str(args.images),
                         "--val-images", str(args.val_images), "--seed", str(seed), "--no-progress"], "sample")
    run_command(result, mine_args(data, "train", work / "train-pairs", "--proposals", "coco-gt+distractors"), "mine")
    run_command(result, mine_args(data, "val", work / "val-pairs", "--proposals", "coco-gt+distractors"), "mine")
    precision = pair_precision(work / "val-pairs")
    result.pair_precision = json.loads(precision.to_json())
    print(f"pair precision (val, seed {seed}): {precision.to_json()}", flush=True)
    run_command(result, mine_args(data, "val", work / "val-pairs-maskformer", "--proposals", "maskformer",
                                  "--proposal-checkpoint", "sample"), "mine")
    result.pair_precision_maskformer = json.loads(pair_precision(work / "val-pairs-maskformer", iou=0.5).to_json())
    run_command(result, mine_args(data, "val", work / "val-gt", "--proposals", "coco-gt", "--labels", "categories"),
                "mine")
    run_command(result, mine_args(data, "train", work / "train-gt", "--proposals", "coco-gt", "--labels",
                                  "categories"), "mine")
    train_shards, val_shards = shard_pattern(work / "train-pairs"), shard_pattern(work / "val-gt")
    gt_shards = shard_pattern(work / "train-gt")
    common = ["--batch-size", str(args.batch_size), "--weight-decay", str(args.weight_decay),
              "--warmup-steps", str(args.warmup_steps), "--epochs", str(args.epochs), "--workers", "0",
              "--seed", str(seed), "--device", "cpu", "--save-every", "100000", "--val-every", "100000"]
    lr, prompt_lr = str(args.lr), str(args.prompt_lr)
    runs = {
        "prompt": ["--shards", train_shards, "--clip-model", "sample", "--mode", "prompt", "--lr", prompt_lr],
        "full": ["--shards", train_shards, "--clip-model", "sample", "--mode", "full", "--lr", lr],
        "full+prompt": ["--shards", train_shards, "--clip-model", "sample", "--mode", "full+prompt", "--lr", lr,
                        "--prompt-lr", prompt_lr],
        # OVSeg's two stages: full finetuning, then prompts on the finetuned, frozen model.
        "full, then prompt": ["--shards", train_shards, "--init", str(work / "train-full"), "--mode", "prompt",
                              "--lr", prompt_lr],
        # OVSeg's "COCO GT" row: ground-truth masks paired with their category names.
        "GT pairs: full": ["--shards", gt_shards, "--clip-model", "sample", "--mode", "full", "--lr", lr],
        "GT pairs: full, then prompt": ["--shards", gt_shards, "--init", str(work / f"train-{slug('GT pairs: full')}"),
                                        "--mode", "prompt", "--lr", prompt_lr],
    }
    for name, flags in runs.items():
        out = work / f"train-{slug(name)}"
        run_command(result, ["train", "--out", str(out), *flags, *common, "--no-progress"], "train")
    model_dirs: dict[str, Path | None] = {"sample CLIP": None, **{n: work / f"train-{slug(n)}" for n in runs}}
    for name, folder in model_dirs.items():
        result.accuracy[name] = crop_accuracy(folder, val_shards)
        print(f"masked-crop accuracy, {name}: {result.accuracy[name]}", flush=True)
        out = work / f"eval-{slug(name)}"
        flags = ["--clip-model", "sample"] + ([] if folder is None else ["--adapted", str(folder)])
        run_command(result, ["eval", "--dataset", "sample", "--root", str(data), "--proposals", "coco-gt",
                             *flags, "--out", str(out), "--device", "cpu", "--no-progress"], "eval")
        result.miou[name] = json.loads((out / "metrics.json").read_text())["mIoU"]
    return result


def table(results: list[SeedResult]) -> str:
    lines = ["| seed | pair precision (val) | chance | maskformer/sample proposals: precision / chance | "
             + " | ".join(f"{m}: top-1 / mIoU" for m in MODELS) + " |",
             "|---|---|---|---|" + "---|" * len(MODELS)]
    for r in results:
        cells = [f"{100 * r.accuracy[m]['val_top1']:.1f}% / {r.miou[m]:.1f}" for m in MODELS]
        p, q = r.pair_precision, r.pair_precision_maskformer
        lines.append(f"| {r.seed} | {100 * p['precision']:.1f}% | {100 * p['chance']:.1f}% | "
                     f"{100 * q['precision']:.1f}% / {100 * q['chance']:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench-sample", help="working folder (one sub-folder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sample-set seeds (default 0 1)")
    parser.add_argument("--images", type=int, default=2000, help="train images per seed")
    parser.add_argument("--val-images", type=int, default=300, help="val images per seed")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs over the mined train pairs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="learning rate of the CLIP weights (modes full, full+prompt); default 1e-4")
    parser.add_argument("--prompt-lr", type=float, default=1e-3,
                        help="learning rate of the prompts (prompt; full+prompt; full, then prompt); default 1e-3")
    parser.add_argument("--weight-decay", type=float, default=0.2,
                        help="weight decay of >= 2-D non-norm CLIP weights (default 0.2, maskmine train's default)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = [run_seed(args, seed) for seed in args.seeds]
    work = Path(args.work)
    (work / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    (work / "results.md").write_text(table(results) + "\n")
    print("\n" + table(results))


if __name__ == "__main__":
    main()
