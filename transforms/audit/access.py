"""Read a finished mining run without scanning it: files, columns, and samples by key.

The audit must stay cheap on a 1.3M-pair run, so it never iterates the tar
shards. Tables are read with column projection, and a sample is fetched by
seeking to the ``tar_offset`` recorded in its Parquet row and reading exactly
``tar_size`` bytes (the sample's tar headers and members), then parsing those
bytes with :mod:`maskmine.transforms.shard_format`. A key names its image (``{image_id}-{noun_slug}``)
and an image's shard is a hash of its id, so locating a key reads one Parquet
part, not the whole table.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from maskmine.transforms import storage, shard_format
from maskmine.transforms.errors import UserError
from maskmine.transforms.run_folder import RUN_FILE, STATS_FILE, parquet_name, tar_name
from maskmine.transforms.shards import shard_of

# Columns a gallery card or spot-check row needs, fetched only for chosen rows.
DETAIL_COLUMNS = (
    "key", "shard", "tar_offset", "tar_size", "image_id", "file_name", "noun",
    "box", "mask_rle", "height", "width", "score", "probability", "margin",
)


@dataclass
class RunFolder:
    """A finished mining run: its settings, its stats and where its parts are."""

    path: Path
    identity: dict
    stats: dict
    images: str | None  # images folder recorded by the mining job, if any
    num_shards: int
    parquet_parts: dict[int, Path]  # shard -> Parquet part

    def tar_path(self, shard: int) -> Path:
        return self.path / tar_name(shard)


@dataclass(frozen=True)
class Location:
    """Where one sample's bytes lie: its shard and byte span inside the tar."""

    key: str
    shard: int
    offset: int
    size: int


@dataclass
class Sample:
    """One mined pair as stored in the shard (the bytes a training loader sees)."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)  # extension ("jpg", "mask.png", ...) -> bytes

    @property
    def noun(self) -> str:
        return shard_format.noun_of(self.members)

    @property
    def metadata(self) -> dict:
        return storage.parse_json(self.members[shard_format.META])


def _read_json(path: Path, what: str) -> dict | list:
    try:
        return storage.parse_json(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({what}): {exc}") from exc


def open_run(path: str | Path) -> RunFolder:
    """Check that ``path`` holds a finished run and read its small files."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run folder not found: {root}")
    if not (root / RUN_FILE).is_file():
        raise UserError(f"{root} is not a maskmine run folder (no {RUN_FILE}); give a folder that `maskmine mine` wrote")
    run = _read_json(root / RUN_FILE, "run settings")
    if not isinstance(run, dict) or "identity" not in run:
        raise UserError(f"{root / RUN_FILE} is not a maskmine run file (no 'identity')")
    if not (root / STATS_FILE).is_file():
        raise UserError(f"{root} holds an unfinished run (no {STATS_FILE}): "
                        "rerun the same `maskmine mine` command to complete it")
    stats = _read_json(root / STATS_FILE, "run statistics")
    identity = run["identity"]
    num_shards = int(identity.get("num_shards") or stats.get("shards") or 0)
    parts = {}
    for shard in range(num_shards):
        part = root / parquet_name(shard)
        if not part.is_file():
            raise UserError(f"{root} is missing {part.relative_to(root)}: the run is incomplete")
        parts[shard] = part
    return RunFolder(
        path=root,
        identity=identity,
        stats=stats,
        images=run.get("images"),
        num_shards=num_shards,
        parquet_parts=parts,
    )


