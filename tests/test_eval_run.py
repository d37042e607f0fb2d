"""End to end ``maskmine eval`` on a tiny ADE-150-layout dataset written by the test (small random models)."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskmine.finetune.adapted import AdaptedClip
from maskmine.finetune.checkpoint import ExportConfig, weights_fingerprint, write_export
from maskmine.finetune.model import MaskPromptCLIP

from maskmine.eval.datasets import get_dataset, load_label
from maskmine.eval.gt_proposals import label_map_proposals
from maskmine.eval.inference import build_classifier, segment
from maskmine.eval.proposal_classes import class_columns, maskformer_eval_proposals
from maskmine.eval.run import encode_prediction
from maskmine.transforms.run_folder import EVAL_PRED_DIR as PRED_DIR
from maskmine.eval.semantic import semantic_inference
from maskmine.eval.visualise import colour_table, colourise, comparison_panel
from maskmine.pipelines.cli import main
from maskmine.transforms.clip_models import ClipSpec, load_clip
from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.proposals.maskformer import TINY_CHECKPOINT
from maskmine.transforms.records import ProposalSet

ADE = "ADEChallengeData2016"
TINY = ["--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu", "--no-progress"]
SAM_TINY = ["--proposals", "sam", "--sam-model-type", "maskmine-tiny", "--sam-points-per-side", "4",
            "--sam-pred-iou-thresh", "0", "--sam-stability-thresh", "0", "--sam-box-nms", "1.0"]


def write_ade(root: Path, count: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    """ADE-150 as detectron2's prepare script leaves it: JPEG images + 8-bit label PNGs, 255 = ignore."""
    images = root / ADE / "images" / "validation"
    labels = root / ADE / "annotations_detectron2" / "validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    h, w = size
    for i in range(count):
        label = np.full((h, w), 0, np.uint8)  # wall
        label[h // 2 :, :] = 3  # floor
        label[h // 4 : 3 * h // 4, w // 4 : w // 2] = 7 + i  # an object that differs per image
        label[:2, :] = 255  # an ignored border
        colours = rng.integers(0, 255, (256, 3), dtype=np.uint8)
        image = colours[label] // 2 + rng.integers(0, 128, (h, w, 3), dtype=np.uint8)
        stem = f"ADE_val_{i:08d}"
        Image.fromarray(image).save(images / f"{stem}.jpg", quality=95)
        Image.fromarray(label).save(labels / f"{stem}.png")
    return root


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return write_ade(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_eval_maskformer_writes_metrics_csv_visualisations_and_resumes(ade_root, tmp_path, capsys):
    out = tmp_path / "eval-ade150"
    args = ["eval", "--dataset", "ade20k-150", "--root", str(ade_root), "--proposals", "maskformer",
            "--proposal-checkpoint", "maskmine-tiny", *TINY, "--out", str(out), "--visualise", "2"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "ade150" and metrics["num_classes"] == 150
    assert metrics["images"] == 3 and metrics["images_computed"] == 3 and metrics["images_cached"] == 0
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 100.0
    rows = read_csv(out / "per_class_iou.csv")
    assert len(rows) == 150 and rows[0]["class_name"] == "wall"
    gt_pixels = {int(r["class_id"]): int(r["gt_pixels"]) for r in rows if int(r["gt_pixels"])}
    # wall, floor and the three objects; ignore border not counted anywhere
    assert sorted(gt_pixels) == [0, 3, 7, 8, 9]
    assert sum(gt_pixels.values()) == 3 * (48 - 2) * 64
    assert sorted(p.name for p in (out / "visualisations").iterdir()) == [
        "ADE_val_00000000.png", "ADE_val_00000001.png"]
    with Image.open(out / "visualisations" / "ADE_val_00000000.png") as vis:
        assert vis.width == 3 * 64 and vis.height > 48
    preds = sorted((out / PRED_DIR).iterdir())
    assert [p.stem for p in preds] == [f"ADE_val_{i:08d}" for i in range(3)]
    first = {p.name: p.read_bytes() for p in preds}

    # rerun: every image from the cache, same numbers
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["images_cached"] == 3 and again["images_computed"] == 0
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "per_class"):
        assert again[key] == metrics[key]

    # an interrupted run (one prediction lost) recomputes just that image, identically
    (out / PRED_DIR / "ADE_val_00000001.png").unlink()
    assert main(args) == 0
    third = json.loads((out / "metrics.json").read_text())
    assert third["images_cached"] == 2 and third["images_computed"] == 1
    assert (out / PRED_DIR / "ADE_val_00000001.png").read_bytes() == first["ADE_val_00000001.png"]
    assert third["mIoU"] == metrics["mIoU"]

    # different settings into the same folder are refused
    capsys.readouterr()
    assert main([*args, "--templates", "simple"]) == 2
    assert "different settings (templates differ)" in capsys.readouterr().err


def test_eval_metrics_follow_the_cached_predictions(ade_root, tmp_path):
    """The metrics are computed from the predictions: plant perfect ones, get 100."""
    out = tmp_path / "oracle"
    args = ["eval", "--dataset", "ade20k-150", "--root", str(ade_root), "--proposals", "coco-gt",
            *TINY, "--out", str(out), "--visualise", "0"]
    assert main(args) == 0  # writes settings.json and real predictions
    dataset = get_dataset("ade20k-150", ade_root)
    for _, label_path in dataset.items:
        gt = load_label(label_path)
        perfect = np.where(gt == 255, 0, gt)  # ignore pixels may be predicted as anything
        (out / PRED_DIR / f"{label_path.stem}.png").write_bytes(encode_prediction(perfect))
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == metrics["pACC"] == metrics["mACC"] == metrics["fwIoU"] == 100.0


def test_an_exif_tagged_image_is_evaluated_in_its_label_maps_frame(tmp_path):
    """A stored image tagged "rotate 90 degrees" still fits its label map (drawn on the stored
    pixels): same metrics as without the tag, visualisation included."""
    plain, tagged = write_ade(tmp_path / "plain", count=2), write_ade(tmp_path / "tagged", count=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    for root, tags in ((plain, Image.Exif()), (tagged, exif)):  # both re-encoded alike: same pixels
        image = next((root / ADE / "images" / "validation").glob("*.jpg"))
        with Image.open(image) as im:
            pixels = im.copy()
        pixels.save(image, quality=95, exif=tags)
    results = []
    for root in (plain, tagged):
        out = tmp_path / f"out-{root.name}"
        assert main(["eval", "--dataset", "ade20k-150", "--root", str(root), "--proposals", "coco-gt",
                     *TINY, "--out", str(out), "--visualise", "2", "--no-progress"]) == 0
        results.append(json.loads((out / "metrics.json").read_text())["mIoU"])
    assert results[0] == results[1]


def test_coco_gt_proposals_are_one_mask_per_present_class(ade_root, classifier):
    dataset = get_dataset("ade20k-150", ade_root)
    gt = load_label(dataset.items[0][1])
    proposals = label_map_proposals(gt, dataset.class_names, dataset.ignore_label)
    assert proposals.labels == ["wall", "floor", "bed"]
    assert proposals.masks.shape == (3, 48, 64)
    assert not proposals.masks[:, :2].any()  # ignore border is in no mask
    assert (proposals.masks.sum(0) == (gt != 255)).all()  # disjoint, covering every labelled pixel
    image = np.asarray(Image.open(dataset.items[0][0]).convert("RGB"))
    result = segment(image, dataset.class_names, proposals, classifier, empty_label=255)
    # each ground-truth region gets the single class CLIP prefers for it
    for q, mask in enumerate(proposals.masks):
        assert (result.labels[mask] == result.class_probs[q].argmax()).all()
    # the ignore border is in no mask: OVSeg's argmax gives it class 0 (the metric ignores it there);
    # maskmine's --hard-masks variant leaves it unlabelled
    assert (result.labels[:2] == 0).all()
    hard = segment(image, dataset.class_names, proposals, classifier, empty_label=255, hard_masks=True)
    assert (hard.labels[:2] == 255).all() and (hard.labels[2:] == result.labels[2:]).all()
    assert np.allclose(result.clip_probs.sum(1), 1.0, atol=1e-5)


def test_eval_sam_path_with_granularity(ade_root, tmp_path):
    out = tmp_path / "sam"
    assert main(["eval", "--dataset", "ade20k-150", "--root", str(ade_root), *SAM_TINY,
                 "--granularity", "0.5", *TINY, "--out", str(out), "--limit", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2
    settings = json.loads((out / "settings.json").read_text())
    assert settings["granularity"] == 0.5 and settings["proposals"]["backend"] == "sam"
    # the keys stored eval folders hold: a change would refuse them as "other settings"
    assert settings["proposals"] == {"backend": "sam", "checkpoint": "", "sam_model_type": "maskmine-tiny"}
    assert settings["sam"] == {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                               "box_nms_thresh": 1.0}
    assert (settings["clip_model"], settings["clip_pretrained"]) == ("maskmine-tiny", "none")
    pred = load_label(out / PRED_DIR / "ADE_val_00000000.png")
    assert pred.shape == (48, 64)
    assert set(np.unique(pred).tolist()) <= set(range(150)) | {255}
    # granularity 1 keeps fewer masks than 0 (every mask): at least as many pixels stay uncovered
    uncovered = {}
    for g in ("1", "0"):
        assert main(["eval", "--dataset", "ade20k-150", "--root", str(ade_root), *SAM_TINY, "--granularity", g,
                     *TINY, "--out", str(tmp_path / g), "--limit", "1", "--visualise", "0"]) == 0
        uncovered[g] = int((load_label(tmp_path / g / PRED_DIR / "ADE_val_00000000.png") == 255).sum())
    assert uncovered["1"] > uncovered["0"]


def test_sam_defaults_to_granularity_0_8(ade_root, tmp_path):
    out = tmp_path / "sam-default"
    assert main(["eval", "--dataset", "ade20k-150", "--root", str(ade_root), *SAM_TINY, *TINY,
                 "--out", str(out), "--limit", "1", "--visualise", "0"]) == 0
    assert json.loads((out / "settings.json").read_text())["granularity"] == 0.8


def test_granularity_one_uses_each_class_best_mask_only(classifier):
    """Two overlapping masks: at 1 only the best per class survives; at 0 every mask paints."""
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, :16] = True
    masks[1, 16:] = True
    masks[2, :, :8] = True
    proposals = ProposalSet(masks=masks, scores=np.ones(3, np.float32), backend="test")
    names = ["cat", "dog"]
    fine = segment(image, names, proposals, classifier, granularity=1.0, empty_label=255)
    coarse = segment(image, names, proposals, classifier, granularity=0.0, empty_label=255)
    winners = fine.class_probs.argmax(1)
    assert len(fine.kept) == len(set(winners.tolist()))  # one mask per class that won any
    assert sorted(coarse.kept) == [0, 1, 2]
    assert (coarse.labels != 255).all()  # every pixel is in some mask
    assert (fine.labels == 255).sum() >= (coarse.labels == 255).sum()


def test_ensemble_with_maskformer_class_scores(classifier):
    """λ = 0 is the proposal classifier alone, λ = 1 CLIP alone; names must be in the label set."""
    generator = build_proposal_generator(
        ProposalSpec(backend="maskformer", checkpoint=TINY_CHECKPOINT, device="cpu", min_area_fraction=0.0)
    )
    image = np.random.default_rng(2).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    names = ["LABEL_3", "label_0", "LABEL_1"]
    proposals, probs = maskformer_eval_proposals(generator, image, names)
    assert probs.shape == (len(proposals), 3)
    assert (probs >= 0).all() and (probs.sum(1) <= 1 + 1e-6).all()
    only_proposal = segment(image, names, proposals, classifier, proposal_class_probs=probs,
                            ensemble_lambda=0.0)
    expected = semantic_inference(proposals.soft_masks, probs).numpy()
    assert np.array_equal(only_proposal.labels, expected)
    only_clip = segment(image, names, proposals, classifier, proposal_class_probs=probs, ensemble_lambda=1.0)
    assert np.array_equal(only_clip.labels, segment(image, names, proposals, classifier).labels)
    assert class_columns(["wall", "car, auto"], ["Auto", "wall"]) == [1, 0]
    with pytest.raises(UserError, match="1 of 2 class names are not in its label set"):
        class_columns(["wall"], ["wall", "sky"])


def test_eval_with_adapted_clip(ade_root, tmp_path, classifier):
    """--adapted loads a finetune export; its mask prompts change the region probabilities."""
    base = load_clip("maskmine-tiny", "none")
    fingerprint = weights_fingerprint(base.model)
    model = MaskPromptCLIP(base.model, mode="prompt", prompt_depth=2)
    with torch.no_grad():
        model.mask_prompts.mul_(20.0)
    export = tmp_path / "clip-mpt"
    write_export(export, model.eval(), ExportConfig(
        clip_model="maskmine-tiny", clip_pretrained="none", mode="prompt", prompt_depth=model.prompt_depth,
        step=1, crop=asdict(base.crop_config), base_fingerprint=fingerprint), ["wall", "floor"])
    adapted = build_classifier(ClipSpec(model="ignored", pretrained="ignored", device="cpu"), adapted=str(export))
    assert isinstance(adapted.encoder, AdaptedClip)
    dataset = get_dataset("ade20k-150", ade_root)
    gt = load_label(dataset.items[0][1])
    image = np.asarray(Image.open(dataset.items[0][0]).convert("RGB"))
    masks = label_map_proposals(gt, dataset.class_names, 255).masks
    names = dataset.class_names[:10]
    assert not np.allclose(adapted.classify(image, masks, names).probs, classifier.classify(image, masks, names).probs)
    out = tmp_path / "eval-adapted"
    assert main(["eval", "--dataset", "ade20k-150", "--root", str(ade_root), "--proposals", "coco-gt",
                 "--adapted", str(export), *TINY, "--out", str(out), "--limit", "1", "--visualise", "0"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["adapted"] == str(export.resolve()) and settings["clip_model"] is None


def test_text_embeddings_are_cached_per_class_list(classifier):
    a = classifier.text_embeddings(["cat", "dog"])
    assert classifier.text_embeddings(["cat", "dog"]) is a
    assert a.shape == (2, 32)
    assert torch_allclose_norm(a)


def torch_allclose_norm(t) -> bool:
    return bool(((t.norm(dim=-1) - 1).abs() < 1e-5).all())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--root", "{missing}"], "is not a folder"),
        (["--root", "{empty}"], "no prepared dataset found"),
        (["--root", "{ade}", "--ensemble-lambda", "0.7", "--proposals", "coco-gt"],
         "argument --ensemble-lambda: above 0 needs class scores from the proposal model; only --proposals maskformer "
         "has a class head (got coco-gt)"),
        (["--root", "{ade}", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    ],
)
def test_clear_errors(ade_root, tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    subs = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"), "ade": str(ade_root)}
    extra = [e.format(**subs) for e in extra]
    base = ["eval", "--dataset", "ade20k-150", *TINY, "--out", str(tmp_path / "o")]
    if "--proposals" not in extra:
        base += ["--proposals", "coco-gt"]
    capsys.readouterr()
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskmine eval: error:") and message in err
    assert "Traceback" not in err


def test_figure_colours_are_shared_and_distinct():
    gt = np.array([[0, 0, 144], [255, 144, 3]])
    pred = np.array([[144, 0, 3], [3, 3, 255]])
    table = colour_table([0, 3, 144])
    assert len(set(table.values())) == 3 and (0, 0, 0) not in table.values()
    painted = colourise(gt, table)
    assert tuple(painted[0, 0]) == table[0] and tuple(painted[1, 0]) == (0, 0, 0)
    panel = comparison_panel(np.zeros((2, 3, 3), np.uint8), gt, pred, [f"c{i}" for i in range(150)])
    strip = np.asarray(panel)[16:18]  # below the titles: image | gt | prediction
    assert tuple(strip[0, 3 + 2]) == tuple(strip[0, 6 + 0]) == table[144]  # same class, same colour


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--root", "--proposals", "--proposal-checkpoint", "--granularity",
                 "--ensemble-lambda", "--clip-model", "--clip-pretrained", "--adapted", "--out",
                 "--limit", "--device", "--visualise"):
        assert flag in text
    assert "recall" in text and "precision" in text


def test_settings_identity_takes_clip_from_the_clip_spec(ade_root, tmp_path):
    """The CLIP of EvalConfig.clip under the keys eval folders hold; its crop geometry (not a
    command-line setting) is recorded only where it is not the default."""
    from maskmine.eval.run import EvalConfig, settings_identity
    from maskmine.transforms.masked_crop import CropConfig

    dataset = get_dataset("ade20k-150", str(ade_root))
    config = EvalConfig(dataset="ade20k-150", root=str(ade_root), out=str(tmp_path),
                        clip=ClipSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    identity = settings_identity(config, dataset)
    assert (identity["clip_model"], identity["clip_pretrained"]) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert "clip_crop" not in identity
    wider = EvalConfig(dataset="ade20k-150", root=str(ade_root), out=str(tmp_path),
                       clip=ClipSpec(model="ViT-B-32", crop=CropConfig(expand_ratio=1.5)))
    assert settings_identity(wider, dataset)["clip_crop"]["expand_ratio"] == 1.5


def test_eval_checks_every_label_before_predicting_anything(tmp_path, capsys):
    """A label map of another size, anywhere in the set, stops eval before the first prediction."""
    import os

    root = write_ade(tmp_path / "datasets")
    labels = root / ADE / "annotations_detectron2" / "validation"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(labels / "ADE_val_00000002.png")
    out = tmp_path / "eval"
    args = ["eval", "--dataset", "ade20k-150", "--root", str(root), "--proposals", "coco-gt", *TINY,
            "--out", str(out), "--visualise", "0"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "ADE_val_00000002.png is 12x10 but its image" in err and "64x48" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / PRED_DIR).exists() or not any((out / PRED_DIR).iterdir())

    # entries that are not regular files are counted in metrics.json, never opened
    (labels / "ADE_val_00000002.png").unlink()
    os.mkfifo(labels / "ADE_val_00000002.png")
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["skipped"] == {"not-a-regular-file": 1}
    assert "ade150_classes.txt" in metrics["class_names_source"]


def test_eval_asks_which_pc59_order_and_records_the_answer(tmp_path, capsys):
    """PC-59 at OVSeg's path with nothing to tell OVSeg's order from CAT-Seg's: one line asking, then
    --class-order decides and metrics.json says where the names came from."""
    voc = tmp_path / "datasets" / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "annotations_detectron2" / "pc59_val").mkdir(parents=True)
    label = np.full((24, 32), 255, np.uint8)
    label[4:20, 4:16] = 1
    label[4:20, 16:28] = 36
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(voc / "JPEGImages" / "2008_000002.jpg")
    Image.fromarray(label).save(voc / "annotations_detectron2" / "pc59_val" / "2008_000002.png")
    out = tmp_path / "eval"
    args = ["eval", "--dataset", "pascal-context-59", "--root", str(tmp_path / "datasets"), "--proposals",
            "coco-gt", *TINY, "--out", str(out), "--visualise", "0"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("maskmine eval: error: argument --class-order: is needed: ")
    assert "rerun with --class-order ovseg|catseg or put the names in" in err
    assert main([*args, "--class-order", "catseg"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "catseg order" in metrics["class_names_source"]
    present = {row["class_name"] for row in read_csv(out / "per_class_iou.csv") if int(row["gt_pixels"])}
    assert present == {"bag", "person"}  # ids 1 and 36 in CAT-Seg's (sorted-id) order; OVSeg: bicycle, ground
