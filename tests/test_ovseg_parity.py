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
    from maskmine.eval.demo import NO_CLASS, demo_labels
    from maskmine.eval.ovseg_demo import OTHERS

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


# ---- CLIP's side, computed from OVSeg's code and not through maskmine's CLIP path ---------------
# Ported from facebookresearch/ov-seg at commit 36f49d4 (file and lines given on each function);
# detectron2's BitMasks.get_bounding_boxes is ported too. The reference CLIP is built by open_clip
# directly, with QuickGELU (OVSeg runs OpenAI's CLIP code: third_party/CLIP/clip/model.py), from
# the same weights file an "openai" tag resolves to.

import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

OVSEG_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)  # clip_adapter/adapter.py line 15
OVSEG_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)  # clip_adapter/adapter.py line 16
OVSEG_VILD_PROMPT = [  # clip_adapter/text_template.py lines 96-111
    "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene", "There is the {} in the scene",
    "a photo of a {} in the scene", "a photo of a small {}.", "a photo of a medium {}.", "a photo of a large {}.",
    "This is a photo of a small {}.", "This is a photo of a medium {}.", "This is a photo of a large {}.",
    "There is a small {} in the scene.", "There is a medium {} in the scene.", "There is a large {} in the scene.",
]


def ovseg_quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """third_party/CLIP/clip/model.py lines 232-234."""
    return x * torch.sigmoid(1.702 * x)


def d2_bounding_boxes(bin_mask: torch.Tensor) -> torch.Tensor:
    """detectron2 BitMasks.get_bounding_boxes: (x0, y0, x1 + 1, y1 + 1) per mask, float32."""
    boxes = torch.zeros(bin_mask.shape[0], 4, dtype=torch.float32)
    x_any, y_any = torch.any(bin_mask, dim=1), torch.any(bin_mask, dim=2)
    for idx in range(bin_mask.shape[0]):
        x, y = torch.where(x_any[idx, :])[0], torch.where(y_any[idx, :])[0]
        if len(x) > 0 and len(y) > 0:
            boxes[idx, :] = torch.as_tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
    return boxes


def ovseg_expand_box(x1, y1, x2, y2, expand_ratio=1.0, max_h=None, max_w=None):
    """clip_adapter/utils.py lines 11-33."""
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    w, h = (x2 - x1) * expand_ratio, (y2 - y1) * expand_ratio
    box = [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
    return [int(b) for b in box]


def ovseg_crop_with_mask(image, mask, bbox, fill=(0, 0, 0), expand_ratio=1.0):
    """clip_adapter/utils.py lines 49-66."""
    l, t, r, b = ovseg_expand_box(*bbox, expand_ratio)
    _, h, w = image.shape
    l, t, r, b = max(l, 0), max(t, 0), min(r, w), min(b, h)
    new_image = torch.cat([image.new_full((1, b - t, r - l), fill_value=val) for val in fill])
    return (image[:, t:b, l:r] * mask[None, t:b, l:r] + (1 - mask[None, t:b, l:r]) * new_image,
            mask[None, t:b, l:r])


def ovseg_preprocess(image: torch.Tensor, mask: torch.Tensor, mask_thr: float, size: int = 224):
    """MaskFormerClipAdapter._preprocess_image, clip_adapter/adapter.py lines 147-198 (mask_fill "mean",
    lines 97-101; no matting; region_resized), returning (regions, region_masks, valid). OVSeg's size is
    224, its CLIPs' input; ``size`` lets the tiny test CLIP (64) take its own."""
    fill = [255.0 * c for c in OVSEG_PIXEL_MEAN]
    pixel_mean = torch.Tensor(OVSEG_PIXEL_MEAN).reshape(1, 3, 1, 1) * 255.0
    pixel_std = torch.Tensor(OVSEG_PIXEL_STD).reshape(1, 3, 1, 1) * 255.0
    dtype = mask.dtype
    bin_mask = mask > mask_thr
    valid = bin_mask.sum(dim=(-1, -2)) > 0
    bin_mask = bin_mask[valid]
    regions, region_masks = [], []
    for bbox, single_mask in zip(d2_bounding_boxes(bin_mask), bin_mask):
        region, region_mask = ovseg_crop_with_mask(image.type(dtype), single_mask.type(dtype), bbox, fill=fill)
        regions.append(region.unsqueeze(0))
        region_masks.append(region_mask.unsqueeze(0))
    regions = [(r - pixel_mean) / pixel_std for r in regions]
    regions = torch.cat([F.interpolate(r, size=(size, size), mode="bicubic") for r in regions])
    region_masks = torch.cat([F.interpolate(r, size=(size, size), mode="nearest") for r in region_masks])
    return regions, region_masks, valid


def ovseg_text_features(model, tokenizer, nouns):
    """PredefinedPromptExtractor.forward, clip_adapter/text_template.py lines 130-145 (VILD templates)."""
    bucket = []
    for template in OVSEG_VILD_PROMPT:
        features = model.encode_text(tokenizer([template.format(n) for n in nouns]))
        bucket.append(features / features.norm(dim=-1, keepdim=True))
    features = torch.stack(bucket).mean(dim=0)
    return features / features.norm(dim=-1, keepdim=True)


def ovseg_clip_probs(model, tokenizer, image, soft, names, mask_thr=0.4):
    """CLIP's class probabilities of the valid masks as OVSeg.semantic_inference takes them
    (ovseg_model.py lines 236-242): 100 * cosine (adapter.py lines 63-69, get_image_features 142-145),
    the no-object column (get_text_features, lines 200-206) dropped, softmax."""
    regions, _, valid = ovseg_preprocess(image, soft, mask_thr, model.visual.image_size[0])
    image_features = model.visual(regions)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text = ovseg_text_features(model, tokenizer, names)
    no_object = torch.randn(1, text.shape[1])
    text = torch.cat([text, no_object / no_object.norm(dim=-1, keepdim=True)])
    clip_cls = 100 * image_features @ text.T
    return F.softmax(clip_cls[:, :-1], dim=-1), valid


@pytest.fixture(scope="module")
def openai_weights(tmp_path_factory):
    """maskmine-tiny with an "openai" tag (open_clip's own openai entry, quick_gelu True) pointing at a
    random state dict: what maskmine's loader gets for ``--clip-pretrained openai``, no download."""
    from open_clip import pretrained as registry

    from maskmine.transforms.clip_models import register_configs

    register_configs()  # the tiny config's JSON (transforms/model_configs)
    torch.manual_seed(5)
    weights = tmp_path_factory.mktemp("openai") / "tiny-openai.pt"
    torch.save(open_clip.create_model("maskmine-tiny", force_quick_gelu=True).state_dict(), weights)
    entry = {k: v for k, v in registry.get_pretrained_cfg("ViT-B-16", "openai").items() if k not in ("url", "hf_hub")}
    saved = registry._PRETRAINED.get("maskmine-tiny")
    registry._PRETRAINED["maskmine-tiny"] = {"openai": {**entry, "file": str(weights)}}
    yield weights
    if saved is None:
        del registry._PRETRAINED["maskmine-tiny"]
    else:
        registry._PRETRAINED["maskmine-tiny"] = saved


def reference_clip(weights):
    """OVSeg's CLIP for these weights, built by open_clip itself with QuickGELU."""
    model = open_clip.create_model("maskmine-tiny", force_quick_gelu=True)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), open_clip.get_tokenizer("maskmine-tiny")


