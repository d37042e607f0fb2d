"""SAM granularity fusion on constructed masks and scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskmine.eval.fusion import granularity_fusion

CHAIR, TABLE, OTHER = 0, 1, 2
IGNORE = 255


def _chair_scene():
    """6x6 scene: a chair's seat and legs as separate SAM masks, a table, an empty mask."""
    masks = np.zeros((4, 6, 6), dtype=bool)
    masks[0, 1:3, 1:5] = True  # seat
    masks[1, 3:6, 1] = True  # left leg  } one "legs" mask
    masks[1, 3:6, 4] = True  # right leg }
    masks[2, :, 5] = True  # table, the right column
    # mask 3 stays empty: it must never count, even with a high score
    scores = np.array(
        [
            [0.90, 0.05, 0.05],  # seat: surely a chair
            [0.60, 0.30, 0.10],  # legs: chair, less sure
            [0.10, 0.80, 0.10],  # table
            [0.99, 0.01, 0.00],  # empty mask
        ]
    )
    return masks, scores


def test_granularity_one_keeps_only_the_top_mask_per_class():
    masks, scores = _chair_scene()
    r = granularity_fusion(masks, scores, 1.0)
    assert [(k.index, k.class_id) for k in r.kept] == [(0, CHAIR), (2, TABLE)]
    assert r.thresholds == pytest.approx({CHAIR: 0.90, TABLE: 0.80})
    assert (r.labels[masks[0]] == CHAIR).all()
    assert (r.labels[masks[1]] == IGNORE).all()  # the legs are dropped
    assert (r.labels[masks[2]] == TABLE).all()
    assert sorted(r.regions) == [CHAIR, TABLE]
    assert r.regions[CHAIR].sum() == masks[0].sum() == 8
    # above 1 behaves like 1 (the threshold never exceeds the best score)
    assert np.array_equal(granularity_fusion(masks, scores, 3.0).labels, r.labels)


def test_lower_granularity_merges_the_parts_of_one_object():
    masks, scores = _chair_scene()
    # chair threshold 0.6 * 0.9 = 0.54 <= 0.60: the legs join the seat
    r = granularity_fusion(masks, scores, 0.6)
    assert [k.index for k in r.kept] == [0, 1, 2]
    assert r.regions[CHAIR].sum() == masks[0].sum() + masks[1].sum() == 14
    assert np.array_equal(r.regions[CHAIR], masks[0] | masks[1])
    # at 0.7 the threshold is 0.63 > 0.60: legs excluded again
    r07 = granularity_fusion(masks, scores, 0.7)
    assert [k.index for k in r07.kept] == [0, 2]
    # 0 keeps every non-empty mask
    assert [k.index for k in granularity_fusion(masks, scores, 0.0).kept] == [0, 1, 2]


def test_conflicts_go_to_the_higher_score_and_ties_to_the_lower_index():
    masks = np.zeros((3, 2, 4), dtype=bool)
    masks[0, :, 0:3] = True  # class 0, score 0.7
    masks[1, :, 1:4] = True  # class 1, score 0.9 (overlaps columns 1-2)
    masks[2, :, 0] = True  # class 2, score 0.7 (ties mask 0 on column 0)
    scores = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7]])
    r = granularity_fusion(torch.from_numpy(masks), torch.from_numpy(scores), 1.0)
    assert r.labels[0].tolist() == [0, 1, 1, 1]
    # regions are disjoint and cover the painted pixels exactly
    total = sum(reg.astype(int) for reg in r.regions.values())
    assert total.max() == 1 and total.sum() == (r.labels != IGNORE).sum()
    assert 2 not in r.regions  # mask 2 lost every pixel to the tie-break
    assert {k.index for k in r.kept} == {0, 1, 2}


def test_assigned_mode_keeps_a_class_whose_best_score_went_elsewhere():
    masks = np.zeros((2, 1, 2), dtype=bool)
    masks[0, 0, 0] = True
    masks[1, 0, 1] = True
    # mask 0 scores 0.40 for class 1 but is assigned to class 0;
    # mask 1 is assigned to class 1 with only 0.38
    scores = np.array([[0.60, 0.40, 0.00], [0.30, 0.38, 0.32]])
    assigned = granularity_fusion(masks, scores, 1.0)
    assert assigned.labels.tolist() == [[0, 1]]
    assert assigned.thresholds[1] == pytest.approx(0.38)
    # OVSeg's rule takes class 1's best mask over all masks (mask 0), so mask 1
    # only enters through class 2, whose argmax mask it is
    ovseg = granularity_fusion(masks, scores, 1.0, mode="ovseg")
    assert ovseg.labels.tolist() == [[0, 1]]
    ovseg_two = granularity_fusion(masks, scores[:, :2], 1.0, mode="ovseg")
    assert ovseg_two.labels.tolist() == [[0, IGNORE]]  # mask 1 never selected


def test_ovseg_mode_sums_the_selected_masks_scores():
    masks, scores = _chair_scene()
    # at 1.0 every vocabulary class nominates its best mask: chair → 0, table → 2,
    # other → 1 (0.10, first of the tied maxima), so the legs come in via "other"
    r = granularity_fusion(masks, scores, 1.0, mode="ovseg")
    assert [k.index for k in r.kept] == [0, 1, 2]
    assert (r.labels[masks[1]] == CHAIR).all()
    # an overlapping whole-object mask is summed, not painted over
    whole = masks[0] | masks[1]
    masks2 = np.concatenate([masks, whole[None]])
    scores2 = np.concatenate([scores, [[0.2, 0.7, 0.1]]])  # whole chair misread as table
    r2 = granularity_fusion(masks2, scores2, 0.5, mode="ovseg")
    # seat pixels: chair 0.9 + 0.2 = 1.1 vs table 0.05 + 0.7 = 0.75 → chair
    assert (r2.labels[masks[0]] == CHAIR).all()
    # leg pixels: chair 0.6 + 0.2 = 0.8 vs table 0.3 + 0.7 = 1.0 → table
    assert (r2.labels[masks[1]] == TABLE).all()
    assert (r2.labels[~(whole | masks[2])] == IGNORE).all()


def test_sixteen_bit_ignore_and_validation():
    masks, scores = _chair_scene()
    r = granularity_fusion(masks, scores, 1.0, ignore_label=65535)
    assert r.labels.dtype == np.int32 and r.labels[5, 0] == 65535
    with pytest.raises(ValueError, match="ignore_label"):
        granularity_fusion(masks, np.zeros((4, 300)), 1.0)  # 255 is a class id here
    with pytest.raises(ValueError):
        granularity_fusion(masks, scores, -0.1)
    with pytest.raises(ValueError):
        granularity_fusion(masks, scores[:2], 1.0)
    with pytest.raises(ValueError):
        granularity_fusion(masks, scores, 1.0, mode="nope")


def test_no_masks_gives_an_all_ignore_map():
    r = granularity_fusion(np.zeros((0, 3, 4), dtype=bool), np.zeros((0, 5)), 0.5)
    assert (r.labels == IGNORE).all() and r.regions == {} and r.kept == []
    empty = granularity_fusion(np.zeros((2, 3, 4), dtype=bool), np.ones((2, 5)) / 5, 0.5)
    assert (empty.labels == IGNORE).all() and empty.kept == []
