"""Shard tasks: the job graph carries shard ids only, batches respect the budget,
--retry-skipped rewrites only the shards it must, and a run folder is identified by content."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from maskmine.pipelines import mine_cli
from maskmine.pipelines.mine import build_pipeline, plan_run, run_mining, shard_job
from maskmine.transforms.batching import BatchWeight, split_batches
from maskmine.transforms.verify_run import verify_run
from maskmine.transforms.errors import UserError
from maskmine.transforms.records import ImageRecord, MiningItem, Skip
from maskmine.transforms.shards import shard_of
from maskmine.transforms.tasks import ShardTask, task_path
from mining_helpers import coco_mini_config


def write_coco(folder: Path, n: int) -> Path:
    """Captions and instances files of ``n`` images (no pixels: the pipeline is only built, not run)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 64, "height": 48} for i in range(1, n + 1)]
    captions = [{"id": 10 * i + k, "image_id": i, "caption": f"A dog number {i} sits on a red couch, take {k}."}
                for i in range(1, n + 1) for k in range(5)]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    instances = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [8, 8, 24, 24],
                  "segmentation": [[8, 8, 32, 8, 32, 32, 8, 32]], "area": 576} for i in range(1, n + 1)]
    (folder / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": instances, "categories": [{"id": 1, "name": "dog"}]}))
    (folder / "images").mkdir(exist_ok=True)
    return folder


def serialized_pipeline(tmp_path: Path, n: int) -> tuple[int, int, bytes]:
    data = write_coco(tmp_path / f"data-{n:05d}", n)  # equal path lengths: the paths are in the graph
    out = tmp_path / "out"  # the same --out for both sizes: its path is in the DoFn's settings
    shutil.rmtree(out, ignore_errors=True)
    config = coco_mini_config(
        data, out, captions=str(data / "captions.json"), instances=str(data / "instances.json"),
        images=str(data / "images"), num_shards=4,
    )
    plan = plan_run(config)
    task_bytes = sum(Path(task_path(str(out), s)).stat().st_size for s in plan.pending)
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    build_pipeline(pipeline, list(plan.pending), shard_job(config, 1))
    return len(pipeline.to_runner_api().SerializeToString()), task_bytes, pipeline.to_runner_api().SerializeToString()


def test_pipeline_size_does_not_depend_on_the_number_of_records(tmp_path):
    small, small_tasks, _ = serialized_pipeline(tmp_path, 50)
    large, large_tasks, graph = serialized_pipeline(tmp_path, 500)
    again, _, _ = serialized_pipeline(tmp_path, 50)
    # Equal but for the random ids in Beam's compressed pickles (Shared handles, transform ids):
    # two builds of one pipeline differ by a few bytes, so allow 64 of ~17,000, against the
    # ~180 KB that 450 more records add to the task files (and would add to a Create of records).
    assert abs(small - large) <= 64 and abs(small - again) <= 64
    assert large_tasks > 8 * small_tasks  # the records are in OUT/tasks, read by the workers
    assert b"red couch" not in graph and b"000123.jpg" not in graph


def test_task_file_round_trip(tmp_path):
    data = write_coco(tmp_path / "data", 20)
    out = tmp_path / "out"
    config = coco_mini_config(data, out, captions=str(data / "captions.json"), instances=str(data / "instances.json"),
                              images=str(data / "images"), num_shards=3)
    plan = plan_run(config)
    seen = []
    for shard in plan.pending:
        task = ShardTask(str(out), shard)
        records = list(task.records())
        assert task.images == len(records) == plan.totals[shard] and not task.retry
        assert all(shard_of(r.image_id, 3) == shard for r in records)
        assert [str(r.image_id) + "-" for r in records] == sorted(str(r.image_id) + "-" for r in records)
        assert records[0].instances[0].bbox == (8.0, 8.0, 24.0, 24.0) and len(records[0].captions) == 5
        seen += [r.image_id for r in records]
    assert sorted(seen) == list(range(1, 21))
    # the worker's records equal the driver's, field for field
    from maskmine.transforms.coco_reader import read_captioned_images

    driver = {r.image_id: r for r in read_captioned_images(str(data / "captions.json"), str(data / "instances.json"))}
    for shard in plan.pending:
        for record in ShardTask(str(out), shard).records():
            assert record == driver[record.image_id]


def _item(i: int, nbytes: int, skipped: bool = False) -> MiningItem:
    it = MiningItem(record=ImageRecord(i, f"{i}.jpg", 1, 1, []), shard=0, image=np.zeros(nbytes, np.uint8))
    return it.skip(Skip.MISSING_IMAGE) if skipped else it


def test_split_batches_keeps_order_and_budget():
    sizes = [4, 4, 20, 4, 0, 30, 4, 4, 4, 4, 4, 4, 50, 4]
    items = [_item(i, kb * 1024, skipped=(kb == 0)) for i, kb in enumerate(sizes)]
    weight = BatchWeight(4, 32 * 1024)
    batches = list(split_batches(items, weight))
    assert [i.record.image_id for b in batches for i in b] == list(range(len(sizes)))
    for b in batches:
        live = [i for i in b if not i.skipped]
        assert len(live) <= 4
        assert len(live) == 1 or sum(i.image.nbytes for i in live) <= 32 * 1024
    assert any(len(b) == 1 and b[0].image.nbytes > 32 * 1024 for b in batches)
    assert [len(b) for b in split_batches([_item(i, 1) for i in range(10)], BatchWeight(4, None))] == [4, 4, 2]


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("pairs-*.tar"))}


