"""Ground-truth instance masks as proposals: the oracle that isolates matching."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from maskmine.transforms.annotations import PROBLEM_EMPTY_MASK, AnnotationProblem, check_segmentation, reject
from maskmine.transforms.proposals.base import ProposalGenerator
from maskmine.transforms.records import ImageRecord, Instance, ProposalSet


def instance_mask(instance: Instance, height: int, width: int) -> np.ndarray:
    """Decode a COCO polygon or RLE segmentation to a (H, W) bool mask.

    Raises AnnotationProblem (never a pycocotools error) when the
    segmentation is malformed or an RLE's size is not ``height`` x ``width``.
    """
    seg = instance.segmentation
    check_segmentation(seg, height, width)
    if isinstance(seg, list):
        rles = mask_utils.frPyObjects(seg, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def instance_masks(record: ImageRecord, height: int, width: int, include_crowd: bool = False) -> tuple[list[Instance], list[np.ndarray]]:
    """The record's usable instances and their masks; each malformed one goes to ``record.rejects``,
    and so does one whose mask holds no pixel of the image (``empty-mask``: a polygon outside the
    image or thinner than a pixel would otherwise vanish without a word)."""
    kept, masks = [], []
    for inst in record.instances:
        if inst.iscrowd and not include_crowd:
            continue
        try:
            mask = instance_mask(inst, height, width)
            if not mask.any():
                raise AnnotationProblem(PROBLEM_EMPTY_MASK, "the segmentation covers no pixel of the image")
            masks.append(mask)
        except AnnotationProblem as exc:
            if not any(r.get("annotation_id") == inst.annotation_id for r in record.rejects):
                record.rejects.append(reject(inst.annotation_id, exc.problem, exc.detail))
            continue
        kept.append(inst)
    return kept, masks


class CocoGtProposals(ProposalGenerator):
    """Every non-crowd instance of the image is a proposal with score 1.

    Crowd regions are left out (they are not one object). ``labels`` carries
    the category names, which the ``--labels categories`` mode pairs with the
    masks instead of caption nouns.
    """

    name = "coco-gt"

    def __init__(self, min_area_fraction: float = 0.0, include_crowd: bool = False) -> None:
        self.min_area_fraction = min_area_fraction
        self.include_crowd = include_crowd
        self.checkpoint = ""

    def propose(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        out = []
        for image, record in zip(images, records):
            height, width = image.shape[:2]
            kept, masks = instance_masks(record, height, width, self.include_crowd)
            labels = [i.category for i in kept]
            areas = [m.sum() for m in masks]
            min_area = max(1.0, self.min_area_fraction * height * width)
            keep = [k for k, area in enumerate(areas) if area >= min_area]
            stacked = (
                np.stack([masks[k] for k in keep]) if keep else np.zeros((0, height, width), bool)
            )
            out.append(
                ProposalSet(
                    masks=stacked,
                    scores=np.ones(len(keep), np.float32),
                    backend=self.name,
                    labels=[labels[k] for k in keep],
                )
            )
        return out


__all__ = ["CocoGtProposals", "instance_mask", "instance_masks"]
