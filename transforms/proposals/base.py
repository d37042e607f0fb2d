"""The proposal-generator interface and the post-processing every backend shares."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from maskmine.transforms.records import ImageRecord, ProposalSet


class ProposalGenerator(ABC):
    """A batch of images in, class-agnostic masks with scores out.

    Backends load their model in ``__init__`` (once per worker: the Beam
    wrapper keeps one instance per process) and may batch on a GPU.
    """

    name: str = ""
    checkpoint: str = ""

    @abstractmethod
    def generate(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        """One ProposalSet per image; masks at each image's own resolution."""


def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(K, H, W)`` boolean masks."""
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def filter_proposals(
    masks: np.ndarray,
    scores: np.ndarray,
    *,
    top_k: int = 100,
    min_area_fraction: float = 0.0005,
    dedup_iou: float = 0.9,
    min_score: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the best masks: drop tiny ones and near-duplicates, then top-k.

    Greedy by score: a mask is dropped when its IoU with an already kept,
    higher-scoring mask is at least ``dedup_iou``. Returns ``(masks, scores)``
    sorted by descending score.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    if masks.shape[0] == 0:
        return masks, scores
    area = masks.reshape(masks.shape[0], -1).sum(1)
    min_area = min_area_fraction * masks.shape[1] * masks.shape[2]
    keep = (area >= max(min_area, 1)) & (scores >= min_score)
    masks, scores = masks[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    masks, scores = masks[order], scores[order]
    if masks.shape[0] == 0:
        return masks, scores
    iou = mask_iou_matrix(masks)
    kept: list[int] = []
    for i in range(masks.shape[0]):
        if all(iou[i, j] < dedup_iou for j in kept):
            kept.append(i)
        if len(kept) == top_k:
            break
    return masks[kept], scores[kept]
