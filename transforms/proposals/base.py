"""The proposal-generator interface and the post-processing every backend shares."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from maskmine.transforms.devices import resolve_device
from maskmine.transforms.records import ImageRecord, ProposalSet


class ProposalGenerator(ABC):
    """A batch of images in, class-agnostic masks with scores out.

    The shape of Beam's ``ModelHandler``: the model is loaded in ``__init__``
    (:func:`maskmine.transforms.proposals.factory.build_proposal_generator`
    builds one from a picklable ``ProposalSpec``, once per worker process),
    and :meth:`generate` runs it on a batch (backends may batch on a GPU).
    ``generate`` is the same for every backend: it checks the batch, calls the
    backend's :meth:`propose` and refuses an answer that is not one
    ProposalSet per image, so a backend cannot drop or add an image unseen.
    """

    name: str = ""
    checkpoint: str = ""

    def generate(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        """One ProposalSet per image; masks at each image's own resolution.

        ValueError when the images and records differ in number, an image is
        not ``(H, W, 3)`` RGB, or the backend answers with another number of sets.
        """
        check_batch(images, records)
        results = list(self.propose(images, records))
        if len(results) != len(images):
            raise ValueError(
                f"proposal backend {self.name or type(self).__name__!r} returned "
                f"{len(results)} proposal sets for {len(images)} images"
            )
        return results

    @abstractmethod
    def propose(
        self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]
    ) -> list[ProposalSet]:
        """The backend's work: one ProposalSet per image, in order (the batch is already checked)."""


class ModelProposals(ProposalGenerator):
    """A generator that runs a torch model (MaskFormer, SAM): the model placed once on its device
    in eval mode, and maskmine's mining filter applied to every image's masks (:meth:`kept`)."""

    def __init__(self, model: Any, *, checkpoint: str, device: Any, proposal_filter: ProposalFilter) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.checkpoint = checkpoint
        self.filter = proposal_filter

    def kept(self, masks: np.ndarray, scores: np.ndarray) -> ProposalSet:
        """One image's proposals after :attr:`filter`, best first."""
        rows = self.filter.select(masks, scores)
        return ProposalSet(masks=masks[rows], scores=scores[rows], backend=self.name, checkpoint=self.checkpoint)


def check_batch(images: Sequence[np.ndarray], records: Sequence[ImageRecord]) -> None:
    """ValueError unless there is one record per image and every image is ``(H, W, 3)`` RGB."""
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    check_images(images)


def check_images(images: Sequence[np.ndarray]) -> None:
    """ValueError unless every image is ``(H, W, 3)`` RGB."""
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")


def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(K, H, W)`` boolean masks."""
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def select_proposals(
    masks: np.ndarray,
    scores: np.ndarray,
    *,
    top_k: int = 100,
    min_area_fraction: float = 0.0005,
    dedup_iou: float = 0.9,
    min_score: float = 0.0,
) -> np.ndarray:
    """Indices of the best masks: tiny ones and near-duplicates dropped, then top-k.

    A mask is dropped when it covers less than ``min_area_fraction`` of the
    image (and at least one pixel) or scores below ``min_score``. The rest go
    greedily by descending score (ties keep input order): a mask is dropped
    when its IoU with an already kept, higher-scoring mask is at least
    ``dedup_iou``. Returns the kept rows of ``masks`` (int64), best first.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    if masks.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    area = masks.reshape(masks.shape[0], -1).sum(1)
    min_area = min_area_fraction * masks.shape[1] * masks.shape[2]
    candidates = np.flatnonzero((area >= max(min_area, 1)) & (scores >= min_score))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if order.size == 0:
        return order.astype(np.int64)
    iou = mask_iou_matrix(masks[order])
    kept: list[int] = []
    for i in range(order.size):
        if all(iou[i, j] < dedup_iou for j in kept):
            kept.append(i)
        if len(kept) == top_k:
            break
    return order[kept].astype(np.int64)


def filter_proposals(masks: np.ndarray, scores: np.ndarray, **settings: Any) -> tuple[np.ndarray, np.ndarray]:
    """The rows :func:`select_proposals` keeps (``settings`` are its keyword arguments):
    ``(masks, scores)`` as bool and float32 copies, best first."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    rows = select_proposals(masks, scores, **settings)
    return masks[rows], scores[rows]


@dataclass(frozen=True)
class ProposalFilter:
    """maskmine's mining filters with their settings, as a generator applies them."""

    top_k: int = 100
    min_area_fraction: float = 0.0005
    dedup_iou: float = 0.9
    min_score: float = 0.0

    def select(self, masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The kept rows, best first (:func:`select_proposals`)."""
        return select_proposals(masks, scores, **asdict(self))
