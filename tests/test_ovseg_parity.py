"""maskmine's eval against independent re-implementations of OVSeg's formulas, on random inputs.

The references below are written from OVSeg's paper and code (``open_vocab_seg/ovseg_model.py``:
``OVSeg.semantic_inference``; ``open_vocab_seg/modeling/clip_adapter/adapter.py``:
``MaskFormerClipAdapter._preprocess_image``; ``open_vocab_seg/utils/predictor.py`` and
``OVSegDEMO.forward`` for the demo), in plain numpy, not by calling maskmine's helpers:

* mask probabilities ``m = sigmoid(mask logits)``; a mask is *valid* when some pixel has ``m > MASK_THR``
  (0.4 by default) and only valid masks are cropped and classified by CLIP;
* proposal class probabilities: softmax over the evaluated classes plus "no object", no-object dropped;
* CLIP alone (``CLIP_ENSEMBLE_WEIGHT <= 0``): ``semseg = einsum(p_clip, m[valid])``;
* ensemble ``lam > 0``: ``p = p_prop ** (1 - lam) * p_clip' ** lam`` with ``p_clip' = 1`` on invalid
  masks, ``semseg = einsum(p, m)`` over all masks; the label is the argmax over classes.
"""
from __future__ import annotations

import numpy as np
import pytest

from maskmine.eval.inference import build_classifier, segment
from maskmine.transforms.clip_models import ClipSpec
from maskmine.eval.proposal_classes import maskformer_eval_proposals, restricted_class_probs
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.proposals.maskformer import TINY_CHECKPOINT
from maskmine.transforms.records import ProposalSet


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ovseg_semantic_labels(soft: np.ndarray, p_prop: np.ndarray | None, p_clip_valid: np.ndarray,
                          valid: np.ndarray, lam: float) -> np.ndarray:
    """OVSeg.semantic_inference + argmax; ``p_clip_valid`` holds CLIP's rows of the valid masks only."""
    if lam <= 0:
        cls, masks = p_clip_valid, soft[valid]
    else:
        mapped = np.ones_like(p_prop)
        mapped[valid] = p_clip_valid
        cls, masks = p_prop ** (1 - lam) * mapped ** lam, soft
    semseg = np.tensordot(cls.T, masks, axes=([1], [0]))  # (C, H, W) = sum_q cls[q, c] * masks[q]
    return semseg.argmax(axis=0)


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu"))


def random_case(seed: int, q: int = 6, h: int = 24, w: int = 30):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    logits = rng.normal(0.0, 3.0, (q, h, w)).astype(np.float32)
    logits[0] = -9.0  # one mask with no pixel above the threshold: not valid
    soft = _sigmoid(logits).astype(np.float32)
    return image, soft


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [None, 0.7])
def test_soft_mask_semantic_inference_matches_ovseg(classifier, seed: int, lam) -> None:
    image, soft = random_case(seed)
    names = ["wall", "sky", "car", "tree"]
    proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(len(soft), np.float32), backend="test",
                            soft_masks=soft)
    rng = np.random.default_rng(100 + seed)
    head_logits = rng.normal(0.0, 2.0, (len(soft), 9)).astype(np.float32)  # 8 checkpoint labels + no-object
    columns = [5, 0, 7, 2]
    p_prop = restricted_class_probs(head_logits, columns)
    # reference of the restricted softmax: the evaluated columns plus no-object, softmax, drop no-object
    ref_prop = _softmax(head_logits[:, columns + [8]])[:, :-1]
    np.testing.assert_allclose(p_prop, ref_prop, rtol=1e-5, atol=1e-7)
    result = segment(image, names, proposals, classifier, proposal_class_probs=p_prop if lam else None,
                     ensemble_lambda=lam)
    valid = (soft > 0.4).reshape(len(soft), -1).any(axis=1)
    assert not valid[0] and valid[1:].all()
    assert (result.clip_probs[0] == 0).all()  # the invalid mask was not classified
    expected = ovseg_semantic_labels(soft, ref_prop, result.clip_probs[valid], valid, lam or 0.0)
    np.testing.assert_array_equal(result.labels, expected)
    assert (result.labels < len(names)).all()  # every pixel gets a class, as OVSeg


def test_threshold_is_strict_and_decides_validity(classifier) -> None:
    """``mask > 0.4``: a mask whose best pixel is exactly 0.4 is not classified."""
    image, soft = random_case(7, q=3)
    soft[1] = np.minimum(soft[1], 0.4)
    soft[1, 0, 0] = 0.4
    proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(3, np.float32), backend="test", soft_masks=soft)
    result = segment(image, ["a", "b"], proposals, classifier)
    assert (result.clip_probs[1] == 0).all() and (result.clip_probs[2] > 0).any()
    at_lower = segment(image, ["a", "b"], proposals, classifier, mask_threshold=0.3)
    assert (at_lower.clip_probs[1] > 0).any()


