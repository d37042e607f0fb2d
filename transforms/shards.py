"""Deterministic WebDataset shards, their Parquet parts and completion records.

A sample's shard is a hash of its image id, so every runner and every rerun
puts the same images in the same shard. A shard is written whole, atomically,
by one worker, as its images arrive (``ShardWriter``): ``pairs-NNNNNN.tar``
streams to a temporary name and is renamed once whole, then
``parquet/pairs-NNNNNN.parquet``, then ``manifest/pairs-NNNNNN.json`` last, so a shard is complete exactly when
its manifest entry exists. That is what makes a killed job resumable.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from maskmine.transforms import storage
from maskmine.transforms.atomic import AtomicWriter, atomic_write
from maskmine.transforms.records import ImageResult, PairSample, pair_columns
from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE, TarWriter, pair_from_members, read_samples
from maskmine.transforms.run_folder import MANIFEST_DIR, MANIFEST_GLOB, PARQUET_DIR, manifest_name, parquet_name, tar_name


_ARROW_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "list<int32>": pa.list_(pa.int32()),
    "list<int64>": pa.list_(pa.int64()),
    "list<string>": pa.list_(pa.string()),
}

# Where a sample's bytes lie: the shard and the span from its first tar header
# through its last member. The writer's columns, not the pair's; they follow
# the key, as in every run folder written so far.
LOCATION_COLUMNS = [("shard", pa.int32()), ("tar_offset", pa.int64()), ("tar_size", pa.int64())]


def _parquet_schema() -> pa.Schema:
    columns: list[tuple[str, pa.DataType]] = []
    for name, kind in pair_columns():
        columns.append((name, _ARROW_TYPES[kind]))
        if name == "key":
            columns.extend(LOCATION_COLUMNS)
    return pa.schema(columns)


# Derived from PairSample (transforms/records.py), the one definition of the pair schema.
PARQUET_SCHEMA = _parquet_schema()


def is_image_skip(reject: dict) -> bool:
    """A rejects entry for a skipped image, not for one annotation or caption left out of an image."""
    return "annotation_id" not in reject and "caption_id" not in reject


def shard_of(image_id: int, num_shards: int) -> int:
    """Stable shard index of an image (same on every machine and Python run)."""
    digest = hashlib.sha1(str(int(image_id)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def parquet_row(shard: int, pair: PairSample, span: tuple[int, int]) -> dict:
    """A pair's Parquet row: its metadata (the same dict as its tar ``json`` member)
    plus where its bytes lie in the shard's tar."""
    offset, size = span
    return {**pair.metadata(), "shard": shard, "tar_offset": offset, "tar_size": size}


@dataclass
class ShardManifest:
    """The completion record of one shard: its checksums and its share of stats.json."""

    shard: int
    tar: str
    parquet: str
    samples: int
    tar_bytes: int
    tar_sha256: str
    images: int
    mined: int
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    nouns: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    annotations_skipped: dict[str, int] = field(default_factory=dict)  # rejected annotations/captions by reason

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "ShardManifest":
        return cls(**storage.parse_json(data))


COUNTED = ("skipped", "dropped", "nouns", "seconds", "annotations_skipped")  # ShardManifest's counters, by key


@dataclass
class ShardStats:
    """One accumulator for a shard's share of stats.json: the writer adds each image, the retry
    path the carried images, the driver every shard (``Counter.update`` adds, key by key)."""

    images: int = 0
    mined: int = 0
    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    nouns: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)
    annotations_skipped: Counter = field(default_factory=Counter)  # rejected annotations/captions by reason

    def add(self, other: "ShardStats | ShardManifest") -> "ShardStats":
        """Add the counts of another accumulator or of a committed manifest."""
        self.images += other.images
        self.mined += other.mined
        self.samples += other.samples
        for name in COUNTED:
            getattr(self, name).update(getattr(other, name))
        return self

    def counts(self) -> dict:
        """The manifest's count fields, as plain dicts."""
        return {"images": self.images, "mined": self.mined, "samples": self.samples,
                **{name: dict(getattr(self, name)) for name in COUNTED}}


def manifest_path(out_dir: str, shard: int) -> str:
    return storage.join(out_dir, manifest_name(shard))


def image_order(image_id: int) -> str:
    """Where an image's samples sit in its shard: keys are ``{image_id}-{slug}``, sorted as strings.

    No ``{image_id}-`` is a prefix of another and ``-`` sorts before every
    digit, so sorting images by this string and each image's pairs by key
    gives the samples in key order: a shard can be written image by image.
    """
    return f"{int(image_id)}-"


