"""The file and folder names of the output folders of ``mine``, ``train`` and ``eval``, in one place.

A mining run folder (``maskmine mine --out``) holds, per shard ``N`` (``pairs-NNNNNN``):

- ``pairs-NNNNNN.tar``: the WebDataset shard;
- ``parquet/pairs-NNNNNN.parquet``: one row per pair, with the sample's byte span in the tar;
- ``manifest/pairs-NNNNNN.json``: written last, so a shard is complete exactly when it exists;
- ``tasks/pairs-NNNNNN.jsonl``: the shard's input records (the task a worker mines);
- ``progress/pairs-NNNNNN.json``: counts of a shard in flight, for the driver's progress bar;

and, once per run, ``run.json`` (settings, written first), ``stats.json``,
``rejects.jsonl``, ``vocabulary.json``, ``sizes.json`` and ``README.md`` (the
dataset card; :mod:`maskmine.transforms.dataset_card`), written by the driver at the end.

While a command writes a ``mine``, ``train`` or ``eval`` output folder, the
folder also holds ``.maskmine.lock`` (:data:`LOCK_FILE`, :mod:`maskmine.transforms.run_lock`):
one job per folder; it is removed when the command ends, and is never data.

A training folder (``maskmine train --out``) holds ``train.json`` (its
settings), ``metrics.jsonl`` and ``checkpoints/``; the layout of a checkpoint
or export folder is :mod:`maskmine.finetune.checkpoint`'s. An eval folder
(``maskmine eval --out``) holds ``settings.json``, ``predictions/``,
``visualisations/``, ``metrics.json`` and ``per_class_iou.csv``.

Also the one settings check of an output folder (:func:`changed_settings`),
which ``mine``, ``train`` and ``eval`` use to refuse a folder made with other settings.

The mining job, ``verify``, ``audit``, ``train`` (its vocabulary, sample
counts and crop settings), ``eval`` and the sample world's scoring all read
these names from here. No Beam, torch or pyarrow import, so readers stay
light. To add a file to one of these folders, name it here. Paths are relative to the run folder and use
``/``, so callers join them onto a local path or a gs:// URL alike.
"""
from __future__ import annotations

import json
from typing import Any, Collection, Mapping

LOCK_FILE = ".maskmine.lock"  # held by the command writing the folder (run_lock); hidden, never data

RUN_FILE = "run.json"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"
VOCABULARY_FILE = "vocabulary.json"
SIZES_FILE = "sizes.json"  # {tar name: samples}: open_clip / DataComp's convention
CARD_FILE = "README.md"  # the dataset card: its YAML header tells Hugging Face datasets which files to read

PARQUET_DIR = "parquet"
MANIFEST_DIR = "manifest"
TASKS_DIR = "tasks"
PROGRESS_DIR = "progress"
SHARD_FOLDERS = (PARQUET_DIR, MANIFEST_DIR, TASKS_DIR, PROGRESS_DIR)

TRAIN_FILE = "train.json"
TRAIN_METRICS_FILE = "metrics.jsonl"

EVAL_SETTINGS_FILE = "settings.json"
EVAL_PRED_DIR = "predictions"
EVAL_VIS_DIR = "visualisations"
EVAL_METRICS_FILE = "metrics.json"
EVAL_CSV_FILE = "per_class_iou.csv"

SHARD_PREFIX = "pairs-"
TAR_SUFFIX = ".tar"
PARQUET_SUFFIX = ".parquet"
MANIFEST_SUFFIX = ".json"
TASK_SUFFIX = ".jsonl"
PROGRESS_SUFFIX = ".json"


def shard_stem(shard: int) -> str:
    """``pairs-NNNNNN``: the name every file of shard ``shard`` shares."""
    return f"{SHARD_PREFIX}{shard:06d}"


def tar_name(shard: int) -> str:
    return shard_stem(shard) + TAR_SUFFIX


def parquet_name(shard: int) -> str:
    return f"{PARQUET_DIR}/{shard_stem(shard)}{PARQUET_SUFFIX}"


def manifest_name(shard: int) -> str:
    return f"{MANIFEST_DIR}/{shard_stem(shard)}{MANIFEST_SUFFIX}"


def task_name(shard: int) -> str:
    return f"{TASKS_DIR}/{shard_stem(shard)}{TASK_SUFFIX}"


def progress_name(shard: int) -> str:
    return f"{PROGRESS_DIR}/{shard_stem(shard)}{PROGRESS_SUFFIX}"


def shard_glob(folder: str, suffix: str) -> str:
    """A glob for every shard's file in ``folder`` (``""`` for the run folder itself)."""
    name = f"{SHARD_PREFIX}*{suffix}"
    return f"{folder}/{name}" if folder else name


TAR_GLOB = shard_glob("", TAR_SUFFIX)
PARQUET_GLOB = shard_glob(PARQUET_DIR, PARQUET_SUFFIX)
MANIFEST_GLOB = shard_glob(MANIFEST_DIR, MANIFEST_SUFFIX)
PROGRESS_GLOB = shard_glob(PROGRESS_DIR, PROGRESS_SUFFIX)
TASK_GLOB = shard_glob(TASKS_DIR, TASK_SUFFIX)


def shard_from_name(name: str, suffix: str) -> int:
    """The shard index in a file name such as ``pairs-000003.json``."""
    return int(name[len(SHARD_PREFIX) : -len(suffix)])


def sidecar_names(tar: str) -> tuple[str, str]:
    """(Parquet part, manifest) of a tar file name, relative to its folder.

    By the tar's own stem, so a shard passed as a path finds its tables
    without parsing an index out of its name.
    """
    stem = tar.removesuffix(TAR_SUFFIX)
    return f"{PARQUET_DIR}/{stem}{PARQUET_SUFFIX}", f"{MANIFEST_DIR}/{stem}{MANIFEST_SUFFIX}"


def changed_settings(recorded: Mapping[str, Any], current: Mapping[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """The settings (sorted) in which an output folder's recorded identity and this run's differ.

    Compared as JSON, so a tuple equals the list a JSON file holds; keys in
    ``ignore`` (where the inputs lie, not how they are processed) never count.
    """
    current = json.loads(json.dumps(current))
    return sorted(k for k in set(recorded) | set(current) if k not in ignore and recorded.get(k) != current.get(k))
