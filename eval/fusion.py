"""SAM granularity fusion: class-agnostic SAM masks → one region per class.

SAM's automatic mask generator returns overlapping masks at several
granularities (a whole chair, its seat, one leg). Summing them like MaskFormer
queries would blur parts and wholes, so OVSeg's SAM demo instead classifies
every mask and keeps, per class, only the masks scoring close to that class's
best. Two variants are offered (``mode``):

``"assigned"`` (default) -- one class per mask:

1. Every non-empty mask ``q`` is assigned its argmax class ``c_q`` with score
   ``s_q = scores[q, c_q]``, so a mask never paints two classes.
2. For every class ``c`` that won at least one mask,
   ``threshold_c = min(granularity, 1) * max{s_q : c_q = c}``. The max runs over
   the masks assigned to ``c`` (not over all masks' score for ``c``), so a
   class whose best-scoring mask went to another class is not emptied.
3. Masks with ``s_q >= threshold_c`` are kept and merged into ``c``'s region.
4. A pixel covered by kept masks of different classes takes the class of the
   highest-scoring mask (ties: the lower mask index).

``"ovseg"`` -- what OVSeg's SAM demo does: ``threshold_c = granularity * max_q
scores[q, c]`` over all masks; a mask is kept when *any* of its class scores
is strictly above that class's threshold (at ``granularity >= 1``: the argmax
mask of every class); the kept masks' full score rows are summed per pixel
(``einsum("qc,qhw->chw")``) and the argmax taken. One mask can thus support
several classes, a large mask kept for one class can outvote the finer masks
under it, and since every vocabulary class nominates its best mask, a mask can
get in through a class it does not end up labelled as.

In both, pixels no kept mask covers get ``ignore_label``.

``granularity`` trades recall for precision: at 1 (or more) only each class's
top-scoring mask survives, the single most confident (often finest) region,
so parts CLIP is less sure of are dropped; lowering it admits the other masks
that score nearly as well for the class, merging the parts of one object
(seat + legs of a chair) at the risk of admitting weak, wrong masks; 0 keeps
every mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch

from maskmine.eval.settings import FUSION_MODES, FusionMode

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class KeptMask:
    """One mask that made it into a class region."""

    index: int
    class_id: int
    score: float


@dataclass
class FusionResult:
    labels: np.ndarray  # (H, W) int32, ignore_label where no kept mask
    regions: dict[int, np.ndarray]  # class id → (H, W) bool, disjoint, only classes with pixels
    kept: list[KeptMask] = field(default_factory=list)
    thresholds: dict[int, float] = field(default_factory=dict)  # class id → score threshold


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def granularity_fusion(
    masks: ArrayLike,
    class_scores: ArrayLike,
    granularity: float,
    ignore_label: int = 255,
    mode: FusionMode = "assigned",
) -> FusionResult:
    """Fuse (Q, H, W) binary masks with their (Q, C) class scores into a label map.

    ``class_scores`` are per-mask class probabilities (e.g. CLIP softmax).
    ``ignore_label`` must not be a class id (use the dataset's ignore label,
    e.g. 65535, for vocabularies larger than 255).
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; choose from {FUSION_MODES}")
    m = _numpy(masks)
    s = _numpy(class_scores).astype(np.float64)
    if m.ndim != 3 or s.ndim != 2 or m.shape[0] != s.shape[0]:
        raise ValueError(
            f"expected masks (Q, H, W) and scores (Q, C) with the same Q, got {m.shape} and {s.shape}"
        )
    if granularity < 0:
        raise ValueError(f"granularity must be >= 0, got {granularity}")
    num_classes = s.shape[1]
    if 0 <= ignore_label < num_classes:
        raise ValueError(f"ignore_label {ignore_label} is a class id for {num_classes} classes")
    m = m if m.dtype == np.bool_ else m > 0.5
    q_count, height, width = m.shape
    labels = np.full((height, width), ignore_label, dtype=np.int32)
    if q_count == 0 or num_classes == 0:
        return FusionResult(labels=labels, regions={})

    nonempty = m.reshape(q_count, -1).any(axis=1)
    if mode == "assigned":
        kept, thresholds = _select_assigned(s, nonempty, granularity)
        # Paint low to high score so the best mask wins each pixel; among equal
        # scores the lower index is painted last and wins.
        for k in sorted(kept, key=lambda k: (k.score, -k.index)):
            labels[m[k.index]] = k.class_id
    else:
        kept, thresholds = _select_ovseg(s, nonempty, granularity)
        _paint_einsum(labels, m, s, [k.index for k in kept])

    present = sorted(int(c) for c in np.unique(labels) if c != ignore_label)
    regions = {c: labels == c for c in present}
    return FusionResult(labels=labels, regions=regions, kept=kept, thresholds=thresholds)


def _select_assigned(
    s: np.ndarray, nonempty: np.ndarray, granularity: float
) -> tuple[list[KeptMask], dict[int, float]]:
    q_count = s.shape[0]
    assigned = s.argmax(axis=1)
    best = s[np.arange(q_count), assigned]
    factor = min(float(granularity), 1.0)
    thresholds = {
        int(c): factor * float(best[nonempty & (assigned == c)].max())
        for c in np.unique(assigned[nonempty])
    }
    kept = [
        KeptMask(index=q, class_id=int(assigned[q]), score=float(best[q]))
        for q in range(q_count)
        if nonempty[q] and best[q] >= thresholds[int(assigned[q])]
    ]
    return kept, thresholds


def _select_ovseg(
    s: np.ndarray, nonempty: np.ndarray, granularity: float
) -> tuple[list[KeptMask], dict[int, float]]:
    live = np.where(nonempty[:, None], s, -np.inf)  # empty masks never win a class
    if not nonempty.any():
        return [], {}
    max_scores = live.max(axis=0)
    if granularity >= 1:
        chosen = set(int(q) for q in live.argmax(axis=0))
        thresholds = {c: float(v) for c, v in enumerate(max_scores)}
    else:
        thr = granularity * max_scores
        chosen = set(int(q) for q in np.nonzero((live > thr[None, :]).any(axis=1))[0])
        thresholds = {c: float(v) for c, v in enumerate(thr)}
    kept = [
        KeptMask(index=q, class_id=int(s[q].argmax()), score=float(s[q].max()))
        for q in sorted(chosen)
    ]
    return kept, thresholds


def _paint_einsum(
    labels: np.ndarray, m: np.ndarray, s: np.ndarray, chosen: list[int], rows_per_chunk: int = 64
) -> None:
    """Per-pixel argmax of the chosen masks' summed score rows, in row stripes to bound memory."""
    if not chosen:
        return
    idx = np.asarray(chosen)
    cls = torch.from_numpy(s[idx])
    for top in range(0, labels.shape[0], rows_per_chunk):
        stripe = torch.from_numpy(m[idx, top : top + rows_per_chunk].astype(np.float64))
        scores = torch.einsum("qc,qhw->chw", cls, stripe)
        arg = scores.argmax(dim=0).numpy()
        covered = (stripe > 0).any(dim=0).numpy()
        block = labels[top : top + rows_per_chunk]
        block[covered] = arg[covered]
