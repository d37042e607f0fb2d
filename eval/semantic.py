"""MaskFormer-style semantic inference and OVSeg's two-branch class ensemble.

Two-stage open-vocabulary segmentation turns Q class-agnostic masks plus a
(Q, C) class distribution per mask into a per-pixel label map:

    scores[c, h, w] = sum_q  p(c | q) * m_q(h, w)        (einsum "qc,qhw->chw")
    label[h, w]     = argmax_c scores[c, h, w]

which is MaskFormer's ``semantic_inference`` and what OVSeg evaluates.

The class distribution may come from the proposal network's own classifier,
from CLIP on the masked crops, or from both combined with OVSeg's geometric
ensemble (see :func:`ensemble_probs`).

Everything here accepts numpy arrays or torch tensors and returns torch
tensors; it runs on whatever device the inputs are on.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """numpy or torch → torch tensor of ``dtype`` (bool masks become 0/1)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.to(dtype)


def proposal_class_probs(logits: ArrayLike) -> torch.Tensor:
    """(Q, C+1) proposal-head logits → (Q, C): softmax over C+1, then drop the "no object" column.

    This is MaskFormer/OVSeg: the kept probabilities do not sum to one, so a
    query that is mostly "no object" contributes little to every class.
    """
    t = as_tensor(logits)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"expected (Q, C+1) logits, got shape {tuple(t.shape)}")
    return torch.softmax(t, dim=-1)[:, :-1]


def ensemble_probs(
    p_proposal: ArrayLike,
    p_clip: ArrayLike,
    lam: Optional[float],
    valid: Optional[ArrayLike] = None,
) -> torch.Tensor:
    """OVSeg's class ensemble of the proposal classifier and CLIP, both (Q, C), in OVSeg's
    convention (``CLIP_ENSEMBLE_WEIGHT``, ov-seg@36f49d4 open_vocab_seg/ovseg_model.py lines 244-252):

    * ``lam`` in (0, 1]:  ``p = p_proposal ** (1 - lam) * p_clip ** lam`` (``lam = 1``: CLIP's
      probabilities). OVSeg's evaluation uses 0.7 on ADE (open_vocab_seg/config.py line 117),
      0.6 on PASCAL Context, 0.45 on VOC (GETTING_STARTED.md).
    * ``lam`` 0 (or below, or None): CLIP alone, as OVSeg's ``else`` branch (its demo sets 0.0).

    ``valid`` (Q,) bool marks the masks CLIP actually classified (OVSeg skips
    empty masks). Invalid rows take ``p_clip = 1`` in the ensemble, so they keep
    their proposal score ``p_proposal ** (1 - lam)``, and rows of zeros under
    CLIP alone, so they add nothing to the semantic map (OVSeg drops them).

    OVSeg has no weight for the proposal classifier alone (that is ``CLIP_ENSEMBLE False``).
    """
    pc = as_tensor(p_clip)
    if pc.ndim != 2:
        raise ValueError(f"expected (Q, C) CLIP probabilities, got shape {tuple(pc.shape)}")
    keep = None
    if valid is not None:
        keep = as_tensor(valid, torch.bool).to(pc.device).reshape(-1)
        if keep.shape[0] != pc.shape[0]:
            raise ValueError(f"valid has {keep.shape[0]} entries for {pc.shape[0]} masks")
    if lam is None or float(lam) <= 0.0:
        return pc if keep is None else pc * keep[:, None].to(pc.dtype)
    lam = float(lam)
    if lam > 1.0:
        raise ValueError(f"ensemble weight must be in [0, 1] (0 or None: CLIP alone), got {lam}")
    pp = as_tensor(p_proposal).to(pc.device)
    if pp.shape != pc.shape:
        raise ValueError(f"proposal probs {tuple(pp.shape)} and CLIP probs {tuple(pc.shape)} differ")
    if keep is not None:
        pc = torch.where(keep[:, None], pc, torch.ones_like(pc))
    return torch.pow(pp, 1.0 - lam) * torch.pow(pc, lam)


def semantic_map(mask_probs: ArrayLike, class_probs: ArrayLike) -> torch.Tensor:
    """(Q, H, W) mask probabilities (or bool masks) and (Q, C) class probabilities → (C, H, W) scores."""
    cls = as_tensor(class_probs)
    masks = as_tensor(mask_probs, cls.dtype).to(cls.device)
    if masks.ndim != 3 or cls.ndim != 2:
        raise ValueError(
            f"expected masks (Q, H, W) and class probs (Q, C), got {tuple(masks.shape)} "
            f"and {tuple(cls.shape)}"
        )
    if masks.shape[0] != cls.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {cls.shape[0]} class rows")
    return torch.einsum("qc,qhw->chw", cls, masks)


def argmax_labels(scores: ArrayLike, empty_label: Optional[int] = None) -> torch.Tensor:
    """(C, H, W) scores → (H, W) int64 labels.

    ``empty_label`` (e.g. the dataset's ignore label) is given to pixels no mask
    scores at all; by default they get class 0 like detectron2's plain argmax.
    """
    s = as_tensor(scores) if isinstance(scores, np.ndarray) else scores
    if s.ndim != 3 or s.shape[0] == 0:
        raise ValueError(f"expected (C, H, W) scores with C > 0, got {tuple(s.shape)}")
    labels = s.argmax(dim=0)
    if empty_label is not None:
        labels = torch.where((s > 0).any(dim=0), labels, torch.full_like(labels, empty_label))
    return labels


def semantic_inference(
    mask_probs: ArrayLike,
    p_proposal: Optional[ArrayLike],
    p_clip: Optional[ArrayLike] = None,
    lam: Optional[float] = None,
    valid: Optional[ArrayLike] = None,
    empty_label: Optional[int] = None,
) -> torch.Tensor:
    """Masks + class distributions → (H, W) label map, the whole MaskFormer/OVSeg step.

    With ``p_clip`` None the proposal classifier is used alone; otherwise the
    two are combined by :func:`ensemble_probs` (``lam`` 0 or None = CLIP alone, as OVSeg).
    """
    if p_clip is None:
        if p_proposal is None:
            raise ValueError("need proposal or CLIP class probabilities")
        probs = as_tensor(p_proposal)
    else:
        if lam is not None and lam > 0 and p_proposal is None:
            raise ValueError("an ensemble weight needs proposal class probabilities")
        probs = ensemble_probs(p_proposal if p_proposal is not None else p_clip, p_clip, lam, valid)
    return argmax_labels(semantic_map(mask_probs, probs), empty_label=empty_label)
