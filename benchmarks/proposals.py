"""Proposals on the sample world: class-agnostic mask recall, and the chain mined and evaluated with them.

    python -m benchmarks.proposals --data data/sample [--images 300] [--out results.json]
    python -m benchmarks.proposals --data data/sample --chain runs/bench-proposals \
        [--adapted runs/sample-mpt ...]

Measured as a proposal network is: for every ground-truth instance (things and
stuff bands, every visible instance of ``instances_val.json``), the best IoU
of the generator's top-k masks (its own order, best score first, after
maskmine's mining filters: top-100, IoU de-duplication 0.9, minimum area);
recall@k at IoU t is the fraction of instances whose best IoU is at least t.
Generators: ``--proposals maskformer --proposal-checkpoint sample`` (the small
trained Mask2Former), ``coco-gt+distractors`` (the ground truth plus generated
distractors, in shuffled order: the reference the offline default uses) and
``maskmine-tiny`` (a random Mask2Former: what untrained queries give).

``--chain WORK`` also runs the chain with model proposals, with maskmine's own
commands (each printed): ``maskmine mine`` on the val split with
``--proposals maskformer --proposal-checkpoint sample --clip-model sample``
and, for reference, with ``coco-gt+distractors``; pair precision of both
against chance, a pair counting as right when its mask overlaps a ground-truth
instance of the noun's class at IoU >= 0.5
(:func:`maskmine.transforms.sample_world.scoring.pair_precision`); then
``maskmine eval --dataset sample --proposals maskformer --proposal-checkpoint
sample`` mIoU for the sample CLIP and each ``--adapted`` run.
The tables in docs/sample-world.md come from this script; it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from maskmine.pipelines.cli import main as maskmine

from maskmine.transforms.proposals.factory import SAMPLE_PROPOSAL_CHECKPOINT, ProposalSpec, build_proposal_generator
from maskmine.transforms.proposals.recall import IOUS, TOP_K, Recall, measure_recall

GENERATORS = {
    "maskformer, sample": ProposalSpec(backend="maskformer", checkpoint=SAMPLE_PROPOSAL_CHECKPOINT, device="cpu"),
    "coco-gt+distractors": ProposalSpec(backend="coco-gt+distractors"),
    "maskformer, maskmine-tiny": ProposalSpec(backend="maskformer", checkpoint="maskmine-tiny", device="cpu"),
}


def table(results: dict[str, Recall]) -> str:
    keys = [f"R@{k} IoU {t}" for t in IOUS for k in TOP_K]
    lines = [
        "| proposals | " + " | ".join(keys) + " | proposals/image |",
        "|---|" + "---:|" * (len(keys) + 1),
    ]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r.recall[k]:.3f}" for k in keys) + f" | {r.proposals_per_image:.1f} |")
    return "\n".join(lines)


CHAIN_IOU = 0.5
MINED = {
    "maskformer, sample": ["--proposals", "maskformer", "--proposal-checkpoint", SAMPLE_PROPOSAL_CHECKPOINT],
    "coco-gt+distractors": ["--proposals", "coco-gt+distractors"],
}


def run_command(argv: list[str]) -> float:
    """One maskmine command in process, printed first; its wall seconds."""
    print("\n$ maskmine " + " ".join(shlex.quote(a) for a in argv), flush=True)
    started = time.perf_counter()
    if maskmine(argv) != 0:
        raise SystemExit(f"maskmine {argv[0]} failed")
    return round(time.perf_counter() - started, 1)


def chain(data: Path, work: Path, adapted: list[str], limit: int | None, threads: int = 1) -> dict:
    """Mine val with model proposals (and the reference), score pairs, eval mIoU with model proposals.

    torch runs with ``threads`` threads in every command (mine's ``--torch-threads``; eval runs in
    this process): on a machine shared with other jobs one thread is much faster than two.
    """
    import torch

    from maskmine.transforms.sample_world.scoring import pair_precision

    torch.set_num_threads(threads)
    split = "val"
    limit_args = ["--limit", str(limit)] if limit else []
    out: dict = {"pair_precision": {}, "miou": {}, "seconds": {}}
    for name, flags in MINED.items():
        run = work / f"mine-{name.replace(', ', '-')}"
        out["seconds"][f"mine {name}"] = run_command([
            "mine", "--captions", str(data / "annotations" / f"captions_{split}.json"),
            "--instances", str(data / "annotations" / f"instances_{split}.json"),
            "--images", str(data / "images" / split), "--out", str(run), *flags,
            "--clip-model", "sample", "--device", "cpu", "--torch-threads", str(threads), "--no-progress",
            *limit_args])
        score = pair_precision(run, iou=CHAIN_IOU)
        out["pair_precision"][name] = {k: v for k, v in json.loads(score.to_json()).items() if k != "per_class"}
        print(f"pair precision at IoU {CHAIN_IOU}, {name}: {score.correct}/{score.scored} = "
              f"{score.precision:.3f}, chance {score.chance:.3f}", flush=True)
    models = {"sample CLIP": ["--clip-model", "sample"]}
    models.update({f"adapted {a}": ["--clip-model", "sample", "--adapted", a] for a in adapted})
    for name, flags in models.items():
        folder = work / f"eval-{len(out['miou'])}"
        out["seconds"][f"eval {name}"] = run_command([
            "eval", "--dataset", "sample", "--root", str(data), "--proposals", "maskformer",
            "--proposal-checkpoint", SAMPLE_PROPOSAL_CHECKPOINT, *flags, "--out", str(folder),
            "--device", "cpu", "--no-progress", *limit_args])
        metrics = json.loads((folder / "metrics.json").read_text())
        out["miou"][name] = metrics["mIoU"]
        print(f"eval mIoU with maskformer/sample proposals, {name}: {metrics['mIoU']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="sample set folder (maskmine sample --out)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=None, help="first N images of the split (default all)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--chain", metavar="WORK", help="also mine and evaluate the split with model proposals, in WORK")
    parser.add_argument("--adapted", nargs="*", default=[], metavar="RUN",
                        help="with --chain: also evaluate these `maskmine train` runs' adapted CLIPs")
    parser.add_argument("--no-recall", action="store_true", help="skip the recall table (with --chain)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a busy machine)")
    args = parser.parse_args(argv)
    report: dict = {}
    if args.chain:
        report["chain"] = chain(Path(args.data), Path(args.chain), args.adapted, args.images, args.threads)
    if args.no_recall:
        print(json.dumps(report, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        return
    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Recall] = {}
    for name, spec in GENERATORS.items():
        results[name] = measure_recall(build_proposal_generator(spec), args.data, args.split, args.images)
        print(f"{name}: {json.dumps(results[name].as_dict())}", flush=True)
    print(table(results))
    report["recall"] = {k: v.as_dict() for k, v in results.items()}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
