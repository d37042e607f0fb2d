"""A run folder read as it is by the tools people already use: webdataset, Hugging Face datasets,
DuckDB over the Parquet, open_clip's own trainer (no --train-num-samples)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from maskmine.pipelines.mine import run_mining
from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE
from mining_helpers import coco_mini_config


@pytest.fixture(scope="module")
def run(coco_cc_by, nltk_data, tmp_path_factory) -> Path:
    """The 12 committed COCO images with the default shard count (at least 8 shards)."""
    out = tmp_path_factory.mktemp("clients") / "run"
    run_mining(coco_mini_config(coco_cc_by, out), progress=False)
    return out


def _manifests(run: Path) -> dict[str, dict]:
    return {m["tar"]: m for m in (json.loads(p.read_text()) for p in sorted((run / "manifest").glob("*.json")))}


def test_sizes_json_and_dataset_card_describe_the_shards(run: Path) -> None:
    manifests = _manifests(run)
    assert len(manifests) >= 8  # as many shards as open_clip's default 4 workers, twice over
    sizes = json.loads((run / "sizes.json").read_text())
    assert sizes == {tar: m["samples"] for tar, m in manifests.items()}
    card = (run / "README.md").read_text()
    header = card.split("---")[1]
    listed = re.findall(r'- "(pairs-\d+\.tar)"', header)
    assert listed == sorted(t for t, n in sizes.items() if n > 0)
    assert "Attribution" in card and "COCO Consortium" in card  # the captions file's licences and origin
    identity = json.loads((run / "run.json").read_text())["identity"]
    assert identity["caption_template"] == DEFAULT_CAPTION_TEMPLATE and identity["captions_sha256"] in card


def test_webdataset_reads_captions_and_one_mask_schema(run: Path) -> None:
    import pandas as pd
    import webdataset as wds

    table = pd.concat(pd.read_parquet(p) for p in sorted((run / "parquet").glob("*.parquet"))).set_index("key")
    urls = [str(p) for p in sorted(run.glob("pairs-*.tar")) if p.stat().st_size > 10240]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        meta = sample["json"]
        assert sample["txt"] == DEFAULT_CAPTION_TEMPLATE.format(noun=meta["noun"])
        row = table.loc[sample["__key__"]]
        assert (meta["mask_rle"], meta["height"], meta["width"]) == (row["mask_rle"], row["height"], row["width"])
        assert meta["captions"] == list(row["captions"]) and len(meta["captions"]) == len(meta["caption_ids"]) > 0
        assert sample["mask.png"].size == sample["jpg"].size
        seen += 1
    assert seen == len(table) == sum(json.loads((run / "sizes.json").read_text()).values())


def test_caption_texts_are_the_captions_files_own(run: Path, coco_cc_by: Path) -> None:
    import duckdb

    captions = json.loads((coco_cc_by / "annotations" / "captions_train2017.json").read_text())["annotations"]
    text = {c["id"]: c["caption"] for c in captions}
    rows = duckdb.sql(f"select caption_ids, captions, noun from read_parquet('{run}/parquet/*.parquet')").fetchall()
    assert rows and all([text[i].strip() for i in ids] == list(texts) for ids, texts, _ in rows)
    from maskmine.transforms.nouns import caption_nouns

    # each pair's noun is one its captions give (as a lemma: "people" gives "person")
    assert all(noun in {n for t in texts for n in caption_nouns(t)} for _, texts, noun in rows)
    count, total = duckdb.sql(
        f"select count(*), (select sum(samples) from read_json_auto('{run}/manifest/*.json')) "
        f"from read_parquet('{run}/parquet/*.parquet')").fetchall()[0]
    assert count == total


def test_hugging_face_datasets_loads_the_run_folder_as_is(run: Path, tmp_path: Path) -> None:
    import datasets

    ds = datasets.load_dataset(str(run), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == sum(json.loads((run / "sizes.json").read_text()).values())
    assert {"jpg", "mask.png", "txt", "json"} <= set(ds.column_names)
    first = ds[0]
    assert first["txt"] == DEFAULT_CAPTION_TEMPLATE.format(noun=first["json"]["noun"])
    parquet = datasets.load_dataset("parquet", data_files=str(run / "parquet" / "*.parquet"), split="train",
                                    cache_dir=str(tmp_path / "hf"))
    assert parquet.num_rows == ds.num_rows and "mask_rle" in parquet.column_names


def test_open_clip_trainer_runs_on_the_run_folder_without_train_num_samples(run: Path, tmp_path: Path) -> None:
    from open_clip_train.main import main as open_clip_main

    from maskmine.transforms.clip_models import register_configs

    register_configs()  # maskmine-tiny, a small random CLIP, into open_clip's registry
    n = len(list(run.glob("pairs-*.tar")))
    open_clip_main([
        "--train-data", str(run / f"pairs-{{000000..{n - 1:06d}}}.tar"), "--dataset-type", "webdataset",
        "--model", "maskmine-tiny", "--batch-size", "32", "--epochs", "1", "--workers", "2", "--precision", "fp32",
        "--device", "cpu", "--lr", "1e-4", "--warmup", "1", "--logs", str(tmp_path), "--name", "oc",
        "--report-to", "", "--save-frequency", "1", "--log-every-n-steps", "1", "--seed", "0",
    ])
    log = (tmp_path / "oc" / "out.log").read_text()
    assert re.search(r"Train Epoch: 0 \[\d+/\d+ \(100%\)\]", log)
    assert (tmp_path / "oc" / "checkpoints" / "epoch_1.pt").is_file()
