"""Build a proposal backend from a picklable spec (so Beam workers can build their own).

:func:`build_proposal_generator` is the one way to make a generator from settings:
``ProposalSpec`` is the "load" half of a Beam ``ModelHandler`` (what to load, and
where), the generator it returns the "run" half (``generate`` on a batch).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.ranges import FRACTION, POSITIVE_INT, Range
from maskmine.transforms.proposals.base import ProposalFilter, ProposalGenerator
from maskmine.transforms.sample_models import SAMPLE_PROPOSAL_DIR  # noqa: F401 - imported from here too

DEFAULT_MASKFORMER_CHECKPOINT = "facebook/mask2former-swin-large-coco-panoptic"  # the MaskFormer checkpoint when none is named
# ``--proposal-checkpoint sample``: the small class-agnostic Mask2Former trained on the sample world
# (``maskmine pretrain-sample-proposals``), a save_pretrained folder committed with the package.
SAMPLE_PROPOSAL_CHECKPOINT = "sample"

Backend = Literal["coco-gt", "maskformer", "sam", "coco-gt+distractors"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
# SAM's architectures (segment_anything's registry names) and a small random SAM for tests.
SamModelType = Literal["vit_h", "vit_l", "vit_b", "maskmine-tiny"]
SAM_MODEL_TYPES: tuple[SamModelType, ...] = get_args(SamModelType)
SAM_TINY: SamModelType = "maskmine-tiny"  # random weights (proposals/sam.TINY_MODEL_TYPE): needs no checkpoint

# The ranges of maskmine's mining filters: an area fraction of 1 would drop every mask; an IoU
# of 0 every mask that touches a better one. ProposalSpec refuses a top_k or min_area_fraction
# outside its range however it is made; a dedup_iou above 1 is left to library callers, as the
# way to turn that filter off (``eval/proposal_classes.NO_FILTERS``).
MIN_AREA_FRACTION = Range(float, lo=0.0, hi=1.0, hi_open=True)
DEDUP_IOU = Range(float, lo=0.0, hi=1.0, lo_open=True)


@dataclass(frozen=True)
class SamOptions:
    """SAM's automatic mask generator: its point grid and its own mask filters, at SAM's defaults
    (``SamAutomaticMaskGenerator``'s keyword arguments of the same names)."""

    points_per_side: int = 32  # a grid of points_per_side² point prompts over the image
    pred_iou_thresh: float = 0.88  # drop a mask whose predicted IoU is below this
    stability_score_thresh: float = 0.95  # drop a mask whose stability score is below this
    box_nms_thresh: float = 0.7  # drop a mask whose box overlaps a better one's by this IoU

    def __post_init__(self) -> None:
        """Refuse a value out of its range (SettingError naming the command line's setting:
        ``sam_points_per_side`` is ``--sam-points-per-side``), however the options are made."""
        POSITIVE_INT.check("sam_points_per_side", self.points_per_side)
        FRACTION.check("sam_pred_iou_thresh", self.pred_iou_thresh)
        FRACTION.check("sam_stability_thresh", self.stability_score_thresh)
        FRACTION.check("sam_box_nms", self.box_nms_thresh)


@dataclass(frozen=True)
class ProposalSpec:
    """Which proposal backend to build, from what, where, and with which filters.

    ``top_k``, ``min_area_fraction`` and ``dedup_iou`` are maskmine's mining
    filters (MaskFormer and SAM: :attr:`proposal_filter`; flat fields, with the
    filter's defaults, as run.json records them); ``sam_model_type`` and ``sam``
    apply to the SAM backend only.
    """

    backend: Backend = "maskformer"
    checkpoint: str = ""  # hub id or local folder (maskformer; "": DEFAULT_MASKFORMER_CHECKPOINT), .pth file (sam)
    device: str = "auto"
    precision: str = "auto"
    top_k: int = ProposalFilter.top_k
    min_area_fraction: float = ProposalFilter.min_area_fraction
    dedup_iou: float = ProposalFilter.dedup_iou
    sam_model_type: SamModelType = "vit_h"
    sam: SamOptions = field(default_factory=SamOptions)

    @property
    def proposal_filter(self) -> ProposalFilter:
        """The mining filters the MaskFormer and SAM generators apply."""
        return ProposalFilter(top_k=self.top_k, min_area_fraction=self.min_area_fraction, dedup_iou=self.dedup_iou)

    def __post_init__(self) -> None:
        """Refuse ``top_k`` and ``min_area_fraction`` out of their ranges (SettingError naming the
        setting), from flags, a run.json or a library caller alike: the command line's ranges, so
        every spec a command or run folder recorded passes. ``dedup_iou`` is not checked: above 1
        is eval's way to turn it off (``eval/proposal_classes.NO_FILTERS``)."""
        POSITIVE_INT.check("top_k", self.top_k)
        MIN_AREA_FRACTION.check("min_area_fraction", self.min_area_fraction)

    def check(self) -> None:
        """Refuse a SAM without weights before any model loads (SettingError naming the setting:
        the command line names its flag)."""
        if self.backend == "sam" and not self.checkpoint and self.sam_model_type != SAM_TINY:
            raise SettingError("proposal_checkpoint", "must name a SAM .pth file for the sam backend "
                               f"(only `sam_model_type` {SAM_TINY} needs none)")

    def identity(self) -> dict[str, Any]:
        """The spec as a run folder records it: every field, ``sam`` only where it is not SAM's
        defaults on the SAM backend (so folders written before it existed still match)."""
        out = asdict(self)
        if self.backend != "sam" or self.sam == SamOptions():
            out.pop("sam")
        return out

    @classmethod
    def from_identity(cls, identity: dict[str, Any], **changes: Any) -> "ProposalSpec":
        """The spec a run folder recorded (:meth:`identity`), with ``changes`` applied."""
        values = {**identity, **changes}
        if isinstance(values.get("sam"), dict):
            values["sam"] = SamOptions(**values["sam"])
        return cls(**values)


def build_proposal_generator(spec: ProposalSpec) -> ProposalGenerator:
    """The generator ``spec`` describes, with its model loaded (once per worker process)."""
    spec.check()
    if spec.backend == "coco-gt":
        from maskmine.transforms.proposals.coco_gt import CocoGtProposals

        return CocoGtProposals(min_area_fraction=0.0)
    if spec.backend == "coco-gt+distractors":
        from maskmine.transforms.proposals.distractors import CocoGtDistractorProposals

        return CocoGtDistractorProposals()
    if spec.backend == "maskformer":
        from maskmine.transforms.proposals.maskformer import MaskFormerProposals

        return MaskFormerProposals(checkpoint=spec.checkpoint or None, device=spec.device, precision=spec.precision,
                                   proposal_filter=spec.proposal_filter)
    if spec.backend == "sam":
        from maskmine.transforms.proposals.sam import SamProposals

        return SamProposals(checkpoint=spec.checkpoint or None, model_type=spec.sam_model_type, device=spec.device,
                            options=spec.sam, proposal_filter=spec.proposal_filter)
    raise UserError(f"unknown proposal backend {spec.backend!r}: choose from {', '.join(BACKENDS)}")