class ShardWriter:
    """Write one shard as its images arrive: the tar streams to a temporary file, the rest waits for ``close``.

    ``add`` takes each image's ``ImageResult`` in ``image_order``; the tar
    members go out at once (memory: one image's samples), the Parquet rows and
    the manifest's counts (one shard's metadata) stay until ``close``, which
    renames the tar into place, writes the Parquet part and then the manifest
    entry, last. ``before_commit`` runs just before the tar is renamed (the
    retry path deletes the old manifest there, so a kill in between leaves
    the shard incomplete rather than inconsistent).
    """

    def __init__(self, out_dir: str, shard: int, caption_template: str = DEFAULT_CAPTION_TEMPLATE) -> None:
        self.out_dir = out_dir
        self.shard = shard
        self.tar_name = tar_name(shard)
        self._file = AtomicWriter(storage.join(out_dir, self.tar_name))
        self._tar = TarWriter(self._file, caption_template)
        self._rows: list[dict] = []  # the Parquet rows (metadata only: the crop bytes are in the tar)
        self._last_order: str | None = None
        self._last_key: str | None = None
        self.seconds = 0.0
        self.stats = ShardStats()  # the counts, added up as images arrive; the manifest gets them at close
        self.rejects: list[dict] = []

    def add(self, result: ImageResult) -> None:
        start = time.perf_counter()
        order = image_order(result.image_id)
        if self._last_order is not None and order <= self._last_order:
            raise ValueError(f"shard {self.shard}: image {result.image_id} arrived out of order or twice")
        self._last_order = order
        stats = self.stats
        stats.images += 1
        if result.status == "mined":
            stats.mined += 1
        else:
            stats.skipped[result.reason] += 1
            entry = {"image_id": result.image_id, "file_name": result.file_name, "reason": result.reason}
            if result.detail:
                entry["detail"] = result.detail
            self.rejects.append(entry)
        for rejected in result.rejects:  # an annotation or caption left out; the image may still be mined
            self.rejects.append({"image_id": result.image_id, "file_name": result.file_name, **rejected})
            stats.annotations_skipped[rejected["reason"]] += 1
        stats.dropped.update(result.dropped)
        stats.seconds.update(result.seconds)
        for pair in sorted(result.pairs, key=lambda p: p.key):
            if self._last_key is not None and pair.key <= self._last_key:
                raise ValueError(f"duplicate keys in shard {self.shard}: {pair.key}")
            self._last_key = pair.key
            self._rows.append(parquet_row(self.shard, pair, self._tar.add(pair)))
            stats.nouns[pair.noun] += 1
            stats.samples += 1
        self.seconds += time.perf_counter() - start

    def close(self, before_commit=None) -> ShardManifest:
        """Finish the tar, then commit tar, Parquet part and manifest entry, in that order."""
        start = time.perf_counter()
        self._tar.close()
        tar_bytes, tar_sha256 = self._file.tell(), self._file.sha256
        buf = pa.BufferOutputStream()
        if self._rows:
            pq.write_table(pa.Table.from_pylist(self._rows, schema=PARQUET_SCHEMA), buf)
        else:  # no row group at all: readers that size batches by row groups (datasets) refuse an empty one
            pq.ParquetWriter(buf, PARQUET_SCHEMA).close()
        if before_commit is not None:
            before_commit()
        self._file.commit()
        storage.makedirs(storage.join(self.out_dir, PARQUET_DIR))
        parquet = parquet_name(self.shard)
        atomic_write(storage.join(self.out_dir, parquet), buf.getvalue().to_pybytes())
        self.stats.seconds["write"] += self.seconds + time.perf_counter() - start
        m = ShardManifest(
            shard=self.shard, tar=self.tar_name, parquet=parquet, tar_bytes=tar_bytes,
            tar_sha256=tar_sha256, rejects=self.rejects, **self.stats.counts(),
        )
        storage.makedirs(storage.join(self.out_dir, MANIFEST_DIR))
        atomic_write(manifest_path(self.out_dir, self.shard), m.to_json())
        return m

    def abort(self) -> None:
        """Drop the temporary tar (the shard stays incomplete)."""
        try:
            self._tar.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            pass
        self._file.abort()


def write_shard(out_dir: str, shard: int, results: Iterable[ImageResult],
                caption_template: str = DEFAULT_CAPTION_TEMPLATE) -> ShardManifest:
    """Write one shard's tar, Parquet part and manifest entry (in that order) from all its results."""
    writer = ShardWriter(out_dir, shard, caption_template)
    try:
        for result in sorted(results, key=lambda r: image_order(r.image_id)):
            writer.add(result)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def read_shard_pairs(out_dir: str, shard: int) -> dict[int, list[PairSample]]:
    """The samples of a written shard, by image id, rebuilt from its tar (for --retry-skipped).

    Rebuilt samples write back to the same tar members byte for byte.
    """
    data = storage.read_bytes(storage.join(out_dir, tar_name(shard)))
    by_image: dict[int, list[PairSample]] = {}
    for members in read_samples(data).values():
        pair = pair_from_members(members)
        by_image.setdefault(pair.image_id, []).append(pair)
    return by_image


def completed_shards(out_dir: str) -> dict[int, ShardManifest]:
    """Manifest entries already on disk: the shards a rerun can skip."""
    done = {}
    for path in storage.glob(storage.join(out_dir, MANIFEST_GLOB)):
        manifest = ShardManifest.from_json(storage.read_bytes(path))
        done[manifest.shard] = manifest
    return done
