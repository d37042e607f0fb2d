"""Ground-truth masks as proposals for semantic-segmentation datasets (``--proposals coco-gt``).

The prepared benchmark layouts ship label maps, not instance masks, so the
oracle proposals are one mask per class present in the image's label map
(ignore pixels belong to none). Every mask is then a perfect region, and
the eval measures only how well CLIP names regions: the classification step
in isolation, as COCO's ground-truth instances do for mining.
"""
from __future__ import annotations

import numpy as np

from maskmine.transforms.records import ProposalSet

BACKEND = "coco-gt"


def label_map_proposals(
    label: np.ndarray, class_names: list[str], ignore_label: int
) -> ProposalSet:
    """(H, W) label map → one boolean mask per present class, ascending class id, score 1."""
    label = np.asarray(label)
    ids = [int(v) for v in np.unique(label) if v != ignore_label and 0 <= v < len(class_names)]
    if ids:
        masks = np.stack([label == c for c in ids])
    else:
        masks = np.zeros((0, *label.shape), dtype=bool)
    return ProposalSet(
        masks=masks,
        scores=np.ones(len(ids), dtype=np.float32),
        backend=BACKEND,
        checkpoint="label-map",
        labels=[class_names[c] for c in ids],
    )
