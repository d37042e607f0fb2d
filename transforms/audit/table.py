"""The audit's in-memory view of a run: a few numeric columns per pair, and row picking.

Everything the plots and summary need fits in about 40 bytes a pair (noun code,
score, margin, image id, mask area, row position), so a 1.3M-pair run costs
tens of MB; the heavy columns (RLE strings, file names) are read only for the
rows a gallery or spot-check sheet actually shows.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils

from maskmine.transforms.audit.access import DETAIL_COLUMNS, Location, RunFolder, iter_batches, read_rows

OVERVIEW_COLUMNS = ("noun", "score", "margin", "image_id", "mask_rle", "height", "width")


@dataclass
class Overview:
    """Per-pair numeric columns of the whole table, aligned by position."""

    nouns: list[str]  # vocabulary; noun_code indexes it
    noun_code: np.ndarray  # int32
    score: np.ndarray  # float32
    margin: np.ndarray  # float32, NaN where the image had a single proposal
    image_id: np.ndarray  # int64
    area: np.ndarray  # float32, mask area as a fraction of the image
    shard: np.ndarray  # int32
    row: np.ndarray  # int32, position inside the shard's Parquet part

    def __len__(self) -> int:
        return len(self.noun_code)

    def noun_counts(self) -> np.ndarray:
        return np.bincount(self.noun_code, minlength=len(self.nouns))

    def pairs_per_image(self) -> np.ndarray:
        return np.unique(self.image_id, return_counts=True)[1]


def _area_fractions(batch: pa.RecordBatch, chunk: int = 255) -> np.ndarray:
    """Mask area / image area per row, from the RLE counts without decoding the masks.

    Chunks of 255: small Python lists at a time, and pycocotools' area() sizes
    its result with a uint8 under numpy 2, so longer lists fail.
    """
    counts = batch.column("mask_rle")
    heights = batch.column("height").to_numpy(zero_copy_only=False).astype(np.int64)
    widths = batch.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    areas = np.zeros(batch.num_rows, np.float64)
    for i in range(0, batch.num_rows, chunk):
        rles = [
            {"size": [int(h), int(w)], "counts": c.encode("ascii")}
            for c, h, w in zip(counts.slice(i, chunk).to_pylist(), heights[i : i + chunk], widths[i : i + chunk])
        ]
        areas[i : i + len(rles)] = mask_utils.area(rles)
    return (areas / np.maximum(heights * widths, 1)).astype(np.float32)


def load_overview(run: RunFolder, batch_size: int = 16384) -> Overview:
    """Read the numeric columns batch by batch (column projection; RLEs reduced to areas)."""
    vocab: dict[str, int] = {}
    names = ("noun_code", "score", "margin", "image_id", "area", "shard", "row")
    dtypes = (np.int32, np.float32, np.float32, np.int64, np.float32, np.int32, np.int32)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    rows_seen: dict[int, int] = defaultdict(int)
    for shard, batch in iter_batches(run, OVERVIEW_COLUMNS, batch_size):
        n = batch.num_rows
        encoded = batch.column("noun").dictionary_encode()
        local = np.asarray([vocab.setdefault(x, len(vocab)) for x in encoded.dictionary.to_pylist()], dtype=np.int32)
        parts["noun_code"].append(local[encoded.indices.to_numpy(zero_copy_only=False)] if n else np.zeros(0, np.int32))
        parts["score"].append(batch.column("score").to_numpy(zero_copy_only=False))
        parts["margin"].append(batch.column("margin").fill_null(np.nan).to_numpy(zero_copy_only=False))
        parts["image_id"].append(batch.column("image_id").to_numpy(zero_copy_only=False))
        parts["area"].append(_area_fractions(batch))
        parts["shard"].append(np.full(n, shard, np.int32))
        parts["row"].append(np.arange(rows_seen[shard], rows_seen[shard] + n, dtype=np.int32))
        rows_seen[shard] += n
    columns = {}
    for name, dtype in zip(names, dtypes):
        pieces = parts.pop(name)  # freed column by column
        columns[name] = np.concatenate(pieces, dtype=dtype) if pieces else np.zeros(0, dtype)
    return Overview(nouns=list(vocab), **columns)


# --- picking rows -------------------------------------------------------------------------


def top_nouns(ov: Overview, k: int) -> list[int]:
    """The k most frequent nouns' codes (ties by name, so the order is stable)."""
    counts = ov.noun_counts()
    order = sorted(range(len(ov.nouns)), key=lambda c: (-counts[c], ov.nouns[c]))
    return [c for c in order[:k] if counts[c] > 0]


