"""Build a proposal backend from a picklable spec (so Beam workers can build their own)."""
from __future__ import annotations

from dataclasses import dataclass

from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.base import ProposalGenerator

BACKENDS = ("coco-gt", "maskformer", "sam", "coco-gt+distractors")
DEFAULT_MASKFORMER_CHECKPOINT = "facebook/mask2former-swin-large-coco-panoptic"


@dataclass(frozen=True)
class ProposalSpec:
    backend: str = "maskformer"
    checkpoint: str = ""  # hub id or local folder (maskformer), .pth file (sam)
    device: str = "auto"
    precision: str = "auto"
    top_k: int = 100
    min_area_fraction: float = 0.0005
    dedup_iou: float = 0.9
    sam_model_type: str = "vit_h"


def build_proposal_generator(spec: ProposalSpec) -> ProposalGenerator:
    if spec.backend == "coco-gt":
        from maskmine.transforms.proposals.coco_gt import CocoGtProposals

        return CocoGtProposals(min_area_fraction=0.0)
    if spec.backend == "coco-gt+distractors":
        from maskmine.transforms.proposals.distractors import CocoGtDistractorProposals

        return CocoGtDistractorProposals()
    if spec.backend == "maskformer":
        from maskmine.transforms.proposals.maskformer import MaskFormerProposals

        return MaskFormerProposals(
            checkpoint=spec.checkpoint or DEFAULT_MASKFORMER_CHECKPOINT,
            device=spec.device,
            precision=spec.precision,
            top_k=spec.top_k,
            min_area_fraction=spec.min_area_fraction,
            dedup_iou=spec.dedup_iou,
        )
    if spec.backend == "sam":
        from maskmine.transforms.proposals.sam import TINY_MODEL_TYPE, SamProposals

        if not spec.checkpoint and spec.sam_model_type != TINY_MODEL_TYPE:
            raise UserError("--proposals sam needs --proposal-checkpoint PATH (a SAM .pth file)")
        return SamProposals(
            checkpoint=spec.checkpoint or None,
            model_type=spec.sam_model_type,
            device=spec.device,
            top_k=spec.top_k,
            min_area_fraction=spec.min_area_fraction,
            dedup_iou=spec.dedup_iou,
        )
    raise UserError(f"unknown proposal backend {spec.backend!r}: choose from {', '.join(BACKENDS)}")
