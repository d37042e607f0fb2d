"""Deterministic WebDataset shards, their Parquet parts and completion records.

A sample's shard is a hash of its image id, so every runner and every rerun
puts the same images in the same shard. A shard is written whole, atomically,
by one worker: ``pairs-NNNNNN.tar``, then ``parquet/pairs-NNNNNN.parquet``,
then ``manifest/pairs-NNNNNN.json`` last, so a shard is complete exactly when
its manifest entry exists. That is what makes a killed job resumable.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from maskmine.transforms import fileio
from maskmine.transforms.records import ImageResult, PairSample

TAR_NAME = "pairs-{:06d}.tar"
PARQUET_DIR = "parquet"
PARQUET_NAME = "pairs-{:06d}.parquet"
MANIFEST_DIR = "manifest"
MANIFEST_NAME = "pairs-{:06d}.json"

PARQUET_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.int32()),
        ("tar_offset", pa.int64()),  # byte offset of the sample's first tar header
        ("tar_size", pa.int64()),  # bytes from there through its last member
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("noun", pa.string()),
        ("caption_ids", pa.list_(pa.int64())),
        ("proposal_index", pa.int32()),
        ("box", pa.list_(pa.int32())),  # x, y, w, h of the mask in image pixels
        ("mask_rle", pa.string()),  # COCO RLE counts of the full-image mask
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("score", pa.float32()),
        ("probability", pa.float32()),
        ("margin", pa.float32()),
        ("proposal_backend", pa.string()),
        ("proposal_checkpoint", pa.string()),
        ("clip_model", pa.string()),
        ("clip_pretrained", pa.string()),
        ("label_source", pa.string()),
    ]
)


def shard_of(image_id: int, num_shards: int) -> int:
    """Stable shard index of an image (same on every machine and Python run)."""
    digest = hashlib.sha1(str(int(image_id)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def sample_members(pair: PairSample) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in a fixed order."""
    return [
        (f"{pair.key}.jpg", pair.crop_jpg),
        (f"{pair.key}.mask.png", pair.crop_mask_png),
        (f"{pair.key}.txt", pair.noun.encode("utf-8")),
        (f"{pair.key}.json", json.dumps(pair.metadata(), sort_keys=True).encode("utf-8")),
    ]


def build_tar(pairs: Sequence[PairSample]) -> tuple[bytes, list[tuple[int, int]]]:
    """A deterministic tar (fixed mtime, owner, mode) and each sample's (offset, size)."""
    buf = io.BytesIO()
    spans = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for pair in pairs:
            start = buf.tell()
            for name, data in sample_members(pair):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
            spans.append((start, buf.tell() - start))
    return buf.getvalue(), spans


def parquet_table(shard: int, pairs: Sequence[PairSample], spans: Sequence[tuple[int, int]]) -> pa.Table:
    rows = []
    for pair, (offset, size) in zip(pairs, spans):
        rows.append(
            {
                "key": pair.key,
                "shard": shard,
                "tar_offset": offset,
                "tar_size": size,
                "image_id": pair.image_id,
                "file_name": pair.file_name,
                "noun": pair.noun,
                "caption_ids": list(pair.caption_ids),
                "proposal_index": pair.proposal_index,
                "box": list(pair.box),
                "mask_rle": pair.rle["counts"],
                "height": pair.rle["size"][0],
                "width": pair.rle["size"][1],
                "score": pair.score,
                "probability": pair.probability,
                "margin": pair.margin,
                "proposal_backend": pair.proposal_backend,
                "proposal_checkpoint": pair.proposal_checkpoint,
                "clip_model": pair.clip_model,
                "clip_pretrained": pair.clip_pretrained,
                "label_source": pair.label_source,
            }
        )
    return pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)


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
        return cls(**json.loads(data))


def manifest_path(out_dir: str, shard: int) -> str:
    return fileio.join(out_dir, MANIFEST_DIR, MANIFEST_NAME.format(shard))


def write_shard(out_dir: str, shard: int, results: Iterable[ImageResult]) -> ShardManifest:
    """Write one shard's tar, Parquet part and manifest entry (in that order)."""
    start = time.perf_counter()
    results = sorted(results, key=lambda r: r.image_id)
    pairs = sorted((p for r in results for p in r.pairs), key=lambda p: p.key)
    keys = [p.key for p in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in shard {shard}")
    tar_bytes, spans = build_tar(pairs)
    tar_name = TAR_NAME.format(shard)
    parquet_name = f"{PARQUET_DIR}/{PARQUET_NAME.format(shard)}"
    fileio.atomic_write_bytes(fileio.join(out_dir, tar_name), tar_bytes)
    buf = pa.BufferOutputStream()
    pq.write_table(parquet_table(shard, pairs, spans), buf)
    fileio.makedirs(fileio.join(out_dir, PARQUET_DIR))
    fileio.atomic_write_bytes(fileio.join(out_dir, parquet_name), buf.getvalue().to_pybytes())
    manifest = ShardManifest(
        shard=shard,
        tar=tar_name,
        parquet=parquet_name,
        samples=len(pairs),
        tar_bytes=len(tar_bytes),
        tar_sha256=hashlib.sha256(tar_bytes).hexdigest(),
        images=len(results),
        mined=sum(r.status == "mined" for r in results),
    )
    for r in results:
        if r.status != "mined":
            manifest.skipped[r.reason] = manifest.skipped.get(r.reason, 0) + 1
            manifest.rejects.append({"image_id": r.image_id, "file_name": r.file_name, "reason": r.reason})
        for rejected in r.rejects:  # an annotation or caption left out; the image may still be mined
            manifest.rejects.append({"image_id": r.image_id, "file_name": r.file_name, **rejected})
            reason = rejected["reason"]
            manifest.annotations_skipped[reason] = manifest.annotations_skipped.get(reason, 0) + 1
        for reason, n in r.dropped.items():
            manifest.dropped[reason] = manifest.dropped.get(reason, 0) + n
        for stage, sec in r.seconds.items():
            manifest.seconds[stage] = manifest.seconds.get(stage, 0.0) + sec
    for p in pairs:
        manifest.nouns[p.noun] = manifest.nouns.get(p.noun, 0) + 1
    manifest.seconds["write"] = manifest.seconds.get("write", 0.0) + time.perf_counter() - start
    fileio.makedirs(fileio.join(out_dir, MANIFEST_DIR))
    fileio.atomic_write_bytes(manifest_path(out_dir, shard), manifest.to_json())
    return manifest


def completed_shards(out_dir: str) -> dict[int, ShardManifest]:
    """Manifest entries already on disk: the shards a rerun can skip."""
    done = {}
    for path in fileio.glob(fileio.join(out_dir, MANIFEST_DIR, "pairs-*.json")):
        manifest = ShardManifest.from_json(fileio.read_bytes(path))
        done[manifest.shard] = manifest
    return done