def test_retry_skipped_remines_a_restored_image_and_leaves_other_shards_alone(coco_cc_by, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(coco_cc_by / "train2017", images)
    settings = dict(labels="categories", num_shards=3, batch_size=4, torch_threads=1)
    reference = tmp_path / "reference"
    run_mining(coco_mini_config(coco_cc_by, reference, **settings), progress=False)
    captions = json.loads((coco_cc_by / "annotations" / "captions_train2017.json").read_text())
    first = sorted(captions["images"], key=lambda i: i["id"])[0]
    hidden = tmp_path / "hidden.jpg"
    shutil.move(images / first["file_name"], hidden)
    run = tmp_path / "run"
    config = coco_mini_config(coco_cc_by, run, images=str(images), **settings)
    stats = run_mining(config, progress=False)
    assert stats["images_skipped"] == {Skip.MISSING_IMAGE: 1}
    before = digests(run)
    shard = f"pairs-{shard_of(first['id'], 3):06d}.tar"
    assert before[shard] != digests(reference)[shard]
    shutil.move(hidden, images / first["file_name"])
    config.retry_skipped = (Skip.MISSING_IMAGE,)
    again = run_mining(config, progress=False)
    after = digests(run)
    assert after == digests(reference)  # the retried shard now equals a run that had the file all along
    assert {k for k in after if after[k] != before[k]} == {shard}  # and only that shard was rewritten
    assert again["images_skipped"] == {} and again["images_read"] == 12 and again["shards_resumed"] == 2
    assert (run / "rejects.jsonl").read_text() == ""
    assert verify_run(str(run)).ok
    # nothing left to retry: a second retry rewrites nothing
    assert run_mining(config, progress=False)["shards_resumed"] == 3 and digests(run) == after


def test_retry_keeps_the_annotation_rejects_of_the_shards_it_rewrites(coco_cc_by, tmp_path):
    """A rewritten shard keeps every left-out annotation of its carried images, and retried images count theirs."""
    images = tmp_path / "images"
    shutil.copytree(coco_cc_by / "train2017", images)
    instances = json.loads((coco_cc_by / "annotations" / "instances_train2017.json").read_text())
    captions = json.loads((coco_cc_by / "annotations" / "captions_train2017.json").read_text())
    ids = sorted(i["id"] for i in captions["images"])
    first = ids[0]
    same_shard = next(i for i in ids[1:] if shard_of(i, 3) == shard_of(first, 3))
    broken = []
    for image_id in (first, same_shard):  # one broken polygon in the retried image and one in a carried image
        ann = next(a for a in instances["annotations"] if a["image_id"] == image_id and isinstance(a["segmentation"], list))
        ann["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]
        broken.append(ann["id"])
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    settings = dict(labels="categories", num_shards=3, batch_size=4, torch_threads=1,
                    instances=str(tmp_path / "instances.json"), images=str(images))
    reference = tmp_path / "reference"
    expected = run_mining(coco_mini_config(coco_cc_by, reference, **settings), progress=False)
    assert sum(expected["annotations_skipped"].values()) == 2
    file_name = next(i["file_name"] for i in captions["images"] if i["id"] == first)
    shutil.move(images / file_name, tmp_path / "hidden.jpg")
    run = tmp_path / "run"
    config = coco_mini_config(coco_cc_by, run, **settings)
    run_mining(config, progress=False)
    shutil.move(tmp_path / "hidden.jpg", images / file_name)
    config.retry_skipped = (Skip.MISSING_IMAGE,)
    again = run_mining(config, progress=False)
    assert digests(run) == digests(reference)
    assert again["annotations_skipped"] == expected["annotations_skipped"] and again["images_skipped"] == {}
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["annotation_id"] for r in rejects) == sorted(broken)
    assert (run / "rejects.jsonl").read_text() == (reference / "rejects.jsonl").read_text()
    assert verify_run(str(run)).ok


def test_retry_skipped_takes_only_file_reasons(coco_cc_by, tmp_path):
    with pytest.raises(UserError, match="retry skipped takes .*not no-nouns") as refused:
        run_mining(coco_mini_config(coco_cc_by, tmp_path / "o", retry_skipped=("no-nouns",)), progress=False)
    assert refused.value.setting == "retry_skipped"  # the setting the CLI words as --retry-skipped
    parser = argparse.ArgumentParser()
    mine_cli.add_arguments(parser)
    base = ["--captions", "c.json", "--images", "i", "--out", "o"]
    args = parser.parse_args(base + ["--retry-skipped", "missing-image, corrupt-image", "--torch-threads", "3"])
    config = mine_cli.config_from_args(args)
    assert config.retry_skipped == ("corrupt-image", "missing-image") and config.torch_threads == 3
    config = mine_cli.config_from_args(parser.parse_args(base))
    assert config.retry_skipped == () and config.torch_threads is None


def test_run_identity_is_the_files_content_not_their_path(coco_cc_by, tmp_path, monkeypatch):
    data = write_coco(tmp_path / "data", 6)
    out = tmp_path / "out"
    kw = dict(images=str(data / "images"), num_shards=2)
    plan_run(coco_mini_config(data, out, captions=str(data / "captions.json"), instances=str(data / "instances.json"), **kw))
    # the same files through relative paths, and a copy of them elsewhere: the same run
    monkeypatch.chdir(data)
    plan_run(coco_mini_config(data, out, captions="captions.json", instances="./instances.json", **kw))
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    plan_run(coco_mini_config(data, out, captions=str(copy / "captions.json"), instances=str(copy / "instances.json"), **kw))
    # an edited captions file is another run
    body = json.loads((copy / "captions.json").read_text())
    body["annotations"][0]["caption"] = "A cat."
    (copy / "captions.json").write_text(json.dumps(body))
    with pytest.raises(UserError, match="captions_sha256"):
        plan_run(coco_mini_config(data, out, captions=str(copy / "captions.json"), instances=str(data / "instances.json"), **kw))


def test_folder_with_shards_but_no_run_file_is_refused(tmp_path):
    data = write_coco(tmp_path / "data", 6)
    out = tmp_path / "out"
    (out / "manifest").mkdir(parents=True)
    (out / "manifest" / "pairs-000000.json").write_text("{}")
    config = coco_mini_config(data, out, captions=str(data / "captions.json"), instances=str(data / "instances.json"),
                              images=str(data / "images"), num_shards=2)
    with pytest.raises(UserError, match="no run.json") as err:
        plan_run(config)
    assert "\n" not in str(err.value)
    assert not (out / "run.json").exists() and not os.path.exists(out / "tasks")
