"""OVSeg's demo inference (``maskmine demo --inference ovseg-demo``), step for step.

OVSeg's demo (``OVSegDEMO``, ov-seg@36f49d4 open_vocab_seg/ovseg_model.py, with
configs/ovseg_swinB_vitL_demo.yaml and open_vocab_seg/utils/predictor.py) differs from its
evaluation (:func:`maskmine.eval.inference.segment`) in five ways, all reproduced here:

1. one class name gets ``"others"`` appended (ovseg_model.py lines 389-391), and the demo draws it
   like any class, label and all (the same list reaches ``OVSegVisualizer``, predictor.py line 118);
2. CLIP alone classifies the masks (``CLIP_ENSEMBLE_WEIGHT: 0.0``, demo yaml line 55; the ``else``
   branch, ovseg_model.py lines 448-451: only the valid masks stay);
3. masks are binarised at ``MASK_THR: 0.35`` (demo yaml line 49), for the crops as in eval
   (clip_adapter/adapter.py lines 158-159) and for painting (ovseg_model.py line 452);
4. only each class's best mask is kept, with its whole class row (lines 453-458): ``select_cls``
   is zero except the row of ``argmax_q p(c | q)`` for every class ``c``; with exactly two names of
   which the last is ``"others"``, the best mask of ``"others"`` is not selected (lines 455-456);
   the score map is ``einsum("qc,qhw->chw", select_cls, bin_mask)`` (line 459);
5. the predictor blanks the pixels where the first class scores exactly 0 and takes the argmax
   elsewhere (predictor.py lines 120-123): a pixel no selected mask covers stays unpainted. (A
   covered pixel whose selected masks all give class 0 a probability that underflowed to 0 in
   float32 is blanked too; that is OVSeg's test, kept as it is.)

The score map goes back to the image's own size (``sem_seg_postprocess``, line 421) before step 5;
with ``maskmine demo --test-size 640`` the image is first resized as OVSeg's predictor does (see
:mod:`maskmine.eval.shortest_edge`). OVSeg's ``torch.argmax`` over an empty set of valid masks
fails; here an image with no valid mask is left unpainted.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from maskmine.eval.inference import RegionClassifier, Segmentation, binarised_proposals
from maskmine.eval.semantic import ArrayLike, as_tensor
from maskmine.eval.settings import OVSEG_DEMO_MASK_THRESHOLD
from maskmine.eval.shortest_edge import scores_to_size
from maskmine.transforms.records import ProposalSet

OTHERS = "others"  # the class OVSeg's demo adds to a single class name


def demo_class_names(names: Sequence[str]) -> list[str]:
    """The names OVSeg's demo classifies into: one name gets ``"others"`` appended (lines 389-391)."""
    names = list(names)
    return names + [OTHERS] if len(names) == 1 else names


def demo_select(class_probs: ArrayLike, class_names: Sequence[str]) -> torch.Tensor:
    """(V, C) class probabilities of the valid masks → OVSeg's ``select_cls`` (lines 453-458):
    the rows of each class's best mask, all other rows zero."""
    probs = as_tensor(class_probs)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"expected (V, {len(class_names)}) class probabilities, got {tuple(probs.shape)}")
    select = torch.zeros_like(probs)
    if probs.shape[0] == 0:
        return select
    best = torch.argmax(probs, dim=0)
    if len(class_names) == 2 and class_names[-1] == OTHERS:
        best = best[:-1]
    select[best] = probs[best]
    return select


def demo_scores(binary_masks: ArrayLike, class_probs: ArrayLike, class_names: Sequence[str]) -> torch.Tensor:
    """(V, H, W) binary masks of the valid masks and their (V, C) probabilities → (C, H, W) scores (line 459)."""
    select = demo_select(class_probs, class_names)
    masks = as_tensor(binary_masks, select.dtype)
    if masks.ndim != 3 or masks.shape[0] != select.shape[0]:
        raise ValueError(f"expected ({select.shape[0]}, H, W) masks, got {tuple(masks.shape)}")
    return torch.einsum("qc,qhw->chw", select, masks)


def demo_label_map(scores: torch.Tensor, blank_label: int) -> np.ndarray:
    """(C, H, W) scores → (H, W) labels: ``blank_label`` where class 0 scores exactly 0, else the
    argmax (predictor.py lines 120-123)."""
    labels = scores.argmax(dim=0)
    labels = torch.where(scores[0] == 0, torch.full_like(labels, blank_label), labels)
    return labels.numpy().astype(np.int32)


def segment_ovseg_demo(
    image: np.ndarray,
    class_names: Sequence[str],
    proposals: ProposalSet,
    classifier: RegionClassifier,
    *,
    blank_label: int,
    mask_threshold: float = OVSEG_DEMO_MASK_THRESHOLD,
    output_size: Optional[tuple[int, int]] = None,
) -> Segmentation:
    """``OVSegDEMO.demo_inference`` and its predictor on ``proposals`` of ``image``.

    ``class_names`` are classified as given (call :func:`demo_class_names` first for OVSeg's
    ``"others"``). Soft masks (``proposals.soft_masks``) are binarised at ``mask_threshold``;
    boolean masks (SAM, ground truth) are their own binary mask. ``output_size``: the size the
    score map is interpolated to (the original image's, when ``image`` is a resized copy).
    """
    if 0 <= blank_label < len(class_names):
        raise ValueError(f"blank_label {blank_label} is a class id for {len(class_names)} classes")
    height, width = image.shape[:2]
    binary, _ = binarised_proposals(proposals, (height, width), mask_threshold)
    scores = classifier.classify(image, binary, class_names)
    rows = np.flatnonzero(scores.valid)
    out_shape = tuple(output_size) if output_size is not None else (height, width)
    select = np.zeros_like(scores.probs)
    if rows.size == 0:
        labels = np.full(out_shape, blank_label, dtype=np.int32)
        return Segmentation(labels, proposals, scores.probs, select)
    select[rows] = demo_select(scores.probs[rows], class_names).numpy()
    score_map = scores_to_size(demo_scores(binary[rows], scores.probs[rows], class_names), out_shape)
    return Segmentation(demo_label_map(score_map, blank_label), proposals, scores.probs, select)