def iter_batches(run: RunFolder, columns: Sequence[str], batch_size: int = 65536) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard, batch) over the whole table, reading only ``columns``; memory is one batch."""
    for shard, part in run.parquet_parts.items():
        handle = pq.ParquetFile(part)
        for batch in handle.iter_batches(batch_size=batch_size, columns=list(columns)):
            yield shard, batch


def read_rows(
    run: RunFolder, shard: int, rows: Sequence[int], columns: Sequence[str] = DETAIL_COLUMNS, batch_size: int = 8192
) -> pa.Table:
    """Rows of one Parquet part by position, in the order asked, with only ``columns``.

    The part is streamed in batches and only the wanted rows are kept, so a
    large part never sits in memory whole.
    """
    wanted = np.asarray(rows, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    sorted_rows = wanted[order]
    pieces: list[pa.Table] = []
    start = 0
    handle = pq.ParquetFile(run.parquet_parts[shard])
    for batch in handle.iter_batches(batch_size=batch_size, columns=list(columns)):
        lo, hi = np.searchsorted(sorted_rows, [start, start + batch.num_rows])
        if hi > lo:
            pieces.append(pa.Table.from_batches([batch.take(pa.array(sorted_rows[lo:hi] - start))]))
        start += batch.num_rows
        if start > (sorted_rows[-1] if len(sorted_rows) else -1):
            break
    if len(sorted_rows) and (sorted_rows[0] < 0 or sorted_rows[-1] >= start):
        raise IndexError(f"row {int(sorted_rows[-1])} is outside {run.parquet_parts[shard]}")
    if not pieces:
        return handle.schema_arrow.empty_table().select(list(columns))
    table = pa.concat_tables(pieces)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return table.take(pa.array(back))


def image_id_of_key(key: str) -> int:
    head = key.split("-", 1)[0]
    if not head.isdigit():
        raise UserError(f"not a pair key (expected IMAGEID-noun): {key!r}")
    return int(head)


def locate(run: RunFolder, keys: Iterable[str]) -> dict[str, Location]:
    """Byte spans of the given keys, reading only the Parquet parts of their shards."""
    by_shard: dict[int, set[str]] = defaultdict(set)
    for key in keys:
        by_shard[shard_of(image_id_of_key(key), run.num_shards)].add(key)
    found: dict[str, Location] = {}
    for shard, wanted in by_shard.items():
        table = pq.read_table(
            run.parquet_parts[shard], columns=["key", "tar_offset", "tar_size"],
            filters=pc.field("key").isin(sorted(wanted)),
        )
        for key, offset, size in zip(*(table.column(c).to_pylist() for c in ("key", "tar_offset", "tar_size"))):
            found[key] = Location(key, shard, int(offset), int(size))
    missing = sorted(set().union(*by_shard.values()) - set(found)) if by_shard else []
    if missing:
        raise UserError(f"no pair with key {missing[0]!r} in {run.path}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return found


def parse_members(data: bytes) -> dict[str, Sample]:
    """Samples in a run of tar bytes (a span need not hold the archive's end blocks)."""
    return {key.rsplit("/", 1)[-1]: Sample(key.rsplit("/", 1)[-1], members)
            for key, members in shard_format.read_samples(data, whole=False).items()}


def read_samples(run: RunFolder, locations: Iterable[Location]) -> dict[str, Sample]:
    """Fetch samples by seeking into their shards: one open per shard, reads in offset order."""
    by_shard: dict[int, list[Location]] = defaultdict(list)
    for loc in locations:
        by_shard[loc.shard].append(loc)
    out: dict[str, Sample] = {}
    for shard, locs in sorted(by_shard.items()):
        with open(run.tar_path(shard), "rb") as handle:
            for loc in sorted(locs, key=lambda l: l.offset):
                handle.seek(loc.offset)
                data = handle.read(loc.size)
                if len(data) != loc.size:
                    raise UserError(f"{run.tar_path(shard)} is shorter than its Parquet part says (key {loc.key})")
                parsed = parse_members(data)
                if loc.key not in parsed:
                    raise UserError(f"{run.tar_path(shard)} at byte {loc.offset} does not hold {loc.key}: shard and Parquet disagree")
                out[loc.key] = parsed[loc.key]
    return out


def read_by_key(run: RunFolder, keys: Sequence[str]) -> dict[str, Sample]:
    """Random access by key: locate through Parquet, then read only those spans."""
    return read_samples(run, locate(run, keys).values())
