"""MaskFormer proposals as OVSeg's eval uses them: soft masks and class scores.

:func:`maskformer_eval_proposals` runs the same forward pass as
:class:`maskmine.transforms.proposals.maskformer.MaskFormerProposals` (reusing its
helpers) but keeps every query's soft sigmoid mask, with no mining filter by
default, for OVSeg's soft-mask semantic inference.

Only MaskFormer/Mask2Former has a class head, for OVSeg's geometric ensemble with
CLIP. Its columns are the checkpoint's label set (``config.id2label``), so the
ensemble is possible when every evaluated class name is one of those labels
(e.g. an ADE-150 semantic checkpoint evaluated on ADE-150). Names match
case-insensitively, and a comma-separated name ("car, auto") matches through any
of its synonyms. The softmax runs over the evaluated classes plus "no object"
(:func:`restricted_class_probs`), as OVSeg's head scores exactly those.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from maskmine.eval.semantic import proposal_class_probs
from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.base import filter_proposals
from maskmine.transforms.proposals.maskformer import (
    MaskFormerProposals,
    masks_to_image,
    objectness_from_class_logits,
    valid_region,
)
from maskmine.transforms.records import ProposalSet


def _synonyms(name: str) -> set[str]:
    return {s.strip().lower() for s in str(name).split(",") if s.strip()}


def class_columns(model_labels: Sequence[str], class_names: Sequence[str]) -> list[int]:
    """For each class name, the index of the model label it matches; UserError naming the misses."""
    index: dict[str, int] = {}
    for k, label in enumerate(model_labels):
        for syn in _synonyms(label):
            index.setdefault(syn, k)
    columns: list[int] = []
    missing: list[str] = []
    for name in class_names:
        hit = next((index[s] for s in sorted(_synonyms(name)) if s in index), None)
        if hit is None:
            missing.append(name)
        else:
            columns.append(hit)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise UserError(
            f"the ensemble needs the proposal model to score every class, but {len(missing)} of "
            f"{len(class_names)} class names are not in its label set ({shown}); "
            "drop --ensemble-lambda to classify with CLIP alone"
        )
    return columns


def model_labels(generator: MaskFormerProposals) -> list[str]:
    """The checkpoint's class names in column order."""
    id2label = getattr(generator.model.config, "id2label", None) or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _trace_indices(
    all_masks: np.ndarray, all_scores: np.ndarray, kept_masks: np.ndarray, kept_scores: np.ndarray
) -> list[int]:
    """Which input row each kept (mask, score) came from (filter_proposals copies rows)."""
    used: set[int] = set()
    out: list[int] = []
    for mask, score in zip(kept_masks, kept_scores):
        candidates = np.flatnonzero(all_scores == score)
        hit = next(
            (int(i) for i in candidates if int(i) not in used and np.array_equal(all_masks[i], mask)),
            None,
        )
        if hit is None:
            raise RuntimeError("a kept proposal does not match any query (filter changed masks)")
        used.add(hit)
        out.append(hit)
    return out


# "no filter" settings for the generators' own filters (maskmine's mining filters are off in eval)
NO_FILTERS = {"top_k": 10**9, "min_area_fraction": 0.0, "dedup_iou": 1.01}


def restricted_class_probs(logits: torch.Tensor | np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(Q, L+1) closed-set logits (last column "no object") -> (Q, C) over the evaluated classes.

    OVSeg's semantic inference takes ``softmax(logits)[..., :-1]`` where its logits are
    over exactly the evaluated class names plus "no object". A checkpoint with its own
    label set becomes that by keeping the logits of the matched ``columns`` and the
    no-object column, then the softmax over those C + 1, then dropping no-object.
    """
    t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).float()
    keep = list(columns) + [t.shape[-1] - 1]
    return proposal_class_probs(t[:, keep]).numpy()


def maskformer_eval_proposals(
    generator: MaskFormerProposals,
    image: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    mask_threshold: float = 0.4,
    filters: bool = False,
) -> tuple[ProposalSet, np.ndarray | None]:
    """Every query's soft mask for one image, as OVSeg's eval sees them, and their class probabilities.

    Returns a ProposalSet whose ``soft_masks`` are the (Q, H, W) sigmoid mask probabilities at the
    image size and whose ``masks`` are ``soft_masks > mask_threshold`` (OVSeg's MASK_THR test: crops
    and the valid flag), with ``scores`` = objectness 1 - p(no object). With ``class_names`` also
    the (Q, C) class probabilities of :func:`restricted_class_probs` (else None).

    ``filters=False`` (OVSeg): all queries, no filter. ``filters=True`` (maskmine's mining filters):
    the generator's ``min_objectness``, minimum area, IoU de-duplication and top-k, applied to
    the binarised masks; the soft masks of the kept queries are returned.
    """
    columns = class_columns(model_labels(generator), class_names) if class_names is not None else None
    arr = np.array(image, dtype=np.uint8, copy=True)
    inputs = generator.processor(images=[arr], return_tensors="pt", input_data_format="channels_last")
    pixel_values = inputs["pixel_values"].to(generator.device)
    pixel_mask = inputs.get("pixel_mask")
    pixel_mask = pixel_mask.to(generator.device) if pixel_mask is not None else None
    padded_hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
    with torch.inference_mode(), generator._autocast():
        outputs = generator.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        logits = outputs.class_queries_logits[0].float()
        objectness = objectness_from_class_logits(logits)
        soft = masks_to_image(
            outputs.masks_queries_logits[0],
            padded_hw,
            valid_region(pixel_mask[0] if pixel_mask is not None else None, padded_hw),
            (int(image.shape[0]), int(image.shape[1])),
            threshold=None,
        ).cpu().numpy()
    scores = objectness.float().cpu().numpy().astype(np.float32)
    binary = soft > mask_threshold
    rows = list(range(soft.shape[0]))
    if filters:
        keep = np.flatnonzero(scores >= generator.min_objectness)
        kept_masks, kept_scores = filter_proposals(
            binary[keep],
            scores[keep],
            top_k=generator.top_k,
            min_area_fraction=generator.min_area_fraction,
            dedup_iou=generator.dedup_iou,
            min_score=generator.min_objectness,
        )
        rows = [int(keep[i]) for i in _trace_indices(binary[keep], scores[keep], kept_masks, kept_scores)]
    class_probs = None
    if columns is not None:
        probs = restricted_class_probs(logits.cpu(), columns)
        class_probs = probs[rows] if rows else np.zeros((0, len(columns)), np.float32)
        class_probs = class_probs.astype(np.float32)
    proposals = ProposalSet(
        masks=binary[rows],
        scores=scores[rows],
        backend=generator.name,
        checkpoint=generator.checkpoint,
        soft_masks=soft[rows].astype(np.float32),
    )
    return proposals, class_probs
