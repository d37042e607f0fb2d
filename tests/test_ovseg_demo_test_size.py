"""OVSeg's demo inference (``maskmine demo --inference ovseg-demo``) and OVSeg's test size (``--test-size``).

The references are written here from OVSeg's code (ov-seg@36f49d4: ``OVSegDEMO.forward`` and
``demo_inference`` in open_vocab_seg/ovseg_model.py lines 389-391 and 429-460, MASK_THR 0.35 in
configs/ovseg_swinB_vitL_demo.yaml line 49, ``VisualizationDemo.run_on_image`` in
open_vocab_seg/utils/predictor.py lines 119-123) and detectron2's (``ResizeShortestEdge.get_output_shape``,
``sem_seg_postprocess``), in plain numpy, and on small cases checked by hand.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maskmine.eval.demo import DemoApp, DemoConfig, FormState, demo_labels, render_page
from maskmine.eval.inference import build_classifier, segment
from maskmine.eval.ovseg_demo import (
    OTHERS,
    OVSEG_DEMO_MASK_THRESHOLD,
    demo_label_map,
    demo_scores,
    demo_select,
    segment_ovseg_demo,
)
from maskmine.eval.shortest_edge import resize_label_map, scores_to_size, shortest_edge_shape
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.proposals.factory import ProposalSpec
from maskmine.transforms.records import ProposalSet

BLANK = 65535


# ---- OVSeg's demo: the formula by hand -----------------------------------------------------------

# One row of 4 pixels, 4 valid masks, classes a, b, c. Mask probabilities:
SOFT = np.array([
    [[0.9, 0.38, 0.0, 0.0]],   # q0: pixel 1 only above 0.35, not above 0.4 or 0.5
    [[0.0, 0.9, 0.36, 0.0]],   # q1: pixel 2 only above 0.35
    [[0.0, 0.0, 0.9, 0.0]],    # q2
    [[0.9, 0.9, 0.9, 0.2]],    # q3: the best mask of no class
], dtype=np.float32)
PROBS = np.array([
    [0.60, 0.30, 0.10],  # q0: best for a
    [0.20, 0.70, 0.10],  # q1: best for b
    [0.50, 0.10, 0.40],  # q2: best for c
    [0.55, 0.35, 0.10],  # q3: second everywhere, so not selected
], dtype=np.float32)


def test_the_demo_threshold_is_ovsegs() -> None:
    assert OVSEG_DEMO_MASK_THRESHOLD == 0.35  # configs/ovseg_swinB_vitL_demo.yaml line 49


def test_demo_formula_by_hand() -> None:
    """select_cls keeps q0, q1, q2 (each a class's argmax) with their whole rows, q3 is zero; binary
    masks at 0.35: q0 = [1,1,0,0], q1 = [0,1,1,0], q2 = [0,0,1,0]. Scores: pixel 0 = q0 = (.6,.3,.1) → a;
    pixel 1 = q0 + q1 = (.8,1.0,.2) → b; pixel 2 = q1 + q2 = (.7,.8,.5) → b; pixel 3: no selected mask,
    class 0 scores 0 → blank. (At 0.5 pixel 2 would be q2 alone → a; soft masks with every mask would
    paint pixel 3.)"""
    names = ["a", "b", "c"]
    select = demo_select(PROBS, names).numpy()
    np.testing.assert_array_equal(select, np.vstack([PROBS[:3], np.zeros((1, 3), np.float32)]))
    scores = demo_scores(SOFT > 0.35, PROBS, names)
    np.testing.assert_allclose(scores[:, 0].numpy().T, [[.6, .3, .1], [.8, 1.0, .2], [.7, .8, .5], [0, 0, 0]],
                               atol=1e-6)
    np.testing.assert_array_equal(demo_label_map(scores, BLANK), [[0, 1, 1, BLANK]])


def test_others_best_mask_is_not_selected_but_others_is_painted_by_hand() -> None:
    """Names [a, others]: the best mask of "others" (q1) is dropped (lines 455-456); q0 is kept with its
    whole row, and where its "others" probability is higher the pixel is "others" (label 1), painted."""
    masks = np.array([[[1, 1, 0]], [[0, 1, 1]]], dtype=bool)
    probs = np.array([[0.45, 0.55], [0.10, 0.90]], dtype=np.float32)
    scores = demo_scores(masks, probs, ["a", OTHERS])
    np.testing.assert_array_equal(demo_label_map(scores, BLANK), [[1, 1, BLANK]])
    # two real names: the second's best mask (q1) is selected and pixel 2 is painted
    np.testing.assert_array_equal(demo_label_map(demo_scores(masks, probs, ["a", "b"]), BLANK), [[1, 1, 1]])
    # OVSeg's blank test is "class 0 scores exactly 0": a covered pixel whose class 0 underflowed is blank too
    under = demo_scores(masks[:1], np.array([[0.0, 1.0]], np.float32), ["a", "b"])
    np.testing.assert_array_equal(demo_label_map(under, BLANK), [[BLANK, BLANK, BLANK]])


# ---- OVSeg's demo with the real sample CLIP, against a numpy reference ---------------------------

def ovseg_demo_reference(soft: np.ndarray, probs_valid: np.ndarray, valid: np.ndarray, names: list[str],
                         mask_thr: float = 0.35) -> np.ndarray:
    """demo_inference with CLIP_ENSEMBLE_WEIGHT 0, then the predictor's blank and argmax, in numpy."""
    mask_pred = soft[valid]
    bin_mask = mask_pred > mask_thr
    select_cls = np.zeros((int(valid.sum()), len(names)), np.float32)
    select_mask = probs_valid.argmax(axis=0)
    if len(names) == 2 and names[-1] == "others":
        select_mask = select_mask[:-1]
    for idx in select_mask:
        select_cls[idx] = probs_valid[idx]
    r = np.einsum("qc,qhw->chw", select_cls, bin_mask.astype(np.float32))
    pred = r.argmax(axis=0)
    pred[r[0] == 0] = BLANK
    return pred


@pytest.fixture(scope="module")
def sample_clip():
    return build_classifier(ClipSpec(model="sample", device="cpu"))  # the committed, trained sample CLIP


def scene(seed: int, q: int = 6, h: int = 40, w: int = 48):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    image[: h // 2] = (100, 160, 235)  # a plain blue top half
    logits = rng.normal(0.0, 1.0, (q, h, w)).astype(np.float32)
    logits[0, : h // 2] += 6.0
    logits[1, h // 2 :] += 6.0
    logits[-1] = -9.0  # no pixel above any threshold: not valid
    soft = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    proposals = ProposalSet(masks=soft > 0.4, scores=np.ones(q, np.float32), backend="test", soft_masks=soft)
    return image, soft, proposals


@pytest.mark.parametrize("names", [["sky", "grass", "circle"], ["sky", OTHERS], ["water", "sky"]])
def test_segment_ovseg_demo_matches_the_reference(sample_clip, names) -> None:
    differs_at_half = differs_soft = False
    for seed in range(3):
        image, soft, proposals = scene(seed)
        got = segment_ovseg_demo(image, names, proposals, sample_clip, blank_label=BLANK)
        ref_scores = sample_clip.classify(image, soft > 0.35, names)
        assert not ref_scores.valid[-1] and ref_scores.valid[:-1].all()
        ref = ovseg_demo_reference(soft, ref_scores.probs[ref_scores.valid], ref_scores.valid, names)
        np.testing.assert_array_equal(got.labels, ref)
        # the scenes can tell the threshold and the inference apart: at 0.5, or with every soft mask
        # (maskmine's eval inference), the labels differ
        at_half = ovseg_demo_reference(soft, ref_scores.probs[ref_scores.valid], ref_scores.valid, names, 0.5)
        differs_at_half |= not np.array_equal(at_half, ref)
        soft_labels = segment(image, names, proposals, sample_clip, empty_label=BLANK).labels
        differs_soft |= not np.array_equal(soft_labels, ref)
    assert differs_at_half and differs_soft


def test_demo_labels_paint_others_only_in_ovseg_demo_mode(sample_clip) -> None:
    """One class name: "others" is appended in both modes; maskmine's mode leaves its pixels unpainted,
    OVSeg's demo paints them as label 1 ("others"), as its visualiser does."""
    found_others = False
    for seed in range(4):
        image, soft, proposals = scene(seed)
        for name in ("sky", "grass"):
            ovseg = demo_labels(image, [name], proposals, sample_clip, None, inference="ovseg-demo")
            scores = sample_clip.classify(image, soft > 0.35, [name, OTHERS])
            ref = ovseg_demo_reference(soft, scores.probs[scores.valid], scores.valid, [name, OTHERS])
            np.testing.assert_array_equal(ovseg, ref)
            found_others |= bool((ovseg == 1).any())
            plain = demo_labels(image, [name], proposals, sample_clip, None)
            assert not (plain == 1).any()
    assert found_others  # "others" does win somewhere: the test can fail


def test_demo_app_ovseg_mode_and_test_size_say_so_on_the_page() -> None:
    import io

    from PIL import Image

    tiny = dict(clip=ClipSpec(model="maskmine-tiny", pretrained="none"),
                maskformer=ProposalSpec(backend="maskformer", checkpoint="maskmine-tiny"), device="cpu")
    app = DemoApp(DemoConfig(**tiny, inference="ovseg-demo", test_size=24))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)).save(buf, format="PNG")
    result = app.run(buf.getvalue(), "cat", "maskformer", "0.8")
    assert (result.width, result.height) == (45, 30)
    with Image.open(io.BytesIO(result.overlay_png)) as overlay:
        assert overlay.size == (45, 30)
    assert result.inference.startswith("OVSeg's demo inference (masks at 0.35")
    assert "at 36x24 (short side 24" in result.inference and "back to 45x30" in result.inference
    assert {x.name for x in result.legend} <= {"cat", OTHERS}
    page = render_page(app, FormState(classes="cat"), result)
    assert "painted by OVSeg's demo inference" in page and "short side of 24" in page
    assert "id='inference'>OVSeg&#39;s demo inference (masks at 0.35" in page
    plain = DemoApp(DemoConfig(**tiny))
    assert "--inference ovseg-demo" in render_page(plain, FormState(classes="cat"))
    again = plain.run(buf.getvalue(), "cat", "maskformer", "0.8")
    assert again.inference.startswith("maskmine's evaluation inference") and "own size" in again.inference


# ---- OVSeg's test size ---------------------------------------------------------------------------

def test_shortest_edge_shape_by_hand() -> None:
    assert shortest_edge_shape(480, 640, 640) == (640, 853)  # 640 * 4/3 = 853.33
    assert shortest_edge_shape(640, 480, 640) == (853, 640)
    assert shortest_edge_shape(300, 300, 640) == (640, 640)
    assert shortest_edge_shape(101, 202, 640) == (640, 1280)
    assert shortest_edge_shape(300, 500, 640) == (640, 1067)  # 1066.67 rounds half up
    # the long side is capped at 2560: 100 x 3000 → 640 x 19200 → scaled by 2560/19200 → 85.33 x 2560
    assert shortest_edge_shape(100, 3000, 640) == (85, 2560)
    with pytest.raises(ValueError):
        shortest_edge_shape(0, 10, 640)


def test_scores_to_size_is_bilinear_without_corner_alignment_by_hand() -> None:
    """[0, 1] to 4 pixels: sources (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped → 0, .25, .75, 1."""
    up = scores_to_size(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    np.testing.assert_allclose(up.numpy(), [[[0.0, 0.25, 0.75, 1.0]]], atol=1e-7)
    down = scores_to_size(torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]), (1, 2))  # sources 0.5 and 2.5
    np.testing.assert_allclose(down.numpy(), [[[0.5, 2.5]]], atol=1e-7)


def test_resize_label_map_keeps_labels() -> None:
    label = np.array([[0, 1], [2, 65535]], dtype=np.uint16)
    big = resize_label_map(label, (4, 4))
    assert big.dtype == np.uint16
    np.testing.assert_array_equal(big, np.kron(label, np.ones((2, 2), np.uint16)))


def bilinear_reference(scores: np.ndarray, h: int, w: int) -> np.ndarray:
    """(C, h0, w0) → (C, h, w) bilinear, align_corners=False, edges clamped (detectron2's sem_seg_postprocess)."""
    def taps(n_in: int, n_out: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float64)
    y0, y1, fy = taps(scores.shape[1], h)
    x0, x1, fx = taps(scores.shape[2], w)
    s = scores.astype(np.float64)
    top = s[:, y0][:, :, x0] * (1 - fx) + s[:, y0][:, :, x1] * fx
    bottom = s[:, y1][:, :, x0] * (1 - fx) + s[:, y1][:, :, x1] * fx
    return top * (1 - fy)[None, :, None] + bottom * fy[None, :, None]


def test_segment_at_test_size_matches_the_reference(sample_clip) -> None:
    """OVSeg's eval at test size: segment the resized image, interpolate (C, h, w) back, argmax."""
    names = ["sky", "grass", "circle", "house"]
    differs = False
    for seed in range(3):
        small, soft, proposals = scene(seed, h=20, w=24)
        got = segment(small, names, proposals, sample_clip, output_size=(50, 60))
        scores = sample_clip.classify(small, soft > 0.4, names)
        semseg = np.einsum("qc,qhw->chw", scores.probs[scores.valid], soft[scores.valid])
        ref = bilinear_reference(semseg, 50, 60).argmax(axis=0)
        assert got.labels.shape == (50, 60)
        np.testing.assert_array_equal(got.labels, ref)
        # nearest upsampling of the small label map is not the same (the interpolation matters)
        nearest = resize_label_map(semseg.argmax(axis=0), (50, 60))
        differs |= not np.array_equal(ref, nearest)
    assert differs


def test_eval_test_size_end_to_end(tmp_path, sample_clip) -> None:
    """``maskmine eval --test-size``: recorded in settings.json; the prediction is the reference's: image
    resized (PIL bilinear), label map resized (nearest) for the coco-gt regions, CLIP on the small image,
    the score map interpolated back to the label map's size, argmax."""
    from PIL import Image

    from maskmine.eval.run import read_image_file
    from maskmine.eval.datasets import get_dataset
    from maskmine.pipelines.cli import main

    root = tmp_path / "data"
    images = root / "ADEChallengeData2016" / "images" / "validation"
    labels = root / "ADEChallengeData2016" / "annotations_detectron2" / "validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    label = np.zeros((30, 40), np.uint8)
    label[15:, :] = 3
    label[5:20, 10:20] = 7
    label[:2] = 255
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(images / "ADE_val_00000000.png")
    Image.fromarray(label).save(labels / "ADE_val_00000000.png")
    out = tmp_path / "eval"
    args = ["eval", "--dataset", "ade20k-150", "--root", str(root), "--proposals", "coco-gt",
            "--clip-model", "sample", "--device", "cpu", "--no-progress", "--visualise", "0",
            "--out", str(out), "--test-size", "64"]
    assert main(args) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["test_size"] == {"short_edge": 64, "max_size": 2560}
    with Image.open(out / "predictions" / "ADE_val_00000000.png") as pred:
        pred = np.asarray(pred)
    assert pred.shape == (30, 40)

    names = get_dataset("ade20k-150", str(root)).class_names
    image = read_image_file(images / "ADE_val_00000000.png", (30, 40))
    small = np.asarray(Image.fromarray(image).resize((85, 64), Image.BILINEAR))  # 40 * 64/30 = 85.3
    small_label = np.asarray(Image.fromarray(label).resize((85, 64), Image.NEAREST))
    present = [c for c in np.unique(small_label) if c != 255]
    masks = np.stack([small_label == c for c in present])
    scores = sample_clip.classify(small, masks, names)
    semseg = np.einsum("qc,qhw->chw", scores.probs, masks.astype(np.float32))
    np.testing.assert_array_equal(pred, bilinear_reference(semseg, 30, 40).argmax(axis=0))

    # without the flag the folder's settings differ: refused; a new folder records no test_size
    assert main(args[:-2]) == 2
    assert main([*args[:-4], "--out", str(tmp_path / "plain")]) == 0
    assert "test_size" not in json.loads((tmp_path / "plain" / "settings.json").read_text())
