"""The class vocabulary of a training run: the nouns of its shards, with stable indices.

Indices are the position in the sorted list of distinct nouns, so the same
shards always give the same index for a noun, whatever order they are read in.
The nouns of exactly the training shards come from their manifest entries
(``nouns``), read through the shards' own scheme (local, http, pipe:, ...);
shards outside a run folder need a ``vocabulary.json`` beside them or ``--vocabulary``.
A saved vocabulary is a JSON list of nouns in index order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from maskmine.finetune.shard_context import ShardContext, local_shard, read_context, read_url, sibling_url
from maskmine.transforms.atomic import atomic_write_json
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.run_folder import PARQUET_DIR, PARQUET_SUFFIX, VOCABULARY_FILE



def make_vocabulary(nouns: Iterable[str]) -> list[str]:
    """Distinct non-empty nouns, sorted: the index of a noun is its position."""
    return sorted({n.strip() for n in nouns if n and n.strip()})


def write_vocabulary(path: str | Path, vocabulary: Sequence[str]) -> None:
    """Save ``vocabulary`` (already in index order) atomically as a JSON list."""
    atomic_write_json(path, list(vocabulary), indent=0, ensure_ascii=False)


def read_vocabulary_file(path: str | Path) -> list[str]:
    """A vocabulary from a file or URL (read as the shards are: local, file://, http(s)://, gs://, pipe:):
    our JSON list, mining's [{noun, pairs}], a JSON ``{"nouns": [...]}``, a Parquet table
    with a ``noun`` column, or plain text (one noun a line).

    A JSON list of strings is taken in its own order (it is a saved index);
    everything else is made into a sorted vocabulary.
    """
    name = str(path)
    data = read_url(name)
    if data is None:
        raise UserError(f"vocabulary file not found: {name}")
    suffix = Path(name.split("?", 1)[0]).suffix
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        return make_vocabulary(pq.read_table(pa.BufferReader(data), columns=["noun"]).column("noun").to_pylist())
    text = data.decode("utf-8")
    if suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{name} is not valid JSON: {exc}") from exc
        if isinstance(value, dict) and isinstance(value.get("nouns"), list):
            value = value["nouns"]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            if len(set(value)) != len(value):
                raise UserError(f"{name} lists a noun twice")
            return list(value)
        if isinstance(value, list) and all(isinstance(x, dict) and "noun" in x for x in value):
            return make_vocabulary(x["noun"] for x in value)
        raise UserError(f"{name}: expected a JSON list of nouns or of {{noun, pairs}} records")
    return make_vocabulary(text.splitlines())


def _parquet_nouns(paths: Sequence[Path]) -> list[str]:
    import pyarrow.parquet as pq

    nouns: list[str] = []
    for p in paths:
        nouns.extend(pq.read_table(p, columns=["noun"]).column("noun").to_pylist())
    return nouns


class UnknownNouns(UserError):
    """A shard outside a run folder without a ``vocabulary.json`` beside it: nothing says its nouns."""


def vocabulary_for_context(context: ShardContext) -> list[str]:
    """The nouns of exactly these mined shards, from their manifest entries (read by the shards' scheme);
    shards outside a run folder fall back to a ``vocabulary.json`` beside them."""
    nouns = context.nouns()
    if nouns is not None:
        return make_vocabulary(nouns)
    for url in context.urls:
        if context.manifests.get(url) is not None:
            nouns = (nouns or []) + list(context.manifests[url].get("nouns") or {})
            continue
        beside = sibling_url(url, VOCABULARY_FILE)
        if read_url(beside) is None:
            raise UnknownNouns(f"no manifest entry or {VOCABULARY_FILE} beside {url}: its nouns are unknown")
        nouns = (nouns or []) + read_vocabulary_file(beside)
    return make_vocabulary(nouns or [])


def vocabulary_for_shards(shard_urls: Sequence[str]) -> list[str]:
    """:func:`vocabulary_for_context` of the shards at ``shard_urls``."""
    return vocabulary_for_context(read_context(shard_urls))


def resolve_vocabulary(source: str | None, shard_urls: Sequence[str], context: ShardContext | None = None) -> list[str]:
    """``--vocabulary`` (a file, URL or mining run folder) or, when absent, the shards' own nouns."""
    if source is None:
        try:
            vocabulary = vocabulary_for_context(context or read_context(shard_urls))
        except UnknownNouns as exc:
            raise SettingError("vocabulary", f"must be given: {exc} (name a vocabulary.json or Parquet file)") from exc
    else:
        path = Path(source)
        if local_shard(source) is not None and path.is_dir():
            parts = sorted((path / PARQUET_DIR).glob(f"*{PARQUET_SUFFIX}"))
            if parts:
                vocabulary = make_vocabulary(_parquet_nouns(parts))
            elif (path / VOCABULARY_FILE).is_file():
                vocabulary = read_vocabulary_file(path / VOCABULARY_FILE)
            else:
                raise UserError(f"{path} has neither {PARQUET_DIR}/*.parquet nor {VOCABULARY_FILE}")
        else:
            vocabulary = read_vocabulary_file(source)
    if not vocabulary:
        raise UserError("the vocabulary is empty: the shards hold no pairs (or the vocabulary file no nouns)")
    return vocabulary
