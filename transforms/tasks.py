"""Shard tasks: the input of one shard, written under the run folder for the worker that mines it.

The driver reads the annotations once, writes each pending shard's image
records to ``OUT/tasks/pairs-NNNNNN.jsonl`` (atomically) and sends the
workers only shard ids: the Beam job graph never carries the records, so its
size does not depend on the dataset's. A task file is one header line
(``{"shard", "images", "retry"}``) and then one record per line, in the
order the shard's samples are written (``shards.image_order``). A worker
streams the file, so it holds one batch of images at a time.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Iterator, Sequence

from maskmine.transforms.atomic import atomic_write
from maskmine.transforms import storage
from maskmine.transforms.records import Caption, ImageRecord, Instance
from maskmine.transforms.run_folder import TASKS_DIR, task_name
from maskmine.transforms.shards import image_order


def task_path(out_dir: str, shard: int) -> str:
    return storage.join(out_dir, task_name(shard))


def record_to_json(record: ImageRecord) -> dict:
    return asdict(record)


def record_from_json(data: dict) -> ImageRecord:
    """The record ``record_to_json`` wrote; every field comes back (tuples from JSON lists)."""
    fields = dict(data)
    fields["captions"] = [Caption(**c) for c in data["captions"]]
    fields["instances"] = [Instance(**{**i, "bbox": tuple(i["bbox"])}) for i in data.get("instances", [])]
    return ImageRecord(**fields)


def write_task(out_dir: str, shard: int, records: Sequence[ImageRecord], retry: bool = False) -> str:
    """Write a shard's records (sorted into sample order) and return the file's path."""
    ordered = sorted(records, key=lambda r: image_order(r.image_id))
    lines = [json.dumps({"shard": shard, "images": len(ordered), "retry": retry})]
    lines += [json.dumps(record_to_json(r), separators=(",", ":")) for r in ordered]
    storage.makedirs(storage.join(out_dir, TASKS_DIR))
    path = task_path(out_dir, shard)
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


class ShardTask:
    """An open task file: its header, then its records one at a time."""

    def __init__(self, out_dir: str, shard: int) -> None:
        self.path = task_path(out_dir, shard)
        self._handle = io.TextIOWrapper(storage.open_read(self.path), encoding="utf-8")
        header = json.loads(self._handle.readline())
        if int(header["shard"]) != shard:
            raise ValueError(f"{self.path} is the task of shard {header['shard']}, not {shard}")
        self.shard = shard
        self.images = int(header["images"])
        self.retry = bool(header.get("retry", False))

    def records(self) -> Iterator[ImageRecord]:
        count = 0
        try:
            for line in self._handle:
                if line.strip():
                    count += 1
                    yield record_from_json(json.loads(line))
        finally:
            self._handle.close()
        if count != self.images:
            raise ValueError(f"{self.path}: {count} records, its header says {self.images}")
