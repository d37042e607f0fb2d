"""Class-agnostic mask recall: how many ground-truth instances a proposal generator covers.

For every ground-truth instance (every visible, non-crowd instance of a COCO
instances file), the best IoU among the generator's first k masks in its own
order (best score first, after the generator's filters); recall@k at IoU t is
the fraction of instances whose best IoU is at least t, the way proposal
networks are measured. ``benchmarks/proposals.py`` (repository root) runs it on the
sample world's val split; ``pretrain-sample-proposals`` records it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.image_io import read_image
from maskmine.transforms.proposals.base import ProposalGenerator
from maskmine.transforms.proposals.coco_gt import instance_masks

TOP_K = (10, 50, 100)
IOUS = (0.5, 0.75)


@dataclass
class Recall:
    images: int
    instances: int
    proposals_per_image: float
    recall: dict[str, float] = field(default_factory=dict)  # "R@k IoU t" -> fraction of instances
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def best_ious(proposals: np.ndarray, gt: list[np.ndarray], k: int) -> np.ndarray:
    """For each ground-truth mask, its highest IoU with one of the first ``k`` proposals (0 if none)."""
    if not gt:
        return np.zeros(0, np.float32)
    if proposals.shape[0] == 0 or k < 1:
        return np.zeros(len(gt), np.float32)
    top = proposals[:k].reshape(min(k, proposals.shape[0]), -1).astype(np.float32)
    truth = np.stack(gt).reshape(len(gt), -1).astype(np.float32)
    inter = truth @ top.T
    union = truth.sum(1)[:, None] + top.sum(1)[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).max(1)


def measure_recall(
    generator: ProposalGenerator, data: str | Path, split: str = "val", limit: int | None = None
) -> Recall:
    """Recall@{10,50,100} at IoU 0.5 and 0.75 of ``generator`` on a sample set split."""
    root = Path(data)
    records = read_captioned_images(
        root / "annotations" / f"captions_{split}.json", root / "annotations" / f"instances_{split}.json", limit=limit
    )
    started = time.perf_counter()
    best: dict[int, list[np.ndarray]] = {k: [] for k in TOP_K}
    counts: list[int] = []
    for record in records:
        image = read_image(root / "images" / split / record.file_name)
        height, width = image.shape[:2]
        gt = [m for m in instance_masks(record, height, width)[1] if m.any()]
        masks = generator.generate([image], [record])[0].masks
        counts.append(int(masks.shape[0]))
        for k in TOP_K:
            best[k].append(best_ious(masks, gt, k))
    total = {k: np.concatenate(v) if v else np.zeros(0) for k, v in best.items()}
    n = int(total[TOP_K[0]].size)
    recall = {
        f"R@{k} IoU {t}": round(float((total[k] >= t).mean()) if n else 0.0, 4) for t in IOUS for k in TOP_K
    }
    return Recall(
        images=len(records),
        instances=n,
        proposals_per_image=round(float(np.mean(counts)) if counts else 0.0, 2),
        recall=recall,
        seconds=round(time.perf_counter() - started, 1),
    )
