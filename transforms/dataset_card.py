"""The files that let other tools read a finished run folder as it is.

- ``sizes.json``: ``{tar file name: samples}``, the open_clip / DataComp
  convention: open_clip's trainer sizes an epoch from it (no ``--train-num-samples``).
- ``README.md``: a Hugging Face dataset card. Its YAML header's ``configs``
  name the data files, so ``datasets.load_dataset(RUN_FOLDER)`` reads the tars
  with its webdataset builder (listed by name, the empty ones left out) and
  never the run's other files (``datasets`` picks one builder per folder, so the
  Parquet parts are read with ``load_dataset("parquet", data_files=...)``); its text states where the
  data came from (run.json's inputs, proposals and CLIP) and the licences the
  captions file declares, so a run folder can be published as is.

Both are written by the driver at the end of a run, after ``stats.json``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from maskmine.transforms import storage
from maskmine.transforms.atomic import atomic_write
from maskmine.transforms.run_folder import CARD_FILE, PARQUET_GLOB, SIZES_FILE, TAR_GLOB
from maskmine.transforms.shard_format import MEMBERS

MAX_CAPTIONS_BYTES = 1 << 30  # the captions file is read again only up to this size, for its licence table


def sizes(manifests: Mapping[int, Any]) -> dict[str, int]:
    """sizes.json's content: every shard's tar name and its number of samples."""
    return {m.tar: int(m.samples) for _, m in sorted(manifests.items())}


def _source_terms(captions: str | None) -> tuple[dict, list[dict]]:
    """(``info``, ``licenses``) of a COCO-style captions file, as it declares them ({} / [] if none)."""
    if not captions or not storage.exists(captions):
        return {}, []
    try:
        data = storage.read_bytes(captions)
        if len(data) > MAX_CAPTIONS_BYTES:
            return {}, []
        doc = storage.parse_json(data)
    except (OSError, ValueError):
        return {}, []
    if not isinstance(doc, dict):
        return {}, []
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    licenses = [x for x in doc.get("licenses") or [] if isinstance(x, dict)]
    return info, licenses


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML flow scalar


def card_text(identity: Mapping[str, Any], stats: Mapping[str, Any], sizes_: Mapping[str, int]) -> str:
    """README.md of a run folder: the YAML header ``datasets`` reads, then provenance and licences."""
    info, licenses = _source_terms(identity.get("captions"))
    clip = identity.get("clip") or {}
    proposals = identity.get("proposals") or {}
    lines = [
        "---",
        "license: other",
        "task_categories:",
        "- zero-shot-image-classification",
        "- image-segmentation",
        "tags:",
        "- webdataset",
        "- maskmine",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path:",
        *[f"    - {_yaml_str(name)}" for name, n in sizes_.items() if n > 0],
        "---",
        "",
        "# maskmine pairs",
        "",
        f"{stats.get('pairs', sum(sizes_.values()))} (masked crop, noun) pairs of {stats.get('images_mined', '?')} images "
        f"in {len(sizes_)} WebDataset shards, mined by `maskmine mine` (open-vocabulary segmentation after OVSeg).",
        "",
        "## Layout",
        "",
        f"- `{TAR_GLOB}`: one sample per pair, members " + ", ".join(f"`KEY.{m}`" for m in MEMBERS)
        + f" (`txt` is {_yaml_str(identity.get('caption_template', '{noun}'))} with the noun filled in).",
        f"- `{PARQUET_GLOB}`: one row per pair, the `json` member's fields plus `shard`, `tar_offset`, `tar_size` "
        f"(`load_dataset(\"parquet\", data_files=\"RUN/{PARQUET_GLOB}\")`, DuckDB, pandas).",
        f"- `{SIZES_FILE}`: samples per shard; `run.json`: the mining settings; `stats.json`, `rejects.jsonl`, "
        "`vocabulary.json`, `manifest/`: counts and checksums (`maskmine verify` checks them).",
        "",
        "## Provenance",
        "",
        f"- captions: `{identity.get('captions')}` (sha256 `{identity.get('captions_sha256')}`)",
        f"- instances: `{identity.get('instances')}` (sha256 `{identity.get('instances_sha256')}`)",
        f"- proposals: `{proposals.get('backend')}` {proposals.get('checkpoint') or ''}".rstrip(),
        f"- CLIP: `{clip.get('model')}` weights `{clip.get('pretrained')}`; crops: `{json.dumps(clip.get('crop'), sort_keys=True)}`",
        f"- labels: `{identity.get('labels')}`",
        "",
        "## Licences",
        "",
        "The pairs are derived from the source images, captions and annotations above and carry their terms.",
    ]
    if info:
        lines += ["", "The captions file describes itself as: " + ", ".join(f"{k}: {v}" for k, v in info.items() if v) + "."]
    if licenses:
        lines += ["", "Licences it lists for its images (each image's `license` id in the captions file says which; "
                  "join by `image_id`):", ""]
        lines += [f"- {x.get('id')}: {x.get('name')} ({x.get('url')})" for x in licenses]
    else:
        lines += ["", "The captions file lists no licences: check the terms of the source data before publishing."]
    return "\n".join(lines) + "\n"


def write_publication_files(out_dir: str, identity: Mapping[str, Any], stats: Mapping[str, Any],
                            manifests: Mapping[int, Any]) -> None:
    """Write sizes.json and README.md of a finished run (atomically, each)."""
    counts = sizes(manifests)
    atomic_write(storage.join(out_dir, SIZES_FILE), json.dumps(counts, indent=1).encode())
    atomic_write(storage.join(out_dir, CARD_FILE), card_text(identity, stats, counts).encode("utf-8"))
