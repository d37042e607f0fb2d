"""The mining job: COCO Captions → (masked crop, noun) pairs in WebDataset shards.

Wiring only; the work is in ``transforms/``. The driver reads and checks the
annotations, skips shards a previous run completed, runs the Beam pipeline
for the rest, then writes stats.json, rejects.jsonl and vocabulary.json from
the shards' manifest entries.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from maskmine.pipelines import runner_config, runners
from maskmine.pipelines.stages import (
    BatchWeight,
    ClipSpec,
    MatchDoFn,
    ProposeDoFn,
    extract_nouns_stage,
    load_image_stage,
    to_item,
    write_shard_stage,
)
from maskmine.transforms import fileio
from maskmine.transforms.clip_models import check_clip, resolve_model
from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.errors import UserError
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS
from maskmine.transforms.pairing import LABELS_CATEGORIES, LABELS_NOUNS
from maskmine.transforms.proposals.factory import ProposalSpec
from maskmine.transforms.records import ImageRecord
from maskmine.transforms.shards import ShardManifest, completed_shards, shard_of, write_shard

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"
VOCABULARY_FILE = "vocabulary.json"


@dataclass
class MineConfig:
    captions: str
    images: str
    out: str
    instances: str | None = None
    proposals: ProposalSpec = field(default_factory=ProposalSpec)
    clip: ClipSpec = field(default_factory=ClipSpec)
    labels: str = LABELS_NOUNS
    captions_per_image: int = 5
    min_score: float | None = None
    num_shards: int | None = None
    images_per_shard: int = 600
    batch_size: int = 8
    max_batch_bytes: int | None = None  # byte budget of a GPU batch (image + masks); None: count only
    limit: int | None = None
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger images are skipped as too-large

    def identity(self, num_shards: int) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {
            "captions": self.captions,
            "instances": self.instances,
            "proposals": asdict(self.proposals),
            "clip": {"model": self.clip.model, "pretrained": resolve_model(self.clip.model, self.clip.pretrained)[2], "crop": asdict(self.clip.crop)},
            "labels": self.labels,
            "captions_per_image": self.captions_per_image,
            "min_score": self.min_score,
            "num_shards": num_shards,
            "limit": self.limit,
        }


def check_config(config: MineConfig) -> None:
    if config.labels not in (LABELS_NOUNS, LABELS_CATEGORIES):
        raise UserError(f"--labels must be {LABELS_NOUNS!r} or {LABELS_CATEGORIES!r}")
    needs_instances = config.proposals.backend in ("coco-gt", "coco-gt+distractors") or config.labels == LABELS_CATEGORIES
    if needs_instances and not config.instances:
        raise UserError("--proposals coco-gt(+distractors) and --labels categories need --instances")
    if config.labels == LABELS_CATEGORIES and config.proposals.backend != "coco-gt":
        raise UserError("--labels categories pairs ground-truth masks with their names: use --proposals coco-gt")
    if not fileio.exists(config.images):
        raise UserError(f"images folder not found: {config.images}")
    if config.num_shards is not None and config.num_shards < 1:
        raise UserError("--num-shards must be at least 1")
    if config.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if config.max_batch_bytes is not None and config.max_batch_bytes < 1:
        raise UserError("--max-batch-bytes must be positive")


def prepare_run_dir(config: MineConfig, num_shards: int) -> None:
    """Create the output folder, or check that it holds a run with the same settings."""
    fileio.makedirs(config.out)
    path = fileio.join(config.out, RUN_FILE)
    # Through JSON and back, so tuples compare equal to the lists run.json holds.
    identity = json.loads(json.dumps(config.identity(num_shards)))
    if fileio.exists(path):
        previous = json.loads(fileio.read_bytes(path))
        if previous.get("identity") != identity:
            changed = sorted(k for k in identity if previous.get("identity", {}).get(k) != identity[k])
            raise UserError(
                f"{config.out} holds a run with other settings ({', '.join(changed)}): "
                "use a new --out folder to mine with these settings"
            )
        return
    # "images" sits outside the identity: moving the images must not block a resume; audit reads it.
    run = {"identity": identity, "images": config.images}
    fileio.atomic_write_bytes(path, json.dumps(run, indent=1, sort_keys=True).encode())


def build_pipeline(
    pipeline: beam.Pipeline,
    records: Sequence[ImageRecord],
    config: MineConfig,
    num_shards: int,
    expected: dict[int, int] | None = None,
) -> None:
    """Wire the stages; ``expected`` (shard -> images) lets the writer refuse a shard that lost images."""
    weight = BatchWeight(config.batch_size, config.max_batch_bytes)
    items = (
        pipeline
        | "Read" >> beam.Create(list(records), reshuffle=True)
        | "Shard" >> beam.Map(to_item, num_shards)
        | "Nouns" >> beam.Map(extract_nouns_stage, config.labels)
        | "Decode" >> beam.Map(load_image_stage, config.images, config.max_megapixels)
    )
    results = (
        items
        | "BatchForProposals"
        >> beam.BatchElements(min_batch_size=1, max_batch_size=config.batch_size, element_size_fn=weight)
        | "Proposals" >> beam.ParDo(ProposeDoFn(config.proposals))
        | "BatchForMatch"
        >> beam.BatchElements(min_batch_size=1, max_batch_size=config.batch_size, element_size_fn=weight)
        | "Match" >> beam.ParDo(MatchDoFn(config.clip, config.labels, config.min_score))
    )
    (
        results
        | "KeyByShard" >> beam.Map(lambda r: (r.shard, r))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.Map(write_shard_stage, config.out, expected)
    )


def _progress(out_dir: str, total_images: int, already: set[int], stop: threading.Event) -> None:
    """Advance a progress bar as shard manifests appear (works on any runner with shared storage)."""
    from tqdm import tqdm

    seen: set[int] = set()
    with tqdm(total=total_images, desc="mining", unit="img") as bar:
        while True:
            finished = stop.is_set()
            for shard, manifest in completed_shards(out_dir).items():
                if shard not in already and shard not in seen:
                    seen.add(shard)
                    bar.update(manifest.images)
            if finished:
                break
            stop.wait(1.0)


def summarize(
    out_dir: str, manifests: dict[int, ShardManifest], wall_seconds: float, resumed_shards: int,
    input_skipped: dict[str, int] | None = None,
) -> dict:
    """stats.json: images read = mined + skipped (by reason); pairs; nouns; drops; stage seconds."""
    skipped: dict[str, int] = {}
    dropped: dict[str, int] = {}
    seconds: dict[str, float] = {}
    nouns: dict[str, int] = {}
    annotations: dict[str, int] = {}
    for m in manifests.values():
        for bucket, source in ((skipped, m.skipped), (dropped, m.dropped), (nouns, m.nouns), (annotations, m.annotations_skipped)):
            for k, v in source.items():
                bucket[k] = bucket.get(k, 0) + v
        for k, v in m.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    stats = {
        "images_read": sum(m.images for m in manifests.values()),
        "images_mined": sum(m.mined for m in manifests.values()),
        "images_skipped": dict(sorted(skipped.items())),
        "pairs": sum(m.samples for m in manifests.values()),
        "unique_nouns": len(nouns),
        "pairs_dropped": dict(sorted(dropped.items())),
        "annotations_skipped": dict(sorted(annotations.items())),  # bad-annotation / bad-caption, in rejects.jsonl
        "input_skipped": dict(sorted((input_skipped or {}).items())),  # what the reader left out, by kind
        "shards": len(manifests),
        "shards_resumed": resumed_shards,
        "seconds_per_stage": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "wall_seconds": round(wall_seconds, 3),
    }
    fileio.atomic_write_bytes(fileio.join(out_dir, STATS_FILE), json.dumps(stats, indent=1).encode())
    rejects = sorted((r for m in manifests.values() for r in m.rejects), key=lambda r: r["image_id"])
    fileio.atomic_write_bytes(
        fileio.join(out_dir, REJECTS_FILE), "".join(json.dumps(r) + "\n" for r in rejects).encode()
    )
    vocabulary = [{"noun": n, "pairs": c} for n, c in sorted(nouns.items(), key=lambda kv: (-kv[1], kv[0]))]
    fileio.atomic_write_bytes(fileio.join(out_dir, VOCABULARY_FILE), json.dumps(vocabulary, indent=1).encode())
    return stats


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
    input_skipped: dict[str, int] = {}  # filled by the reader's up-front check of the annotation files
    records = read_captioned_images(
        config.captions, config.instances, config.captions_per_image, config.limit, report=input_skipped
    )
    if not records:
        raise UserError(f"{config.captions} has no captioned images")
    num_shards = config.num_shards or max(1, -(-len(records) // config.images_per_shard))
    prepare_run_dir(config, num_shards)
    done = completed_shards(config.out)
    by_shard: dict[int, list[ImageRecord]] = {s: [] for s in range(num_shards)}
    for record in records:
        by_shard[shard_of(record.image_id, num_shards)].append(record)
    for shard, members in by_shard.items():
        if not members and shard not in done:
            done[shard] = write_shard(config.out, shard, [])
    todo = [r for s, members in by_shard.items() if s not in done for r in members]
    resumed = sum(1 for s in done if by_shard[s])
    log.info(
        "%d images in %d shards; %d shards already complete, %d images to mine",
        len(records), num_shards, resumed, len(todo),
    )
    if todo:
        options = PipelineOptions(runners.with_runner_defaults(beam_args, config.batch_size))
        runner = runners.make_runner(options)
        stop = threading.Event()
        watcher = None
        if progress:
            watcher = threading.Thread(
                target=_progress, args=(config.out, len(todo), set(done), stop), daemon=True
            )
            watcher.start()
        try:
            with beam.Pipeline(runner=runner, options=options) as pipeline:
                expected = {s: len(members) for s, members in by_shard.items() if s not in done}
                build_pipeline(pipeline, todo, config, num_shards, expected)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
    manifests = completed_shards(config.out)
    missing = sorted(set(range(num_shards)) - set(manifests))
    if missing:
        raise RuntimeError(f"the pipeline finished but shards {missing[:10]} have no manifest entry")
    return summarize(config.out, manifests, time.perf_counter() - started, resumed, input_skipped)
