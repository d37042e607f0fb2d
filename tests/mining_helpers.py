"""The tests' standard mining job: coco-mini, ground-truth proposals, the tiny random CLIP, on CPU."""
from __future__ import annotations

from pathlib import Path

from maskmine.pipelines.mine import MineConfig
from maskmine.pipelines.stages import ClipSpec
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
