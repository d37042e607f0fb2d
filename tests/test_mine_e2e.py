"""End to end: maskmine mine on the committed COCO images (coco_cc_by) through Beam's in-process runner."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import MineConfig, run_mining
from maskmine.transforms.records import Skip
from mining_helpers import coco_mini_config


def mini_config(coco_cc_by: Path, out: Path, **kw) -> MineConfig:
    return coco_mini_config(coco_cc_by, out, num_shards=3, **kw)


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


@pytest.fixture(scope="module")
def mined(coco_cc_by, nltk_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "coco-pairs"
    stats = run_mining(mini_config(coco_cc_by, out), progress=False)
    return out, stats


def test_stats_add_up(mined):
    out, stats = mined
    assert stats == json.loads((out / "stats.json").read_text())
    assert stats["images_read"] == 12
    assert stats["images_mined"] + sum(stats["images_skipped"].values()) == 12
    assert stats["images_mined"] == 12  # the committed images all have nouns and instances
    assert stats["pairs"] > 3 * stats["images_mined"]
    assert stats["shards"] == 3
    assert set(stats["seconds_per_stage"]) >= {"nouns", "decode", "proposals", "crop", "clip", "match", "encode", "write"}
    vocab = json.loads((out / "vocabulary.json").read_text())
    assert len(vocab) == stats["unique_nouns"] and sum(v["pairs"] for v in vocab) == stats["pairs"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == sum(stats["images_skipped"].values())


def test_finished_run_keeps_only_its_outputs(mined):
    out, stats = mined
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "manifest", "parquet", "pairs-000000.tar", "pairs-000001.tar", "pairs-000002.tar",
        "README.md", "rejects.jsonl", "run.json", "sizes.json", "stats.json", "vocabulary.json",
    ])  # no task or progress files or folders, no temporaries


def test_shards_equal_parquet_rows_and_keys_unique(mined, coco_cc_by):
    out, stats = mined
    caption_image = {
        a["id"]: a["image_id"]
        for a in json.loads((coco_cc_by / "annotations" / "captions_train2017.json").read_text())["annotations"]
    }
    urls = [str(p) for p in sorted(out.glob("pairs-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    table = pd.read_parquet(out / "parquet")
    assert len(samples) == len(table) == stats["pairs"]
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)
    rows = table.set_index("key")
    for sample in samples:
        meta = json.loads(sample["json"])
        row = rows.loc[sample["__key__"]]
        assert sample["txt"].decode() == f"a photo of a {meta['noun']}." and meta["noun"] == row["noun"]
        assert meta["image_id"] == row["image_id"] and meta["proposal_index"] == row["proposal_index"]
        assert abs(meta["score"] - row["score"]) < 1e-6
        assert (meta["mask_rle"], meta["height"], meta["width"]) == (row["mask_rle"], row["height"], row["width"])
        assert meta["captions"] == list(row["captions"])
        crop = np.asarray(Image.open(io.BytesIO(sample["jpg"])))
        mask = np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
        assert crop.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert meta["clip_model"] == "maskmine-tiny" and meta["proposal_backend"] == "coco-gt"
        # the noun's provenance: captions of this very image
        assert meta["caption_ids"] and all(caption_image[c] == meta["image_id"] for c in meta["caption_ids"])


def test_rerun_gives_identical_shards(mined, coco_cc_by, tmp_path):
    out, _ = mined
    again = tmp_path / "again"
    run_mining(mini_config(coco_cc_by, again), progress=False)
    assert shard_digests(again) == shard_digests(out)
    assert pd.read_parquet(again / "parquet").equals(pd.read_parquet(out / "parquet"))


def test_resume_after_losing_a_shard(mined, coco_cc_by, tmp_path):
    out, stats = mined
    run = tmp_path / "resumed"
    shutil.copytree(out, run)
    (run / "manifest" / "pairs-000001.json").unlink()
    (run / "pairs-000001.tar").write_bytes(b"half-written")
    again = run_mining(mini_config(coco_cc_by, run), progress=False)
    assert again["shards_resumed"] == 2
    assert shard_digests(run) == shard_digests(out)
    assert again["pairs"] == stats["pairs"]


def test_rerun_with_other_settings_is_refused(mined, coco_cc_by):
    out, _ = mined
    code = main([
        "mine", "--captions", str(coco_cc_by / "annotations" / "captions_train2017.json"),
        "--instances", str(coco_cc_by / "annotations" / "instances_train2017.json"),
        "--images", str(coco_cc_by / "train2017"), "--out", str(out), "--proposals", "coco-gt",
        "--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--num-shards", "5",
    ])
    assert code == 2


def write_captions(path: Path, images: list[tuple[int, str]], caption: str) -> None:
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f, "width": 64, "height": 48} for i, f in images],
        "annotations": [{"id": 100 + i, "image_id": i, "caption": caption} for i, _ in images],
    }))


def test_cli_counts_corrupt_missing_and_odd_images(coco_cc_by, nltk_data, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    real = Image.open(next((coco_cc_by / "train2017").glob("*.jpg"))).convert("RGB").resize((64, 48))
    real.save(images / "good.jpg")
    real.convert("L").save(images / "gray.jpg")
    real.convert("CMYK").save(images / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48 like its entry, so mined as stored (48x64 upright)
    real.save(images / "rotated.jpg", exif=exif)
    (images / "corrupt.jpg").write_bytes((images / "good.jpg").read_bytes()[:300])
    captions = tmp_path / "captions.json"
    names = ["good.jpg", "gray.jpg", "cmyk.jpg", "rotated.jpg", "corrupt.jpg", "missing.jpg"]
    write_captions(captions, list(enumerate(names, start=1)), "A dog sleeping on a red couch.")
    out = tmp_path / "out"
    # coco-gt proposals: one square instance per image
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({
        "images": [{"id": i, "file_name": f, "width": 64, "height": 48} for i, f in enumerate(names, 1)],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [8, 8, 24, 24],
             "segmentation": [[8, 8, 32, 8, 32, 32, 8, 32]], "area": 576}
            for i in range(1, len(names) + 1)
        ],
        "categories": [{"id": 1, "name": "dog"}],
    }))
    code = main([
        "mine", "--captions", str(captions), "--instances", str(instances), "--images", str(images),
        "--out", str(out), "--proposals", "coco-gt", "--clip-model", "maskmine-tiny",
        "--clip-pretrained", "none", "--device", "cpu", "--no-progress",
    ])
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images_read"] == 6
    assert stats["images_skipped"] == {Skip.CORRUPT_IMAGE: 1, Skip.MISSING_IMAGE: 1}
    assert stats["images_mined"] == 4
    rejects = {json.loads(l)["file_name"]: json.loads(l)["reason"] for l in (out / "rejects.jsonl").read_text().splitlines()}
    assert rejects == {"corrupt.jpg": Skip.CORRUPT_IMAGE, "missing.jpg": Skip.MISSING_IMAGE}
    # the EXIF-rotated image is mined in its annotations' frame (as stored): its crop shows what
    # the good image's shows, the same stored pixels under the same mask
    table = pd.read_parquet(out / "parquet")
    file_of = dict(zip(table["key"], table["file_name"]))
    crops: dict[str, np.ndarray] = {}
    for sample in wds.WebDataset([str(p) for p in sorted(out.glob("pairs-*.tar"))], shardshuffle=False):
        crops[file_of[sample["__key__"]]] = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"), np.float32)
    masks = dict(zip(table["file_name"], table["mask_rle"]))
    assert masks["rotated.jpg"] == masks["good.jpg"]
    assert np.abs(crops["rotated.jpg"] - crops["good.jpg"]).mean() < 2.0


def test_missing_or_malformed_annotations_fail_before_work(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    base = ["mine", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--proposals", "coco-gt",
            "--instances", str(bad)]
    assert main(base + ["--captions", str(tmp_path / "nope.json")]) == 2
    assert "captions file not found" in capsys.readouterr().err
    assert main(base + ["--captions", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"images": []}))
    assert main(base + ["--captions", str(bad)]) == 2
    assert "not in COCO format" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
