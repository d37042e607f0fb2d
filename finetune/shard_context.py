"""A run's context travels with its shards: read it through the shards' own URL scheme.

``maskmine mine`` writes, beside the tars of a run folder, ``run.json`` (settings:
the :class:`~maskmine.transforms.crop_config.CropConfig` as ``identity.clip.crop``,
the CLIP and proposals, the caption template), ``manifest/pairs-N.json`` per shard
(its sample count and nouns), ``sizes.json`` and, once the run is finished,
``stats.json``. Training reads these through the same opener as the shards
(webdataset's ``gopen``: a local path, ``file://``, ``http(s)://`` by curl,
``gs://`` by gsutil, ``pipe:CMD``), at the sibling address of each shard
(:func:`sibling_url`): so ``--epochs``, the vocabulary and the crop settings are
the same over HTTP or a pipe as over local files.

Training must build its CLIP with the run's fill, resize, box expansion and mask
threshold, record them in the export, and eval must crop with them again.
``input_size``, ``mean`` and ``std`` are not taken from the run: they belong to
the CLIP model and ``load_clip`` sets them.
"""
from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from maskmine.transforms import storage
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import LEGACY_RESAMPLE, CropConfig
from maskmine.transforms.run_folder import RUN_FILE, STATS_FILE, sidecar_names

log = logging.getLogger(__name__)

CROP_FIELDS = ("fill", "resize", "expand_ratio", "threshold", "resample")
FETCH_THREADS = 16  # sidecar files fetched at once (each a small request or a short pipe)
# the last path-like word ending in .tar of a pipe: command is the shard it reads
_PIPE_TAR = re.compile(r"[^\s'\"]+\.tar(?=$|[\s'\"])")


def local_shard(url: str) -> Path | None:
    """The local file a shard URL names (a path or ``file://PATH``); None for other URLs and ``pipe:`` commands."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url or url.startswith("pipe:"):
        return None
    return Path(url)


def _tar_span(url: str) -> tuple[int, int]:
    """Where the shard's file name lies in its URL (start, end)."""
    if url.startswith("pipe:"):
        found = list(_PIPE_TAR.finditer(url))
        if not found:
            raise UserError(f"cannot tell which .tar the command {url!r} reads, so its run's files cannot be found "
                            "beside it: name the shard's .tar in the command")
        start, end = found[-1].span()
    else:
        end = len(url)
        start = url.rfind("/") + 1
    slash = url.rfind("/", start, end)
    return (slash + 1 if slash >= 0 else start), end


def shard_file_name(url: str) -> str:
    """The shard's own file name (``pairs-000003.tar``) in a path, URL or pipe: command."""
    start, end = _tar_span(url)
    return url[start:end]


def sibling_url(url: str, name: str) -> str:
    """The address of ``name`` (relative to the shard's folder) by the shard's own scheme:
    ``http://h/run/pairs-000001.tar`` -> ``http://h/run/run.json``; ``pipe:cat /r/pairs-000001.tar``
    -> ``pipe:cat /r/run.json``."""
    start, end = _tar_span(url)
    return url[:start] + name + url[end:]


def read_url(url: str) -> bytes | None:
    """The bytes at a path or URL, read with webdataset's opener; None when it cannot be read."""
    path = local_shard(url)
    if path is not None:
        return path.read_bytes() if path.is_file() else None
    from webdataset.gopen import gopen

    try:
        with gopen(url, "rb") as stream:
            return stream.read()
    except Exception as exc:  # noqa: BLE001 - every opener has its own errors (curl, pipe status, gsutil)
        log.debug("could not read %s: %s", url, exc)
        return None


def _read_json(url: str) -> dict | None:
    data = read_url(url)
    if data is None:
        return None
    try:
        value = storage.parse_json(data)
    except ValueError as exc:  # parse_json makes nesting too deep a ValueError too
        raise UserError(f"{url} is damaged ({type(exc).__name__}: {exc})") from exc
    if not isinstance(value, dict):
        raise UserError(f"{url} is not a JSON object")
    return value


@dataclass
class RunInfo:
    """One mining run as its shards see it (``folder``: the shards' folder, by their scheme)."""

    folder: str
    run: dict | None  # run.json; None: the shards are not in a maskmine run folder
    finished: bool  # stats.json is there
    shards: list[str] = field(default_factory=list)  # the urls of this run being read

    @property
    def identity(self) -> dict:
        return (self.run or {}).get("identity") or {}

    def crop(self) -> dict | None:
        crop = (self.identity.get("clip") or {}).get("crop")
        return crop_settings(crop) if isinstance(crop, Mapping) else None


