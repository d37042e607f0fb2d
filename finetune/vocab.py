"""The class vocabulary of a training run: the nouns of its shards, with stable indices.

Indices are the position in the sorted list of distinct nouns, so the same
shards always give the same index for a noun, whatever order they are read in.
The sources, in the order ``vocabulary_for_shards`` tries them for a local run:
the mining job's Parquet parts of exactly those shards (column ``noun``), then
their manifest entries (``nouns``), then the run's ``vocabulary.json``.
A saved vocabulary is a JSON list of nouns in index order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from maskmine.finetune.runinfo import local_shard
from maskmine.transforms.atomic import atomic_write_json
from maskmine.transforms.errors import UserError
from maskmine.transforms.run_folder import PARQUET_DIR, PARQUET_SUFFIX, VOCABULARY_FILE, sidecar_names



def make_vocabulary(nouns: Iterable[str]) -> list[str]:
    """Distinct non-empty nouns, sorted: the index of a noun is its position."""
    return sorted({n.strip() for n in nouns if n and n.strip()})


def write_vocabulary(path: str | Path, vocabulary: Sequence[str]) -> None:
    """Save ``vocabulary`` (already in index order) atomically as a JSON list."""
    atomic_write_json(path, list(vocabulary), indent=0, ensure_ascii=False)


def read_vocabulary_file(path: str | Path) -> list[str]:
    """A vocabulary from a file: our JSON list, mining's [{noun, pairs}], a JSON
    ``{"nouns": [...]}``, a Parquet table with a ``noun`` column, or plain text (one noun a line).

    A JSON list of strings is taken in its own order (it is a saved index);
    everything else is made into a sorted vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"vocabulary file not found: {path}")
    if path.suffix == ".parquet":
        return make_vocabulary(_parquet_nouns([path]))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("nouns"), list):
            data = data["nouns"]
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            if len(set(data)) != len(data):
                raise UserError(f"{path} lists a noun twice")
            return [x for x in data]
        if isinstance(data, list) and all(isinstance(x, dict) and "noun" in x for x in data):
            return make_vocabulary(x["noun"] for x in data)
        raise UserError(f"{path}: expected a JSON list of nouns or of {{noun, pairs}} records")
    return make_vocabulary(text.splitlines())


def _parquet_nouns(paths: Sequence[Path]) -> list[str]:
    import pyarrow.parquet as pq

    nouns: list[str] = []
    for p in paths:
        nouns.extend(pq.read_table(p, columns=["noun"]).column("noun").to_pylist())
    return nouns


def vocabulary_for_shards(shard_urls: Sequence[str]) -> list[str]:
    """The nouns of exactly these mined shards, from their run folder's tables."""
    paths = [local_shard(u) for u in shard_urls]
    if any(p is None for p in paths):
        raise UserError(
            "the shards are not local files, so their run folder's Parquet table cannot be read: "
            "pass --vocabulary (a vocabulary.json or Parquet file)"
        )
    nouns: list[str] = []
    for tar in paths:
        run_dir = tar.parent
        parquet, manifest = (run_dir / name for name in sidecar_names(tar.name))
        if parquet.is_file():
            nouns.extend(_parquet_nouns([parquet]))
        elif manifest.is_file():
            nouns.extend(json.loads(manifest.read_text()).get("nouns", {}))
        elif (run_dir / VOCABULARY_FILE).is_file():
            nouns.extend(read_vocabulary_file(run_dir / VOCABULARY_FILE))
        else:
            raise UserError(
                f"no Parquet part, manifest entry or {VOCABULARY_FILE} next to {tar}: "
                "pass --vocabulary (a vocabulary.json or Parquet file)"
            )
    return make_vocabulary(nouns)


def resolve_vocabulary(source: str | None, shard_urls: Sequence[str]) -> list[str]:
    """``--vocabulary`` (a file or a mining run folder) or, when absent, the shards' own nouns."""
    if source is None:
        vocabulary = vocabulary_for_shards(shard_urls)
    else:
        path = Path(source)
        if path.is_dir():
            parts = sorted((path / PARQUET_DIR).glob(f"*{PARQUET_SUFFIX}"))
            if parts:
                vocabulary = make_vocabulary(_parquet_nouns(parts))
            elif (path / VOCABULARY_FILE).is_file():
                vocabulary = read_vocabulary_file(path / VOCABULARY_FILE)
            else:
                raise UserError(f"{path} has neither {PARQUET_DIR}/*.parquet nor {VOCABULARY_FILE}")
        else:
            vocabulary = read_vocabulary_file(path)
    if not vocabulary:
        raise UserError("the vocabulary is empty: the shards hold no pairs (or the vocabulary file no nouns)")
    return vocabulary
