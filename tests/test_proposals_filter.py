"""maskmine's mining filters: the kept indices, and the rows filter_proposals returns."""
from __future__ import annotations

import numpy as np
import pytest

from maskmine.transforms.proposals.base import (
    ProposalFilter,
    filter_proposals,
    mask_iou_matrix,
    select_proposals,
)


def reference_filter(masks, scores, *, top_k, min_area_fraction, dedup_iou, min_score):
    """The filter as written before it returned indices: it copies the rows it keeps."""
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


def random_proposals(seed: int, count: int = 40, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of many sizes, with exact duplicates, empty masks and tied scores."""
    rng = np.random.default_rng(seed)
    masks = rng.random((count, size, size)) > rng.uniform(0.3, 0.999, (count, 1, 1))
    scores = rng.random(count).astype(np.float32)
    masks[5] = masks[2]  # a duplicate with a tied score: the earlier row wins
    scores[5] = scores[2]
    masks[7] = masks[3]  # a duplicate scoring higher than its original
    scores[7] = min(1.0, scores[3] + 0.01)
    masks[9] = False  # empty: never kept
    scores[11] = scores[12]  # tied scores on different masks: input order
    return masks, scores


SETTINGS = [
    dict(top_k=100, min_area_fraction=0.0, dedup_iou=1.01, min_score=0.0),  # nothing but the empty mask goes
    dict(top_k=100, min_area_fraction=0.0005, dedup_iou=0.9, min_score=0.0),  # the mining defaults
    dict(top_k=6, min_area_fraction=0.02, dedup_iou=0.5, min_score=0.2),
    dict(top_k=1, min_area_fraction=0.0, dedup_iou=0.9, min_score=0.0),
    dict(top_k=10, min_area_fraction=0.6, dedup_iou=0.9, min_score=0.0),  # most masks too small
    dict(top_k=10, min_area_fraction=0.0, dedup_iou=0.9, min_score=2.0),  # every score too low
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("settings", SETTINGS)
def test_selected_indices_pick_exactly_the_rows_filter_proposals_returns(seed, settings) -> None:
    masks, scores = random_proposals(seed)
    rows = select_proposals(masks, scores, **settings)
    assert rows.dtype == np.int64 and len(set(rows.tolist())) == len(rows)
    ref_masks, ref_scores = reference_filter(masks, scores, **settings)
    np.testing.assert_array_equal(masks[rows], ref_masks)
    np.testing.assert_array_equal(scores[rows], ref_scores)
    got_masks, got_scores = filter_proposals(masks, scores, **settings)
    assert got_masks.dtype == bool and got_scores.dtype == np.float32
    np.testing.assert_array_equal(got_masks, ref_masks)
    np.testing.assert_array_equal(got_scores, ref_scores)
    np.testing.assert_array_equal(ProposalFilter(**settings).select(masks, scores), rows)
    # best first; ties in input order
    assert all(
        scores[a] > scores[b] or (scores[a] == scores[b] and a < b) for a, b in zip(rows, rows[1:])
    )


def test_selection_keeps_the_first_of_duplicates_and_drops_empty_masks() -> None:
    masks, scores = random_proposals(0)
    rows = select_proposals(masks, scores, top_k=100, min_area_fraction=0.0, dedup_iou=0.9).tolist()
    assert 2 in rows and 5 not in rows  # tied duplicate: the earlier row
    assert 7 in rows and 3 not in rows  # the higher-scoring copy
    assert 9 not in rows
    everything = select_proposals(masks, scores, top_k=100, min_area_fraction=0.0, dedup_iou=1.01)
    assert sorted(everything.tolist()) == [i for i in range(len(masks)) if i != 9]


def test_selection_of_no_masks() -> None:
    masks = np.zeros((0, 8, 9), bool)
    scores = np.zeros(0, np.float32)
    assert select_proposals(masks, scores).shape == (0,)
    kept_masks, kept_scores = filter_proposals(masks, scores)
    assert kept_masks.shape == (0, 8, 9) and kept_scores.shape == (0,)
