"""The generated sample set: determinism, COCO files, semantic layout, vocabulary, distractors."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from maskmine.eval.datasets import get_dataset
from maskmine.pipelines.cli import main
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.proposals.base import mask_iou_matrix
from maskmine.transforms.proposals.coco_gt import instance_mask
from maskmine.transforms.proposals.distractors import CocoGtDistractorProposals
from maskmine.transforms.proposals.factory import BACKENDS, ProposalSpec, build_proposal_generator
from maskmine.transforms.sample_world.captions import write_captions
from maskmine.transforms.sample_world.generate import SampleConfig, generate_sample, render, split_paths
from maskmine.transforms.sample_world.scene import generate_scene
from maskmine.transforms.sample_world.vocabulary import CLASSES, CLASS_NAMES, DISTRACTOR_NOUNS, STUFF, noun_to_class


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "README.json"
    }


@pytest.fixture(scope="module")
def small_set(make_sample_set) -> Path:
    return make_sample_set(images=6, val_images=8, seed=3)


def test_same_seed_same_files(small_set, tmp_path):
    again = tmp_path / "again"
    generate_sample(SampleConfig(out=str(again), images=6, val_images=8, seed=3), progress=False)
    assert _digests(small_set) == _digests(again)
    other = tmp_path / "other"
    generate_sample(SampleConfig(out=str(other), images=6, val_images=0, seed=4), progress=False)
    a = (split_paths(small_set, "train").images / "000000000001.jpg").read_bytes()
    b = (split_paths(other, "train").images / "000000000001.jpg").read_bytes()
    assert a != b


def test_train_and_val_come_from_different_seeds():
    _, train, _ = render(0, "train", 0)
    _, val, _ = render(0, "val", 0)
    assert train.image.shape != val.image.shape or not np.array_equal(train.image, val.image)
    info_seed = SampleConfig(out="x", seed=5)
    assert info_seed.effective_val_seed == 6


def _load(path: Path) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(path.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_coco_files_load_and_masks_match_label_maps(small_set):
    paths = split_paths(small_set, "val")
    instances, captions = _load(paths.instances), _load(paths.captions)
    assert [c["name"] for c in instances.loadCats(instances.getCatIds())] == list(CLASS_NAMES)
    assert len(instances.getImgIds()) == 8
    labels_dir = small_set / "semseg" / "annotations" / "validation"
    for image_id in instances.getImgIds():
        info = instances.imgs[image_id]
        assert len(captions.imgToAnns[image_id]) == 5
        label = np.array(Image.open(labels_dir / info["file_name"].replace(".jpg", ".png")))
        assert label.shape == (info["height"], info["width"])
        anns = instances.imgToAnns[image_id]
        assert anns, "every scene has at least one object or stuff band"
        union = np.zeros(label.shape, int)
        for ann in anns:
            mask = instances.annToMask(ann).astype(bool)
            assert mask.sum() == ann["area"] > 0
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert (label[mask] == ann["category_id"] - 1).all()  # the label map shows exactly this object here
            union += mask
        assert union.max() == 1  # visible masks do not overlap (occlusion-aware)
        assert ((union == 1) == (label != 255)).all()  # unlabelled pixels are background


def test_semantic_layout_reads_with_eval(small_set):
    ds = get_dataset("sample", small_set)
    assert ds.class_names == list(CLASS_NAMES) and ds.ignore_label == 255
    assert len(ds) == 8
    values = set(np.unique(ds.load_label(ds.items[0][1])).tolist())
    assert values <= set(range(len(CLASS_NAMES))) | {255}


def test_captions_mine_as_coco(small_set):
    paths = split_paths(small_set, "train")
    records = read_captioned_images(paths.captions, paths.instances)
    assert len(records) == 6 and all(len(r.captions) == 5 for r in records)
    assert all(r.instances and r.width >= 224 for r in records)
    assert all(len({c.text for c in r.captions}) >= 4 for r in records)


def test_vocabulary_is_large_and_varied():
    assert len(CLASSES) >= 30
    assert sum(c.kind == STUFF for c in CLASSES) >= 5
    synonyms = noun_to_class()
    assert len(synonyms) > len(CLASSES)
    assert not set(synonyms) & set(DISTRACTOR_NOUNS)


@pytest.mark.usefixtures("nltk_data")
def test_every_class_noun_survives_the_noun_stage():
    """Singular, plural (irregular ones too) and synonyms come out as the nouns the scorer maps."""
    from maskmine.transforms.nouns import caption_nouns

    failures = []
    for spec in CLASSES:
        p = spec.plural_form
        texts = {
            f"a red {spec.name} next to a blue car.": spec.name,
            f"two small {p} on the grass.": spec.name,
            f"there are three green {p} in the sky.": spec.name,
            f"a photo of a {spec.name}.": spec.name,
            f"A large purple {spec.name} above a tiny orange star": spec.name,
            f"the {spec.name} behind a small ring": spec.name,
        }
        for syn in spec.synonyms:
            texts[f"a picture of a striped {syn} near the tree."] = syn
        if spec.kind == STUFF:  # stuff takes no colour adjective in the grammar
            texts = {t: w for t, w in texts.items() if "purple" not in t and "a red" not in t}
        for text, want in texts.items():
            got = caption_nouns(text)
            if want not in got:
                failures.append((text, got))
    assert not failures


@pytest.mark.usefixtures("nltk_data")
def test_generated_captions_give_the_nouns_they_mention():
    """Over many generated captions the noun stage finds exactly the nouns written (tagger slips are rare)."""
    from maskmine.transforms.nouns import caption_nouns

    exact = total = 0
    for i in range(60):
        rng = np.random.default_rng([11, i])
        for cap in write_captions(generate_scene(rng), rng):
            total += 1
            exact += set(caption_nouns(cap.text)) == set(cap.nouns)
    # measured 1493/1500 (99.5%) on 300 scenes; NLTK's tagger misreads e.g. "striped pink ring/VBG"
    assert exact / total >= 0.95


def _record(small_set: Path, index: int = 0):
    paths = split_paths(small_set, "val")
    return read_captioned_images(paths.captions, paths.instances)[index]


def test_distractor_proposals_are_deterministic_and_keep_ground_truth(small_set):
    assert "coco-gt+distractors" in BACKENDS
    generator = build_proposal_generator(ProposalSpec(backend="coco-gt+distractors"))
    assert isinstance(generator, CocoGtDistractorProposals)
    total_gt = total = 0
    for index in range(4):
        record = _record(small_set, index)
        image = np.zeros((record.height, record.width, 3), np.uint8)
        first = generator.generate([image], [record])[0]
        second = generator.generate([image], [record])[0]
        assert np.array_equal(first.masks, second.masks)
        gt = np.stack([instance_mask(i, record.height, record.width) for i in record.instances])
        iou = mask_iou_matrix(np.concatenate([gt, first.masks]))[: len(gt), len(gt) :]
        assert (iou.max(1) == 1.0).all()  # every ground-truth mask is a proposal, unchanged
        is_gt = iou.max(0) == 1.0
        assert (iou[:, ~is_gt] < 0.8).all()  # distractors are no near-copies of an object
        total_gt += len(gt)
        total += len(first)
    assert total >= 1.5 * total_gt  # there are real distractors to choose from


def test_sample_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["sample", "--out", str(out), "--images", "2", "--val-images", "1", "--seed", "9", "--no-progress"]) == 0
    info = json.loads((out / "README.json").read_text())
    assert info["config"]["seed"] == 9 and info["config"]["val_seed"] == 10
    assert info["splits"]["train"]["images"] == 2 and "classes" in info["vocabulary"]
    assert (out / "README.txt").read_text().startswith("maskmine sample set")
    assert (out / "semseg" / "classes.txt").read_text().split() == list(CLASS_NAMES)
    assert main(["sample", "--out", str(out), "--images", "0", "--val-images", "0"]) == 2
    assert "nothing to generate" in capsys.readouterr().err


# --------------------------------------------------------------------------
# the small CLIP and the method check


def test_pretrain_is_deterministic_and_loads_as_sample_clip(small_set, tmp_path):
    import torch

    from maskmine.finetune.pretrain_config import PretrainSchedule
    from maskmine.finetune.pretrain_sample import PretrainConfig, pretrain
    from maskmine.transforms.clip_models import load_clip

    records = []
    for name in ("a.pt", "b.pt"):
        config = PretrainConfig(data=str(small_set), out=str(tmp_path / name), eval_images=4,
                                schedule=PretrainSchedule(steps=3, batch_size=4, lr=1e-3, warmup=1))
        records.append(pretrain(config, progress=False, command="test"))
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["token_embedding.weight"].dtype == torch.float16
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["steps"] == 3 and record["config"]["seed"] == 0 and record["command"] == "test"
    assert (record["config"]["steps"], record["config"]["warmup"]) == (3, 1)  # flat, as records before the schedule
    assert record["final_loss"] > 0 and record["sanity"]["crops"] > 0
    assert 0 <= record["sanity"]["crop_accuracy"] <= 1
    clip = load_clip("sample", str(tmp_path / "a.pt"), "cpu")
    assert clip.crop_config.input_size == 80 and clip.pretrained == str(tmp_path / "a.pt")
    assert torch.equal(clip.model.state_dict()["visual.conv1.weight"], a["visual.conv1.weight"].float())


@pytest.fixture(scope="module")
def mined_val20(tmp_path_factory, nltk_data) -> Path:
    """20 val scenes mined with the committed sample CLIP and coco-gt+distractors proposals."""
    from maskmine.pipelines.mine import MineConfig, run_mining
    from maskmine.transforms.clip_models import ClipSpec
    from maskmine.transforms.clip_models import SAMPLE_CHECKPOINT

    if not SAMPLE_CHECKPOINT.is_file():
        pytest.skip(f"{SAMPLE_CHECKPOINT} not committed")
    tmp_path = tmp_path_factory.mktemp("val20")
    data = tmp_path / "val20"
    generate_sample(SampleConfig(out=str(data), images=0, val_images=20, seed=0), progress=False)
    paths = split_paths(data, "val")
    out = tmp_path / "run"
    run_mining(
        MineConfig(
            captions=str(paths.captions), instances=str(paths.instances), images=str(paths.images), out=str(out),
            proposals=ProposalSpec(backend="coco-gt+distractors", device="cpu"),
            clip=ClipSpec(model="sample", pretrained="sample", device="cpu"), num_shards=1,
        ),
        progress=False,
    )
    return out


def test_committed_sample_clip_mines_right_pairs(mined_val20):
    """Reduced issue-5 check: mining with the committed sample CLIP beats chance by far."""
    from maskmine.transforms.sample_world.scoring import pair_precision

    score = pair_precision(mined_val20)
    assert score.index_mismatches == 0 and score.scored >= 50
    assert 0.05 < score.chance < 0.25
    # Measured with the committed checkpoint: 19/68 = 0.279 vs chance 0.117 on these 20 images
    # (full val split, 300 images: 0.323 vs 0.122). The run is deterministic; the margin is
    # for float differences across machines and thread counts.
    assert score.precision >= 1.6 * score.chance and score.precision >= 0.2


def test_prompt_tuning_the_sample_clip_leaves_its_weights_alone(mined_val20, tmp_path):
    """Reduced issue-5 check: `maskmine train --mode prompt` on mined pairs changes prompts only."""
    import torch

    from maskmine.finetune.adapted import load_adapted
    from maskmine.transforms.clip_models import load_clip

    out = tmp_path / "mpt"
    code = main(["train", "--shards", str(mined_val20 / "pairs-000000.tar"), "--out", str(out),
                 "--clip-model", "sample", "--mode", "prompt", "--batch-size", "16", "--lr", "1e-2",
                 "--warmup-steps", "0", "--steps", "3", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert code == 0
    adapted = load_adapted(out)
    base = load_clip("sample", None, "cpu").model.state_dict()
    tuned = adapted.model.clip.state_dict()
    assert base.keys() == tuned.keys()
    # the CLIP weights stay; only the temperature trains with the prompts (OVSeg's stage 2)
    assert all(torch.equal(base[k], tuned[k]) for k in base if k != "logit_scale")
    assert (out / "prompts.pt").is_file() and not (out / "model.pt").exists()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["mode"] == "prompt"