@dataclass
class ShardContext:
    """What the run folders of some shards say about them: settings, sample counts, nouns."""

    urls: list[str]
    runs: dict[str, RunInfo]  # shard folder -> its run
    manifests: dict[str, dict | None]  # url -> its manifest entry (None: not committed, or not a run's shard)

    def run_of(self, url: str) -> RunInfo:
        return self.runs[_folder(url)]

    def samples(self) -> int | None:
        """Samples in all shards by their manifests; None when one has none."""
        counts = [m.get("samples") for m in self.manifests.values() if m is not None]
        if len(counts) != len(self.urls) or not all(isinstance(n, int) for n in counts):
            return None
        return sum(counts)

    def nouns(self) -> list[str] | None:
        """Every noun of the shards' manifests; None when one has none."""
        if any(m is None for m in self.manifests.values()):
            return None
        return [n for m in self.manifests.values() for n in (m.get("nouns") or {})]

    def unfinished(self) -> list[RunInfo]:
        """Runs that are still being mined or were stopped, or whose listed shards are not all committed."""
        return [r for r in self.runs.values() if r.run is not None and
                (not r.finished or any(self.manifests[u] is None for u in r.shards))]


def _folder(url: str) -> str:
    return sibling_url(url, "")


def read_context(urls: Sequence[str]) -> ShardContext:
    """Fetch each shard's manifest entry and each run's run.json and stats.json, by the shards' scheme."""
    folders: dict[str, list[str]] = {}
    for url in urls:
        folders.setdefault(_folder(url), []).append(url)
    manifest_urls = {u: sibling_url(u, sidecar_names(shard_file_name(u))[1]) for u in urls}
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        runs_json = dict(zip(folders, pool.map(lambda f: _read_json(sibling_url(folders[f][0], RUN_FILE)), folders)))
        finished = dict(zip(folders, pool.map(
            lambda f: runs_json[f] is not None and read_url(sibling_url(folders[f][0], STATS_FILE)) is not None, folders)))
        manifests = dict(zip(urls, pool.map(lambda u: _read_json(manifest_urls[u]), urls)))
    runs = {f: RunInfo(f, runs_json[f], finished[f], shards) for f, shards in folders.items()}
    return ShardContext(list(urls), runs, manifests)


def crop_settings(crop: CropConfig | Mapping) -> dict:
    """The run-level crop settings (the fields a model does not decide).

    A record without ``resample`` was written before the field existed, by the PIL crop.
    """
    data = asdict(crop) if isinstance(crop, CropConfig) else {"resample": LEGACY_RESAMPLE, **crop}
    return {k: data[k] for k in CROP_FIELDS if k in data}


def crop_for_context(context: ShardContext) -> tuple[CropConfig | None, list[str]]:
    """The one crop setting of the runs that wrote the shards, and those run folders.

    (None, []) when no shard lies in a run folder with a ``run.json`` (the caller
    falls back to the defaults and says so). UserError when the shards come from
    runs whose crop settings differ, or when some runs record one and others do
    not: such crops must not be mixed in one training set.
    """
    runs = {folder: run.crop() for folder, run in context.runs.items()}
    recorded = {d: s for d, s in runs.items() if s is not None}
    if not recorded:
        return None, []
    distinct = {json.dumps(s, sort_keys=True) for s in recorded.values()}
    unknown = [d for d, s in runs.items() if s is None]
    if len(distinct) > 1 or unknown:
        lines = [f"  {d or '.'}: {json.dumps(s, sort_keys=True) if s else 'no crop settings recorded'}"
                 for d, s in sorted(runs.items())]
        raise UserError("the shards come from mining runs with different crop settings; train on one "
                        "crop setting at a time:\n" + "\n".join(lines))
    settings = next(iter(recorded.values()))
    return replace(CropConfig(), **settings), sorted(recorded)


def crop_for_shards(urls: Sequence[str]) -> tuple[CropConfig | None, list[str]]:
    """:func:`crop_for_context` of the shards at ``urls``."""
    return crop_for_context(read_context(urls))