def parity_case(seed: int, q: int = 5, h: int = 37, w: int = 53):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    soft = _sigmoid(rng.normal(-1.0, 3.0, (q, h, w))).astype(np.float32)
    soft[0] = 0.1  # never above the threshold: not valid
    return image, soft


@pytest.mark.parametrize("seed", range(3))
def test_masked_crops_are_ovsegs_crops(seed: int) -> None:
    """CropConfig's default crop against OVSeg's _preprocess_image at CLIP's 224: pixels and masks."""
    from maskmine.transforms.masked_crop import CropConfig, masked_crops

    image, soft = parity_case(seed)
    ref_regions, ref_masks, valid = ovseg_preprocess(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(soft), 0.4)
    crops = masked_crops(image, soft[valid.numpy()], CropConfig(threshold=0.4))
    got = torch.stack([c.clip_input for c in crops])
    assert got.shape == ref_regions.shape == (int(valid.sum()), 3, 224, 224)
    torch.testing.assert_close(got, ref_regions, rtol=0, atol=0)  # bit for bit: the same float operations
    np.testing.assert_array_equal(np.stack([c.mask for c in crops]), ref_masks[:, 0].numpy() > 0.5)


def test_openai_clip_runs_with_ovsegs_quick_gelu(openai_weights) -> None:
    """Every MLP of the CLIP maskmine loads for an openai tag computes OpenAI's QuickGELU."""
    from maskmine.transforms.clip_models import load_clip

    clip = load_clip("maskmine-tiny", "openai", "cpu")
    blocks = list(clip.model.visual.transformer.resblocks) + list(clip.model.transformer.resblocks)
    x = torch.linspace(-6, 6, 101)
    for block in blocks:
        torch.testing.assert_close(block.mlp.gelu(x), ovseg_quick_gelu(x), rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed", range(2))
def test_clip_probabilities_are_ovsegs(openai_weights, seed: int) -> None:
    """maskmine's eval (loader, crop, templates, temperature) against OVSeg's CLIP branch on the same
    weights: a temperature of 1, a zero fill, GELU or other templates each change these numbers."""
    image, soft = parity_case(seed)
    names = ["wall", "sky", "car", "tree"]
    model, tokenizer = reference_clip(openai_weights)
    with torch.no_grad():
        expected, valid = ovseg_clip_probs(model, tokenizer, torch.from_numpy(image).permute(2, 0, 1).float(),
                                           torch.from_numpy(soft), names)
    classifier = build_classifier(ClipSpec(model="maskmine-tiny", pretrained="openai", device="cpu"))
    proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(len(soft), np.float32), backend="test",
                            soft_masks=soft)
    result = segment(image, names, proposals, classifier)
    assert valid.numpy().tolist() == [False] + [True] * (len(soft) - 1)
    np.testing.assert_allclose(result.clip_probs[valid.numpy()], expected.numpy(), rtol=0, atol=2e-5)
    assert expected.max() - expected.min() > 0.05  # the probabilities are not flat: the checks have teeth
