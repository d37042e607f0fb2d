"""The mining worker's pairing steps: crops → CLIP → one PairSample per noun, with the chosen mask, its box,
RLE and crop. :func:`pair_image` runs them for one image as the worker does on a CPU (its own CLIP
call, ``transforms/shard_mining.py``'s ``_crop``, ``_match`` and ``_results``)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskmine.transforms.clip_models import TextEmbeddingCache, encode_crops, load_clip
from maskmine.transforms.masked_crop import clip_batch, masked_crop
from maskmine.transforms.matching import match_nouns
from maskmine.transforms.pairing import (
    LABELS_CATEGORIES, LABELS_NOUNS, build_pairs, crops_for, match_item, matched_crops, unique_keys,
)
from maskmine.transforms.records import DROP_BELOW_MIN_SCORE, Caption, ImageRecord, MiningItem, NounOccurrence, ProposalSet


@pytest.fixture(scope="module")
def clip():
    return load_clip("maskmine-tiny", "none", "cpu")


def pair_image(item: MiningItem, clip, text_cache: TextEmbeddingCache, labels: str = LABELS_NOUNS,
               min_score: float | None = None):
    """(pairs, dropped) of one image, by the worker's steps in its order."""
    crops = crops_for(item, clip.crop_config, clip.device)
    matched = match_item(item, encode_crops(clip, clip_batch(crops)), text_cache, clip.logit_scale, labels)
    return build_pairs(item, matched, matched_crops(matched, crops), clip.name, clip.pretrained,
                       labels=labels, min_score=min_score)


def _item(labels=None) -> MiningItem:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    masks = np.zeros((3, 60, 80), dtype=bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 30:55, 40:75] = True
    masks[2, 10:50, 10:70] = True
    captions = [Caption(1, "a dog with a frisbee"), Caption(2, "a frisbee"), Caption(3, "Dog!")]
    record = ImageRecord(image_id=42, file_name="42.jpg", width=80, height=60, captions=captions)
    item = MiningItem(record=record, shard=0)
    item.image = image
    item.proposals = ProposalSet(masks=masks, scores=np.ones(3, np.float32), backend="coco-gt", labels=labels)
    item.nouns = [NounOccurrence("dog", (1,)), NounOccurrence("frisbee", (1, 2)), NounOccurrence("Dog!", (3,))]
    return item


def test_every_noun_gets_the_argmax_proposal_with_its_mask_box_and_crop(clip):
    item = _item()
    pairs, dropped = pair_image(item, clip, TextEmbeddingCache(clip))
    assert dropped == {} and [p.noun for p in pairs] == ["dog", "frisbee", "Dog!"]
    assert [p.key for p in pairs] == ["42-dog", "42-frisbee", "42-dog-2"]  # slugs collide: a suffix keeps keys unique
    # The same choice as matching the crops by hand.
    crops = [masked_crop(item.image, m, clip.crop_config) for m in item.proposals.masks]
    emb = encode_crops(clip, clip_batch(crops))
    expected = match_nouns(emb, TextEmbeddingCache(clip).get(["dog", "frisbee", "Dog!"]), ["dog", "frisbee", "Dog!"], clip.logit_scale)
    for pair, match in zip(pairs, expected):
        assert pair.proposal_index == match.proposal_index and pair.score == pytest.approx(match.score, abs=1e-6)
        mask = item.proposals.masks[pair.proposal_index]
        assert np.array_equal(mask_utils.decode({"size": [pair.height, pair.width], "counts": pair.mask_rle.encode()}).astype(bool), mask)
        ys, xs = np.nonzero(mask)
        assert pair.box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        crop = Image.open(io.BytesIO(pair.crop_jpg))
        assert crop.size == (clip.crop_config.input_size,) * 2
        crop_mask = np.array(Image.open(io.BytesIO(pair.crop_mask_png))) > 0
        assert np.array_equal(crop_mask, crops[pair.proposal_index].mask)
    assert pairs[1].caption_ids == [1, 2] and pairs[0].label_source == "caption"
    assert {p.clip_model for p in pairs} == {"maskmine-tiny"} and {p.proposal_backend for p in pairs} == {"coco-gt"}


def test_min_score_drops_are_counted(clip):
    pairs, _ = pair_image(_item(), clip, TextEmbeddingCache(clip))
    cut = sorted(p.score for p in pairs)[1]  # keeps the pairs scoring at or above the middle one
    kept, dropped = pair_image(_item(), clip, TextEmbeddingCache(clip), min_score=cut)
    assert len(kept) == 2 and dropped == {DROP_BELOW_MIN_SCORE: 1}
    assert all(p.score >= cut for p in kept)


def test_categories_mode_pairs_each_mask_with_its_own_label(clip):
    item = _item(labels=["dog", "frisbee", "person"])
    pairs, _ = pair_image(item, clip, TextEmbeddingCache(clip), labels=LABELS_CATEGORIES)
    assert [(p.noun, p.proposal_index, p.label_source) for p in pairs] == [
        ("dog", 0, "category"), ("frisbee", 1, "category"), ("person", 2, "category"),
    ]
    assert all(p.caption_ids == [] for p in pairs)


def test_unique_keys_suffix_only_repeats():
    assert unique_keys(7, ["a b", "a-b", "c", "A B"]) == ["7-a_b", "7-a_b-2", "7-c", "7-a_b-3"]
