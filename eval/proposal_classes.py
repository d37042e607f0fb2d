"""MaskFormer proposals as OVSeg's eval uses them: soft masks and class scores.

:func:`maskformer_eval_proposals` takes every query's soft sigmoid mask and class
logits from one forward pass of
:class:`maskmine.transforms.proposals.maskformer.MaskFormerProposals`
(:meth:`~maskmine.transforms.proposals.maskformer.MaskFormerProposals.predict_queries`),
with no mining filter by default, for OVSeg's soft-mask semantic inference.

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
from maskmine.transforms.errors import SettingError
from maskmine.transforms.proposals.maskformer import MaskFormerProposals
from maskmine.transforms.records import ProposalSet


def _synonyms(name: str) -> set[str]:
    return {s.strip().lower() for s in str(name).split(",") if s.strip()}


def class_columns(model_labels: Sequence[str], class_names: Sequence[str]) -> list[int]:
    """For each class name, the index of the model label it matches; a SettingError of the ensemble
    (whose weight is the only reason to match them) naming the misses."""
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
        raise SettingError(
            "ensemble_lambda", f"needs the proposal model to score every class, but {len(missing)} of "
            f"{len(class_names)} class names are not in its label set ({shown}); "
            "drop `ensemble_lambda` to classify with CLIP alone"
        )
    return columns


def model_labels(generator: MaskFormerProposals) -> list[str]:
    """The checkpoint's class names in column order."""
    id2label = getattr(generator.model.config, "id2label", None) or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


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
    the generator's ``filter`` (minimum objectness and area, IoU de-duplication, top-k), applied to
    the binarised masks; the soft masks of the kept queries are returned.
    """
    columns = class_columns(model_labels(generator), class_names) if class_names is not None else None
    queries = generator.predict_queries([image])[0]
    soft, scores = queries.soft_masks, queries.objectness
    binary = soft > mask_threshold
    rows = generator.filter.select(binary, scores) if filters else np.arange(soft.shape[0])
    class_probs = None
    if columns is not None:
        class_probs = restricted_class_probs(queries.class_logits, columns)[rows].astype(np.float32)
    proposals = ProposalSet(
        masks=binary[rows],
        scores=scores[rows],
        backend=generator.name,
        checkpoint=generator.checkpoint,
        soft_masks=soft[rows].astype(np.float32),
    )
    return proposals, class_probs