def rare_nouns(ov: Overview, k: int, seed: int, max_pairs: int = 5, exclude: Sequence[int] = ()) -> list[int]:
    """A seeded random sample of k nouns from the long tail.

    The tail is every noun with at most ``max_pairs`` pairs; when no noun is
    that rare (small runs), it is the less frequent half of the vocabulary.
    """
    counts = ov.noun_counts()
    skip = set(exclude)
    ranked = sorted((c for c in range(len(ov.nouns)) if c not in skip and counts[c] > 0), key=lambda c: (counts[c], ov.nouns[c]))
    tail = [c for c in ranked if counts[c] <= max_pairs]
    if not tail:
        tail = ranked[: max(1, len(ranked) // 2)] if ranked else []
    if len(tail) <= k:
        return sorted(tail, key=lambda c: (counts[c], ov.nouns[c]))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(tail), size=k, replace=False)
    return sorted((tail[i] for i in picked), key=lambda c: (counts[c], ov.nouns[c]))


def rows_of_noun(ov: Overview, code: int, k: int, seed: int) -> np.ndarray:
    """Up to k seeded-random rows of one noun, in table order (a fair look, not the best ones)."""
    rows = np.flatnonzero(ov.noun_code == code)
    if len(rows) > k:
        rng = np.random.default_rng([seed, code])
        rows = np.sort(rng.choice(rows, size=k, replace=False))
    return rows


def lowest(ov: Overview, values: np.ndarray, k: int) -> np.ndarray:
    """Rows with the k lowest values (NaN excluded), lowest first, ties by score then position."""
    valid = np.flatnonzero(~np.isnan(values))
    order = np.lexsort((valid, ov.score[valid], values[valid]))
    return valid[order[:k]]


def spot_check_rows(ov: Overview, n: int, seed: int) -> np.ndarray:
    """A reproducible uniform sample of n pairs (the same run and seed give the same rows)."""
    n = min(n, len(ov))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(ov), size=n, replace=False))


@dataclass
class Query:
    """Gallery filters; a pair must pass every filter that is set."""

    nouns: list[str] = field(default_factory=list)
    min_score: float | None = None
    max_margin: float | None = None  # pairs without a margin (one proposal) never pass
    image_ids: list[int] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.nouns and self.min_score is None and self.max_margin is None and not self.image_ids

    def describe(self) -> str:
        parts = []
        if self.nouns:
            parts.append("noun in " + ", ".join(self.nouns))
        if self.min_score is not None:
            parts.append(f"score >= {self.min_score:g}")
        if self.max_margin is not None:
            parts.append(f"margin <= {self.max_margin:g}")
        if self.image_ids:
            parts.append("image id in " + ", ".join(str(i) for i in self.image_ids))
        return "; ".join(parts) or "all pairs"


def query_rows(ov: Overview, query: Query) -> np.ndarray:
    """Rows passing the query, in table order."""
    keep = np.ones(len(ov), dtype=bool)
    if query.nouns:
        index = {n: c for c, n in enumerate(ov.nouns)}
        codes = [index[n] for n in query.nouns if n in index]
        keep &= np.isin(ov.noun_code, np.asarray(codes, dtype=np.int32))
    if query.min_score is not None:
        keep &= ov.score >= query.min_score
    if query.max_margin is not None:
        keep &= ~np.isnan(ov.margin) & (ov.margin <= query.max_margin)
    if query.image_ids:
        keep &= np.isin(ov.image_id, np.asarray(query.image_ids, dtype=np.int64))
    return np.flatnonzero(keep)


# --- details of chosen rows -----------------------------------------------------------------


def fetch_details(run: RunFolder, ov: Overview, rows: Sequence[int]) -> list[dict]:
    """Full Parquet rows (DETAIL_COLUMNS) for the chosen overview rows, in the order given."""
    rows = [int(r) for r in rows]
    by_shard: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_shard[int(ov.shard[r])].append(r)
    found: dict[int, dict] = {}
    for shard, members in by_shard.items():
        table = read_rows(run, shard, [int(ov.row[r]) for r in members], DETAIL_COLUMNS)
        for r, record in zip(members, table.to_pylist()):
            found[r] = record
    return [found[r] for r in rows]


def location_of(detail: dict) -> Location:
    return Location(detail["key"], int(detail["shard"]), int(detail["tar_offset"]), int(detail["tar_size"]))
