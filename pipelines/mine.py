"""The mining job: COCO Captions → (masked crop, noun) pairs in WebDataset shards.

Wiring only; the work is in ``transforms/`` (a shard: ``transforms/shard_mining.py``). A
shard is a task: the driver reads and checks the annotations, skips shards a
previous run completed, writes each remaining shard's records to
``OUT/tasks/`` and runs a Beam pipeline over the shard ids alone
(``Create(ids) | Reshuffle | MineShardDoFn``). Each worker streams its
shard's images through the stages in batches and commits the shard (manifest
last) as soon as its images are done, while the rest of the job runs. The
driver's progress bar follows ``OUT/progress/`` and the manifests; at the end
it writes stats.json, rejects.jsonl and vocabulary.json from the manifests.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from maskmine.pipelines import endings, runner_config, runners
from maskmine.pipelines.mine_dofn import MineShardDoFn
from maskmine.transforms.progress_files import read_progress
from maskmine.transforms.shard_mining import ShardJob
from maskmine.transforms.atomic import atomic_write
from maskmine.transforms import storage
from maskmine.transforms.clip_models import ClipSpec, check_clip, resolve_model
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms import mine_settings, ranges
from maskmine.transforms.torch_state import torch_threads
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import MASK_THRESHOLD
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS
from maskmine.transforms.pairing import LABELS_CATEGORIES, LABELS_NOUNS
from maskmine.transforms.proposals.factory import ProposalSpec
from maskmine.transforms.records import RETRYABLE_REASONS, ImageRecord, SkipReason
from maskmine.transforms.run_folder import (
    MANIFEST_GLOB,
    MANIFEST_SUFFIX,
    PROGRESS_DIR,
    PROGRESS_GLOB,
    REJECTS_FILE,
    TASK_GLOB,
    RUN_FILE,
    SHARD_FOLDERS,
    STATS_FILE,
    TAR_GLOB,
    TASKS_DIR,
    VOCABULARY_FILE,
    changed_settings,
    shard_from_name,
)
from maskmine.transforms.dataset_card import write_publication_files
from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE, check_caption_template
from maskmine.transforms.shards import (
    ShardManifest,
    ShardStats,
    completed_shards,
    is_image_skip,
    shard_of,
    write_shard,
)
from maskmine.transforms.tasks import write_task

log = logging.getLogger(__name__)


@dataclass
class MineConfig:
    captions: str
    images: str
    out: str
    instances: str | None = None
    proposals: ProposalSpec = field(default_factory=ProposalSpec)
    clip: ClipSpec = field(default_factory=ClipSpec)
    labels: str = LABELS_NOUNS
    captions_per_image: int = mine_settings.CAPTIONS_PER_IMAGE
    min_score: float | None = None
    num_shards: int | None = None
    images_per_shard: int = mine_settings.IMAGES_PER_SHARD
    batch_size: int = mine_settings.BATCH_SIZE
    max_batch_bytes: int | None = None  # byte budget of a GPU batch (image + masks); None: count only
    limit: int | None = None
    torch_threads: int | None = None  # per worker process; None: cores ÷ worker processes on the machine
    retry_skipped: tuple[SkipReason, ...] = ()  # re-mine images skipped for these reasons (RETRYABLE_REASONS)
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger images are skipped as too-large
    caption_template: str = DEFAULT_CAPTION_TEMPLATE  # what each sample's txt member holds: this with its noun

    def identity(self, num_shards: int) -> dict:
        """The settings a resumed run must share with the run it continues.

        The annotation files count by content (sha256), not by path: a
        relative and an absolute path to one file, or a copy of it, are the
        same run; an edited file is another. The paths are kept (made
        absolute) for the readers of run.json but not compared
        (``LOCATION_KEYS``).
        """
        return {
            "captions": normalise_path(self.captions),
            "instances": normalise_path(self.instances) if self.instances else None,
            "captions_sha256": storage.sha256_of(self.captions),
            "instances_sha256": storage.sha256_of(self.instances) if self.instances else None,
            "proposals": self.proposals.identity(),
            "clip": {"model": self.clip.model, "pretrained": resolve_model(self.clip.model, self.clip.pretrained)[2],
                     "activation": self.clip.resolved_activation(), "crop": asdict(self.clip.crop)},
            "labels": self.labels,
            "captions_per_image": self.captions_per_image,
            "min_score": self.min_score,
            "num_shards": num_shards,
            "limit": self.limit,
            "max_megapixels": self.max_megapixels,
            "caption_template": self.caption_template,
        }


# Keys of the identity that say where the inputs are, not what they are: not compared on resume.
LOCATION_KEYS = ("captions", "instances")


def normalise_path(path: str) -> str:
    """An absolute local path (symlinks resolved); remote URLs (gs://...) unchanged."""
    if "://" in path:
        return path
    return os.path.realpath(path)


def default_num_shards(images: int, images_per_shard: int) -> int:
    """``images / images_per_shard`` shards, rounded up, but at least ``MIN_SHARDS`` (at most one per image)."""
    return max(1, -(-images // images_per_shard), min(mine_settings.MIN_SHARDS, images))


def check_config(config: MineConfig) -> None:
    """Refuse settings out of their range (SettingError naming the setting) or that do not go together."""
    if config.labels not in (LABELS_NOUNS, LABELS_CATEGORIES):
        raise SettingError("labels", f"must be {LABELS_NOUNS!r} or {LABELS_CATEGORIES!r}, got {config.labels!r}")
    needs_instances = config.proposals.backend in ("coco-gt", "coco-gt+distractors") or config.labels == LABELS_CATEGORIES
    if needs_instances and not config.instances:
        raise SettingError("instances", "is needed by `proposals` coco-gt(+distractors) and `labels` categories")
    if config.labels == LABELS_CATEGORIES and config.proposals.backend != "coco-gt":
        raise SettingError("labels", "categories pairs ground-truth masks with their names: it needs `proposals` coco-gt")
    if not storage.exists(config.images):
        raise UserError(f"images folder not found: {config.images}")
    for name in ("num_shards", "batch_size", "max_batch_bytes", "torch_threads", "captions_per_image", "limit"):
        ranges.POSITIVE_INT.check(name, getattr(config, name))
    MASK_THRESHOLD.check("mask_threshold", config.clip.crop.threshold)
    config.proposals.check()
    try:
        check_caption_template(config.caption_template)
    except ValueError as exc:
        raise SettingError("caption_template", str(exc)) from exc
    bad = sorted(set(config.retry_skipped) - set(RETRYABLE_REASONS))
    if bad:
        raise SettingError(
            "retry_skipped",
            f"takes {', '.join(RETRYABLE_REASONS)} (the reasons a restored file can change), not {', '.join(bad)}",
        )


def prepare_run_dir(config: MineConfig, num_shards: int) -> None:
    """Create the output folder, or check that it holds a run with the same settings.

    A folder that holds shards but no run.json is refused: nothing says those
    shards were mined with these settings.
    """
    storage.makedirs(config.out)
    path = storage.join(config.out, RUN_FILE)
    # Through JSON and back, so tuples compare equal to the lists run.json holds.
    identity = json.loads(json.dumps(config.identity(num_shards)))
    if storage.exists(path):
        previous = storage.parse_json(storage.read_bytes(path)).get("identity", {})
        changed = changed_settings(previous, identity, ignore=LOCATION_KEYS)
        if changed:
            raise SettingError(
                "out", f"{config.out} holds a run with other settings ({', '.join(changed)}): "
                "use a new `out` folder to mine with these settings"
            )
        return
    leftovers = storage.glob(storage.join(config.out, MANIFEST_GLOB)) + storage.glob(storage.join(config.out, TAR_GLOB))
    if leftovers:
        raise SettingError(
            "out", f"{config.out} holds shards but no {RUN_FILE}, so nothing says how they were mined: "
            "use a new `out` folder"
        )
    # "images" sits outside the identity: moving the images must not block a resume; audit reads it.
    run = {"identity": identity, "images": config.images}
    atomic_write(path, json.dumps(run, indent=1, sort_keys=True).encode())


def shard_job(config: MineConfig, local_workers: int | None) -> ShardJob:
    """The worker's share of the settings: every ShardJob field MineConfig has, by name (declared once there)."""
    shared = {f.name: getattr(config, f.name) for f in fields(ShardJob) if hasattr(config, f.name)}
    return ShardJob(**shared, local_workers=local_workers)


def build_pipeline(pipeline: beam.Pipeline, shards: Sequence[int], job: ShardJob) -> None:
    """Shard ids in, each shard mined and committed by one worker (the records stay in OUT/tasks)."""
    (
        pipeline
        | "Shards" >> beam.Create(sorted(shards), reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "MineShard" >> beam.ParDo(MineShardDoFn(job))
    )


def progress_counts(
    out_dir: str, pending: dict[int, str], totals: dict[int, int], committed: dict[int, int] | None = None
) -> tuple[int, int]:
    """(images, pairs) done so far in the shards of ``pending``: OUT/progress/ for shards in flight,
    the manifest for shards committed during this run.

    ``pending`` maps each shard being mined to the tar sha256 its manifest had
    at the start ("" for none), so a rewritten shard (--retry-skipped) counts
    once its new manifest appears; ``totals`` holds each shard's images to mine.
    ``committed`` (shard -> pairs), carried from call to call by a watcher,
    remembers the shards whose new manifest was seen, so each manifest is read
    once, and only those of pending shards are read at all.
    """
    committed = {} if committed is None else committed
    progress = read_progress(out_dir)
    unseen = {s for s in pending if s not in committed and s not in progress}
    if unseen:
        for path in storage.glob(storage.join(out_dir, MANIFEST_GLOB)):
            shard = shard_from_name(storage.basename(path), MANIFEST_SUFFIX)
            if shard in unseen:
                m = ShardManifest.from_json(storage.read_bytes(path))
                if m.tar_sha256 != pending[shard]:
                    committed[shard] = m.samples
    images = pairs = 0
    for shard in pending:
        if shard in progress:
            images += int(progress[shard]["images"])
            pairs += int(progress[shard]["pairs"])
        elif shard in committed:
            images += totals[shard]
            pairs += committed[shard]
    return images, pairs


def _progress(
    out_dir: str, pending: dict[int, str], totals: dict[int, int], stop: threading.Event, interval: float = 1.0
) -> None:
    """Advance a progress bar per batch (any runner whose workers share --out with the driver)."""
    from tqdm import tqdm

    committed: dict[int, int] = {}
    with tqdm(total=sum(totals.values()), desc="mining", unit="img") as bar:
        shown = 0
        while True:
            finished = stop.is_set()
            images, pairs = progress_counts(out_dir, pending, totals, committed)
            if images > shown:
                bar.update(images - shown)
                shown = images
            bar.set_postfix(pairs=pairs, refresh=True)
            if finished:
                break
            stop.wait(interval)


def local_worker_processes(options: PipelineOptions) -> int | None:
    """Worker processes the local runner starts on this machine (None: not a local runner)."""
    if not runners.is_local(options):
        return None
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode in ("multi_processing", "multi_threading"):
        return max(1, int(direct.direct_num_workers or 1))
    return 1


def clear_leftovers(out_dir: str) -> None:
    """Delete the working files of an earlier or this run: temporary files, progress and task files.

    Called before a run writes its tasks (an interrupted run's tasks are stale:
    the pending shards' tasks are written anew) and once it has finished, so a
    finished run holds no working files, however often it was interrupted.
    """
    for folder in ("", *SHARD_FOLDERS):
        storage.remove_temporaries(storage.join(out_dir, folder) if folder else out_dir)
    storage.delete(storage.glob(storage.join(out_dir, PROGRESS_GLOB)) + storage.glob(storage.join(out_dir, TASK_GLOB)))


def summarize(
    out_dir: str, manifests: dict[int, ShardManifest], wall_seconds: float, resumed_shards: int,
    input_skipped: dict[str, int] | None = None,
    input_rejects: list[dict] | None = None,
) -> dict:
    """stats.json: images read = mined + skipped (by reason); pairs; nouns; drops; stage seconds."""
    total = ShardStats()
    for m in manifests.values():
        total.add(m)
    nouns, seconds = total.nouns, total.seconds
    stats = {
        "images_read": total.images,
        "images_mined": total.mined,
        "images_skipped": dict(sorted(total.skipped.items())),
        "pairs": total.samples,
        "unique_nouns": len(nouns),
        "pairs_dropped": dict(sorted(total.dropped.items())),
        "annotations_skipped": dict(sorted(total.annotations_skipped.items())),  # bad-annotation / bad-caption, in rejects.jsonl
        "input_skipped": dict(sorted((input_skipped or {}).items())),  # what the reader left out, by kind
        "shards": len(manifests),
        "shards_resumed": resumed_shards,
        "seconds_per_stage": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "wall_seconds": round(wall_seconds, 3),
    }
    # Entries that never became an image (image_id null) first, in file order; then by image.
    rejects = list(input_rejects or []) + sorted((r for m in manifests.values() for r in m.rejects), key=lambda r: r["image_id"])
    atomic_write(
        storage.join(out_dir, REJECTS_FILE), "".join(json.dumps(r) + "\n" for r in rejects).encode()
    )
    vocabulary = [{"noun": n, "pairs": c} for n, c in sorted(nouns.items(), key=lambda kv: (-kv[1], kv[0]))]
    atomic_write(storage.join(out_dir, VOCABULARY_FILE), json.dumps(vocabulary, indent=1).encode())
    identity = json.loads(storage.read_bytes(storage.join(out_dir, RUN_FILE))).get("identity", {})
    write_publication_files(out_dir, identity, stats, manifests)
    # last: stats.json says the run is finished (train and audit read it so), so every other file is there
    atomic_write(storage.join(out_dir, STATS_FILE), json.dumps(stats, indent=1).encode())
    return stats


@dataclass
class RunPlan:
    """What the driver prepared: the shards to mine now (their records written to OUT/tasks)."""

    num_shards: int
    images: int
    pending: dict[int, str]  # shard -> tar sha256 of its manifest now ("": no manifest; else a retry)
    resumed: int  # shards with images that a previous run completed and that stay as they are
    totals: dict[int, int]  # shard -> images its worker mines now (all of them; a retry: the retried ones)
    retry_images: int
    input_skipped: dict[str, int] = field(default_factory=dict)  # what the reader left out, by kind
    input_rejects: list[dict] = field(default_factory=list)  # rejects.jsonl lines of entries that never became images


def plan_run(config: MineConfig) -> RunPlan:
    """Read the annotations, check or create the run folder, write a task file per shard to mine."""
    input_skipped: dict[str, int] = {}  # filled by the reader's up-front check of the annotation files
    input_rejects: list[dict] = []
    records = read_captioned_images(
        config.captions, config.instances, config.captions_per_image, config.limit, report=input_skipped,
        left_out=input_rejects,
    )
    if not records:
        raise UserError(f"{config.captions} has no captioned images")
    num_shards = config.num_shards or default_num_shards(len(records), config.images_per_shard)
    prepare_run_dir(config, num_shards)
    clear_leftovers(config.out)
    done = completed_shards(config.out)
    by_shard: dict[int, list[ImageRecord]] = {s: [] for s in range(num_shards)}
    for record in records:
        by_shard[shard_of(record.image_id, num_shards)].append(record)
    total = len(records)
    del records
    for shard, members in by_shard.items():
        if not members and shard not in done:
            done[shard] = write_shard(config.out, shard, [], config.caption_template)
    pending, totals = {}, {}
    for shard, members in by_shard.items():
        if shard not in done:
            write_task(config.out, shard, members)
            pending[shard], totals[shard] = "", len(members)
    retry_images = 0
    if config.retry_skipped:
        wanted = set(config.retry_skipped)
        for shard, manifest in sorted(done.items()):
            ids = {r["image_id"] for r in manifest.rejects if r["reason"] in wanted and is_image_skip(r)}
            if ids:
                write_task(config.out, shard, [r for r in by_shard[shard] if r.image_id in ids], retry=True)
                pending[shard], totals[shard] = manifest.tar_sha256, len(ids)
                retry_images += len(ids)
    resumed = sum(1 for s in done if by_shard[s] and s not in pending)
    todo = sum(totals.values())
    log.info(
        "%d images in %d shards; %d shards already complete, %d images to mine (%d of them retried)",
        total, num_shards, resumed, todo, retry_images,
    )
    return RunPlan(num_shards, total, pending, resumed, totals, retry_images, input_skipped, input_rejects)


def run_mining(config: MineConfig, beam_args: Sequence[str] = (), progress: bool = True) -> dict:
    """Run (or resume) a mining job and return its stats."""
    check_config(config)
    check_clip(config.clip.model, config.clip.pretrained)  # a bad model or tag fails here, not in a worker
    if config.labels == LABELS_NOUNS:  # the tagger and WordNet must be there before any work starts
        from maskmine.transforms.nouns import ensure_nltk_data

        ensure_nltk_data()
    for warning in runner_config.check_runner_options(beam_args, config.out, config.images, config.clip.device):
        log.warning(warning)
    started = time.perf_counter()
    plan = plan_run(config)
    pending, num_shards, resumed = plan.pending, plan.num_shards, plan.resumed
    if pending:
        options = PipelineOptions(runners.with_runner_defaults(beam_args, config.batch_size))
        runner = runners.make_runner(options)
        job = shard_job(config, local_worker_processes(options))
        stop = threading.Event()
        watcher = None
        if progress:
            watcher = threading.Thread(target=_progress, args=(config.out, pending, plan.totals, stop), daemon=True)
            watcher.start()
        try:  # the in-process runner sizes torch's threads in this very process: given back after
            with torch_threads(None), endings.signals_to_children(), beam.Pipeline(runner=runner, options=options) as pipeline:
                build_pipeline(pipeline, list(pending), job)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
    manifests = completed_shards(config.out)
    missing = sorted(set(range(num_shards)) - set(manifests))
    if missing:
        raise RuntimeError(f"the pipeline finished but shards {missing[:10]} have no manifest entry")
    clear_leftovers(config.out)  # tasks of committed shards, and what an earlier interrupted run left
    for folder in (TASKS_DIR, PROGRESS_DIR):  # a finished run keeps no empty working folders
        storage.remove_empty_folder(storage.join(config.out, folder))
    return summarize(
        config.out, manifests, time.perf_counter() - started, resumed, plan.input_skipped, plan.input_rejects
    )
