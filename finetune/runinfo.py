"""Crop settings travel with the data: read them from the mining runs that wrote the shards.

``maskmine mine`` records its :class:`~maskmine.transforms.masked_crop.CropConfig` in the
run's ``run.json`` (``identity.clip.crop``). Training must build its CLIP with the
same fill, resize, box expansion and mask threshold, record them in the export,
and eval must crop with them again. ``input_size``, ``mean`` and ``std`` are not
taken from the run: they belong to the CLIP model and ``load_clip`` sets them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping, Sequence

from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import LEGACY_RESAMPLE, CropConfig
from maskmine.transforms.run_folder import RUN_FILE

CROP_FIELDS = ("fill", "resize", "expand_ratio", "threshold", "resample")


def local_shard(url: str) -> Path | None:
    """The local file a shard URL names (a path or ``file://PATH``); None for other URLs and ``pipe:`` commands."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url or url.startswith("pipe:"):
        return None
    return Path(url)


def crop_settings(crop: CropConfig | Mapping) -> dict:
    """The run-level crop settings (the fields a model does not decide).

    A record without ``resample`` was written before the field existed, by the PIL crop.
    """
    data = asdict(crop) if isinstance(crop, CropConfig) else {"resample": LEGACY_RESAMPLE, **crop}
    return {k: data[k] for k in CROP_FIELDS if k in data}


def run_crop_settings(run_dir: Path) -> dict | None:
    """``identity.clip.crop`` of a mining run folder, or None when it records none."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is unreadable: {exc}") from exc
    crop = ((data.get("identity") or {}).get("clip") or {}).get("crop")
    return crop_settings(crop) if isinstance(crop, Mapping) else None


def crop_for_shards(urls: Sequence[str]) -> tuple[CropConfig | None, list[Path]]:
    """The one crop setting of the runs that wrote ``urls``, and those run folders.

    (None, []) when no shard is a local file of a run with a ``run.json`` (the
    caller falls back to the defaults and says so). UserError when the shards
    come from runs whose crop settings differ, or when some runs record one and
    others do not: such crops must not be mixed in one training set.
    """
    runs: dict[Path, dict | None] = {}
    for url in urls:
        shard = local_shard(url)
        if shard is None:
            continue
        run_dir = shard.parent.resolve()
        if run_dir not in runs:
            runs[run_dir] = run_crop_settings(run_dir)
    recorded = {d: s for d, s in runs.items() if s is not None}
    if not recorded:
        return None, []
    distinct = {json.dumps(s, sort_keys=True) for s in recorded.values()}
    unknown = [d for d, s in runs.items() if s is None]
    if len(distinct) > 1 or unknown:
        lines = [f"  {d}: {json.dumps(s, sort_keys=True) if s else 'no crop settings recorded'}"
                 for d, s in sorted(runs.items(), key=lambda kv: str(kv[0]))]
        raise UserError("the shards come from mining runs with different crop settings; train on one "
                        "crop setting at a time:\n" + "\n".join(lines))
    settings = next(iter(recorded.values()))
    return replace(CropConfig(), **settings), sorted(recorded)
