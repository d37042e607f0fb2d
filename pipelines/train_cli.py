"""``maskmine train``: adapt CLIP to masked crops from mined shards."""
from __future__ import annotations

import argparse
import json

from maskmine.finetune.train_choices import LOSSES, MODES, OVSEG_AUGMENT_SCALE
from maskmine.pipelines.cli_options import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_clip_arguments,
    add_device_argument,
    add_progress_argument,
    check_out_dir,
    clip_spec,
    settings,
)
DESCRIPTION = """\
Trains on the WebDataset shards written by `maskmine mine`. Crops stream from
the shards (shuffle buffer, split by node and DataLoader worker); malformed
samples are skipped and counted. The class vocabulary is the
set of nouns in the training shards, read from the mining run's Parquet table
(or --vocabulary), with stable sorted indices.

Modes: prompt (CLIP frozen, only mask prompts train), full (image tower trains,
no prompts), full+prompt (both at once: maskmine's mode). The text tower is always
locked. OVSeg's recipe is two stages: `--mode full`, then `--mode prompt --init
RUN_OF_FULL` (prompts tuned on the finetuned, frozen CLIP).

Defaults that are OVSeg's (its open_clip_training scripts and params.py): --lr
5e-6 for full, 0.05 for prompt; warmup 100 steps then cosine; AdamW betas
(0.9, 0.98), eps 1e-6; weight decay 0.2 on >= 2-D non-norm weights only (none
on norms, biases, logit_scale, prompts); the last partial batch dropped;
prompt depth 3; batch 128; logit_scale trains (clamped at ln 100) in every
mode; RandomResizedCrop(scale=(0.9, 1.0)) on the training crops. maskmine's
choices: --loss clip masks same-noun negatives (OVSeg: clip-plain);
full+prompt's prompts at --prompt-lr.

The run's context travels with its shards: its run.json (crop settings),
manifest entries (sample counts for --epochs, the nouns of the vocabulary) and
stats.json (the run is finished) are read beside the shards by the same scheme
(local, file://, http(s)://, gs://, pipe:), so training over HTTP or a pipe
behaves as over local files. The crops are used with the crop settings of the
mining run that wrote the shards; shards of runs with different crop settings
are refused, and so are shards of an unfinished run unless --allow-partial.

Writes to --out: train.json (settings), metrics.jsonl (loss, lr, samples/s,
skips per step; val top-1/top-5), checkpoints/step-N/ every --save-every steps
(atomic; --resume continues from the newest one exactly), and at the end the
adapted model: model.pt (full modes; open_clip loads it with pretrained=PATH),
prompts.pt (prompt modes), config.json and vocabulary.json.

One job per --out: a second train on a folder a live one holds stops at once
(status 2) naming it. SIGINT/SIGTERM end training with one line (status
130/143); rerun with --resume to continue from the newest checkpoint.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--shards", required=True,
                      help="training shards: brace pattern, '::'-joined list, local paths, URLs or pipe: "
                      "commands, e.g. 'runs/coco-pairs/pairs-{000000..000199}.tar'")
    data.add_argument("--allow-partial", action="store_true",
                      help="train on the committed shards of a mining run that is unfinished (still being mined, "
                      "or stopped); without it such shards are refused")
    data.add_argument("--out", required=True, help="output folder for checkpoints, metrics and the adapted model")
    data.add_argument("--vocabulary",
                      help="class vocabulary: a vocabulary.json / Parquet / text file (a path or URL) or a mining "
                      "run folder (default: the nouns of the training shards, from their manifest entries)")
    data.add_argument("--val-shards",
                      help="validation shards whose nouns are ground-truth classes (e.g. mined with "
                      "--labels categories): masked-region zero-shot top-1/top-5 over their own vocabulary")
    data.add_argument("--val-every", type=POSITIVE_INT, default=500, help="validate every N optimizer steps (default 500)")
    data.add_argument("--val-limit", type=POSITIVE_INT, help="validate on at most N regions (default: all)")
    data.add_argument("--workers", type=NON_NEGATIVE_INT, default=4, help="DataLoader worker processes (default 4; 0: in process)")
    data.add_argument("--shuffle-buffer", type=NON_NEGATIVE_INT, default=1000,
                      help="samples in each worker's shuffle buffer; 0 disables shuffling (default 1000)")
    data.add_argument("--resample", action="store_true",
                      help="draw shards with replacement forever (step-based training); a resume then starts "
                      "a fresh stream instead of the exact position")

    model = p.add_argument_group("model")
    add_clip_arguments(model)
    model.add_argument("--mode", choices=MODES, default="prompt",
                       help="prompt: CLIP frozen, only mask prompts train; full: image tower trains, no prompts; "
                       "full+prompt: both (default prompt)")
    model.add_argument("--init", metavar="RUN",
                       help="with --mode prompt: start from the finetuned CLIP of a `--mode full` run or "
                       "export (its model.pt; the CLIP flags are then ignored): OVSeg's second stage")
    model.add_argument("--prompt-depth", type=NON_NEGATIVE_INT,
                       help="layers with mask prompts: 1 = input only, D > 1 adds deep prompts to layers 1..D-1 "
                       "(default 3 as OVSeg, capped at the number of vision layers)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--loss", choices=LOSSES, default="clip",
                     help="clip: in-batch contrastive loss against 'a photo of a {noun}.' with same-noun "
                     "negatives masked (default; maskmine's choice); clip-plain: OVSeg's ClipLoss, one "
                     "text per crop, the noun itself as OVSeg's text (no template), every other row a "
                     "negative; vocab: cross-entropy over the whole vocabulary (the six mining templates)")
    opt.add_argument("--batch-size", type=POSITIVE_INT, default=128,
                     help="crops per micro-batch (default 128: OVSeg's global batch, 32 per GPU on 4 GPUs)")
    opt.add_argument("--freeze-logit-scale", action="store_true",
                     help="keep CLIP's temperature fixed (default: it trains, no weight decay, clamped at "
                     "ln 100 after each step, at the prompts' rate in mode prompt, as OVSeg's two stages)")
    opt.add_argument("--augment-scale", type=POSITIVE_FLOAT, nargs=2, metavar=("MIN", "MAX"), default=OVSEG_AUGMENT_SCALE,
                     help="RandomResizedCrop scale range of the training crops (default "
                          f"{' '.join(map(str, OVSEG_AUGMENT_SCALE))}, as OVSeg)")
    opt.add_argument("--no-augment", action="store_true", help="train on the crops as mined, no RandomResizedCrop")
    opt.add_argument("--accum-steps", type=POSITIVE_INT, default=1,
                     help="micro-batches per optimizer step (gradient accumulation; default 1)")
    opt.add_argument("--lr", type=POSITIVE_FLOAT,
                     help="peak AdamW learning rate: of the CLIP weights in modes full and full+prompt "
                     "(default 5e-6, OVSeg's finetuning rate for a pretrained ViT-L/14), of the prompts in "
                     "mode prompt (default 0.05, OVSeg's mask prompt tuning rate)")
    opt.add_argument("--prompt-lr", type=POSITIVE_FLOAT,
                     help="mode full+prompt only: the prompts' peak rate (default 0.05; maskmine's choice, "
                     "OVSeg never trains both at once)")
    opt.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.2,
                     help="AdamW weight decay of the >= 2-D CLIP weights outside norm layers (default 0.2, "
                     "as OVSeg); norms, biases, logit_scale and the prompts never decay")
    opt.add_argument("--warmup-steps", type=NON_NEGATIVE_INT, default=100,
                     help="linear warmup steps before the cosine decay (default 100, as OVSeg)")
    opt.add_argument("--steps", type=POSITIVE_INT,
                     help="optimizer steps in total (default 10000 unless --epochs is given)")
    opt.add_argument("--epochs", type=POSITIVE_INT,
                     help="without --steps: stop after this many passes over the shards (the cosine "
                     "schedule's length is estimated from the manifests' sample counts); --steps wins if both are given")
    opt.add_argument("--seed", type=int, default=0, help="seed of the prompts' init, shard order and shuffle (default 0)")

    run = p.add_argument_group("execution")
    run.add_argument("--save-every", type=POSITIVE_INT, default=1000, help="write a checkpoint every N steps (default 1000)")
    run.add_argument("--keep-checkpoints", type=NON_NEGATIVE_INT, default=2, help="keep the newest N checkpoints (default 2; 0 keeps all)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    run.add_argument("--stop-after", type=POSITIVE_INT,
                     help="end this invocation after step N with a checkpoint (for time-limited jobs; resume later)")
    add_device_argument(run)
    add_progress_argument(run)


def config_from_args(args: argparse.Namespace) -> "TrainConfig":
    """The training settings of the parsed flags."""
    from maskmine.finetune.train import TrainConfig

    return settings(
        TrainConfig, args,
        clip=clip_spec(args),
        steps=args.steps if args.steps is not None else (None if args.epochs is not None else 10000),
        train_logit_scale=not args.freeze_logit_scale,
        augment_scale=None if args.no_augment else list(args.augment_scale),
    )


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.finetune.train import train
    from maskmine.transforms import run_lock

    check_out_dir(args.out, "--out")
    config = config_from_args(args)
    with run_lock.holding(args.out, "train"):
        result = train(config)
    summary = {
        "out": str(result.out),
        "step": result.step,
        "total_steps": result.total_steps,
        "finished": result.finished,
        "final_loss": result.losses[-1] if result.losses else None,
        "samples": result.samples,
        "skipped": result.skipped,
        "last_validation": result.validations[-1] if result.validations else None,
        "seconds": round(result.seconds, 1),
    }
    print(json.dumps(summary, indent=1))
    return 0