def test_hard_masks_keep_the_earlier_behaviour(classifier) -> None:
    image, soft = random_case(3)
    proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(len(soft), np.float32), backend="test",
                            soft_masks=soft)
    hard = segment(image, ["x", "y", "z"], proposals, classifier, hard_masks=True, empty_label=255)
    binary = soft > 0.4
    covered = binary[1:].any(axis=0)
    assert ((hard.labels == 255) == ~covered).all()
    sums = np.tensordot(hard.clip_probs.T, binary.astype(np.float32), axes=([1], [0]))
    np.testing.assert_array_equal(hard.labels[covered], sums.argmax(axis=0)[covered])


def test_maskformer_eval_proposals_keep_every_soft_query_and_restricted_softmax() -> None:
    generator = build_proposal_generator(ProposalSpec(backend="maskformer", checkpoint=TINY_CHECKPOINT, device="cpu"))
    model, processor = generator.model, generator.processor
    image = np.random.default_rng(2).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    names = ["LABEL_3", "label_0", "LABEL_1"]
    proposals, probs = maskformer_eval_proposals(generator, image, names)
    queries = model.config.num_queries
    assert len(proposals) == queries and proposals.soft_masks.shape == (queries, 40, 56)
    assert proposals.soft_masks.dtype == np.float32
    assert ((proposals.soft_masks > 0) & (proposals.soft_masks < 1)).any()
    np.testing.assert_array_equal(proposals.masks, proposals.soft_masks > 0.4)
    # the restricted softmax from the head's own logits (the same forward pass, recomputed here)
    import torch

    inputs = processor(images=[image], return_tensors="pt", input_data_format="channels_last")
    with torch.inference_mode():
        logits = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs.get("pixel_mask"))
    head = logits.class_queries_logits[0].numpy()
    ref = _softmax(head[:, [3, 0, 1, head.shape[1] - 1]])[:, :-1]
    np.testing.assert_allclose(probs, ref, rtol=1e-4, atol=1e-6)
    assert (probs.sum(axis=1) < 1).all()
    # the mining filters only on request; they keep a subset of the same soft masks
    filtered, fprobs = maskformer_eval_proposals(generator, image, names, filters=True)
    assert len(filtered) <= queries
    for row in range(len(filtered)):
        hits = [q for q in range(queries) if np.array_equal(proposals.soft_masks[q], filtered.soft_masks[row])]
        assert hits and np.allclose(fprobs[row], probs[hits[0]])


def test_demo_with_one_class_adds_others_and_leaves_its_pixels_unpainted() -> None:
    """OVSeg's demo appends "others" to a single class name (OVSegDEMO.forward). Reference: CLIP
    probabilities over [name, others] of every valid soft mask, einsum, argmax; "others" pixels unpainted."""
    from maskmine.eval.demo import NO_CLASS, OTHERS, demo_labels

    sample = build_classifier(ClipSpec(model="sample", device="cpu"))  # the committed, trained sample CLIP
    shares = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        image[:20] = (100, 160, 235)  # a plain blue top half
        logits = rng.normal(0.0, 1.0, (5, 40, 48)).astype(np.float32)
        logits[0, :20] += 6.0  # query 0 is the top half, query 1 the bottom half, the rest noise
        logits[0, 20:] -= 6.0
        logits[1, 20:] += 6.0
        logits[1, :20] -= 6.0
        soft = _sigmoid(logits).astype(np.float32)
        proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(len(soft), np.float32), backend="test",
                                soft_masks=soft)
        for name in ("sky", "water"):
            labels = demo_labels(image, [name], proposals, sample, None)
            scores = sample.classify(image, soft > 0.4, [name, OTHERS])
            semseg = np.tensordot(scores.probs[scores.valid].T, soft[scores.valid], axes=([1], [0]))
            painted = semseg.argmax(axis=0) == 0
            np.testing.assert_array_equal(labels, np.where(painted, 0, NO_CLASS))
            shares.append(float(painted.mean()))
    assert any(0.0 < x < 1.0 for x in shares), shares  # "others" does win somewhere: the test can fail
    # with two names nothing is added: every pixel is painted with one of them
    two = demo_labels(image, ["sky", "water"], proposals, sample, None)
    assert set(np.unique(two).tolist()) <= {0, 1}
