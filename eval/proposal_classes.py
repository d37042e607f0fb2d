"""The proposal model's own class scores, for OVSeg's geometric ensemble with CLIP.

Only MaskFormer/Mask2Former has a class head. Its columns are the
checkpoint's label set (``config.id2label``), so the ensemble is possible when
every evaluated class name is one of those labels (e.g. an ADE-150 semantic
checkpoint evaluated on ADE-150). Names match case-insensitively, and a
comma-separated name ("car, auto") matches through any of its synonyms.

The proposals come from the same forward pass as in
:class:`maskmine.transforms.proposals.maskformer.MaskFormerProposals`, reusing its
helpers, with each kept mask traced back to its query so its class row is
known.
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


def maskformer_with_classes(
    generator: MaskFormerProposals, image: np.ndarray, class_names: Sequence[str]
) -> tuple[ProposalSet, np.ndarray]:
    """Proposals for one image and their (Q, C) class probabilities over ``class_names``.

    Probabilities are MaskFormer's: softmax over the labels plus "no object",
    with the "no object" column dropped, then the matched columns taken.
    """
    columns = class_columns(model_labels(generator), class_names)
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
        keep = objectness >= generator.min_objectness
        masks = masks_to_image(
            outputs.masks_queries_logits[0][keep],
            padded_hw,
            valid_region(pixel_mask[0] if pixel_mask is not None else None, padded_hw),
            (int(image.shape[0]), int(image.shape[1])),
            threshold=generator.mask_threshold,
        ).cpu().numpy()
    scores = objectness[keep].float().cpu().numpy()
    kept_masks, kept_scores = filter_proposals(
        masks,
        scores,
        top_k=generator.top_k,
        min_area_fraction=generator.min_area_fraction,
        dedup_iou=generator.dedup_iou,
        min_score=generator.min_objectness,
    )
    rows = _trace_indices(masks, scores.astype(np.float32), kept_masks, kept_scores)
    probs = proposal_class_probs(logits[keep].cpu()).numpy()
    class_probs = probs[rows][:, columns] if rows else np.zeros((0, len(columns)), np.float32)
    proposals = ProposalSet(
        masks=kept_masks,
        scores=kept_scores.astype(np.float32),
        backend=generator.name,
        checkpoint=generator.checkpoint,
    )
    return proposals, class_probs.astype(np.float32)
