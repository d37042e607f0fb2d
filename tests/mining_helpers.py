"""The tests' standard mining job: a COCO folder (the committed coco_cc_by, or coco-mini), ground-truth proposals, the tiny random CLIP, on CPU."""
from __future__ import annotations

from pathlib import Path

from maskmine.pipelines.mine import MineConfig
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.proposals.factory import ProposalSpec

TINY_CLIP = ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu")


def coco_mini_config(coco_mini: Path, out: Path, **overrides) -> MineConfig:
    """A MineConfig over ``coco_mini`` writing to ``out``; ``overrides`` set any other field."""
    settings = dict(
        captions=str(coco_mini / "annotations" / "captions_train2017.json"),
        instances=str(coco_mini / "annotations" / "instances_train2017.json"),
        images=str(coco_mini / "train2017"),
        out=str(out),
        proposals=ProposalSpec(backend="coco-gt", device="cpu"),
        clip=TINY_CLIP,
    )
    settings.update(overrides)
    return MineConfig(**settings)


def mine_command(coco_mini: Path, out: Path, *extra: str, threads: int = 1) -> list[str]:
    """`maskmine mine` as a fresh process on a COCO folder (coco-gt, tiny CLIP, CPU) with an explicit torch thread count.

    Byte-identical tars hold between runs with the same thread count; runs
    compared in tests are all made this way, in fresh processes, so no run
    inherits a long-lived pytest process's torch state.
    """
    import sys

    ann = coco_mini / "annotations"
    return [
        sys.executable, "-m", "maskmine.pipelines.cli", "mine",
        "--captions", str(ann / "captions_train2017.json"), "--instances", str(ann / "instances_train2017.json"),
        "--images", str(coco_mini / "train2017"), "--out", str(out), "--proposals", "coco-gt",
        "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu",
        "--no-progress", "--torch-threads", str(threads), *extra,
    ]
