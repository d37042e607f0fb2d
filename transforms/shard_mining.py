"""The mining work of one shard, apart from any runner: a shard is a task.

``ShardMiner.mine(shard)`` streams the shard's task file (``transforms/tasks.py``)
through the per-element functions of ``transforms/``: nouns and decode per
image, proposals per batch (``--batch-size`` and ``--max-batch-bytes``,
``transforms/batching.py``), masked crops per image, CLIP and matching per
image on CPU (per chunk of a batch on an accelerator), and hands each finished
image to a ``ShardWriter``, which streams the tar and commits the shard
(manifest last) as soon as its own images are done. The stages run in
threads of their own joined by bounded queues (``transforms/stage_threads.py``),
so the device is not idle while the CPU decodes, crops and encodes; the bytes
are those of the same stages run in turn. Every image is timed into
``MiningItem.seconds`` so stats.json reports seconds per stage on any runner.
The two models come loaded: a proposal generator built from its
``ProposalSpec`` and a :class:`ClipWithTextCache` from its ``ClipSpec``, once
per worker process (``pipelines/mine_dofn.py`` wires this into a Beam DoFn).
"""
from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from maskmine.transforms import mine_settings, storage
from maskmine.transforms.batching import BatchWeight, split_batches
from maskmine.transforms.clip_models import ClipSpec, LoadedClip, TextEmbeddingCache, encode_crops
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS, ImageSkip, read_record_image
from maskmine.transforms.masked_crop import MaskedCrop
from maskmine.transforms.pairing import LABELS_CATEGORIES, ImageMatches, build_pairs, crops_for, match_item, matched_crops
from maskmine.transforms.progress_files import ProgressFile
from maskmine.transforms.proposals.base import ProposalGenerator
from maskmine.transforms.proposals.factory import ProposalSpec
from maskmine.transforms.records import (
    ImageResult,
    MiningItem,
    Skip,
)
from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE
from maskmine.transforms.stage_threads import StageThreads, ordered_map
from maskmine.transforms.shards import (
    ShardManifest,
    ShardWriter,
    image_order,
    is_image_skip,
    manifest_path,
    read_shard_pairs,
)
from maskmine.transforms.tasks import ShardTask
from maskmine.transforms.worker_threads import resolve_torch_threads

log = logging.getLogger(__name__)
CLIP_BATCH = 128  # rows per CLIP forward call (an image's crops, up to --top-k, fit in one)


def _add_seconds(items: Sequence[MiningItem], stage: str, seconds: float) -> None:
    share = seconds / max(1, len(items))
    for item in items:
        item.seconds[stage] = item.seconds.get(stage, 0.0) + share


def extract_nouns_stage(item: MiningItem, labels: str) -> MiningItem:
    if item.skipped:
        return item
    start = time.perf_counter()
    if labels != LABELS_CATEGORIES:
        from maskmine.transforms.nouns import extract_nouns

        item.nouns = extract_nouns(item.record.captions)
        if not item.nouns:
            item.skip(Skip.NO_NOUNS)
    _add_seconds([item], "nouns", time.perf_counter() - start)
    return item


def load_image_stage(item: MiningItem, images_dir: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> MiningItem:
    if item.skipped:
        return item
    start = time.perf_counter()
    try:
        item.image = read_record_image(images_dir, item.record, max_megapixels)
    except ImageSkip as exc:
        item.skip(exc.reason, exc.detail)
    _add_seconds([item], "decode", time.perf_counter() - start)
    return item


class ClipWithTextCache:
    """A loaded CLIP with its text-embedding cache: what one worker process keeps for matching (one per process)."""

    def __init__(self, clip: LoadedClip) -> None:
        self.clip = clip
        self.text_cache = TextEmbeddingCache(clip)

    @classmethod
    def load(cls, spec: ClipSpec) -> "ClipWithTextCache":
        """The CLIP ``spec`` names, loaded (the "load" half of a Beam ``ModelHandler``)."""
        return cls(spec.load())


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to mine any shard of a run (the same for every shard; no records)."""

    out: str
    images: str
    labels: str
    proposals: ProposalSpec
    clip: ClipSpec
    min_score: float | None = None
    batch_size: int = mine_settings.BATCH_SIZE
    max_batch_bytes: int | None = None
    torch_threads: int | None = None  # None: cores ÷ local_workers
    local_workers: int | None = None  # worker processes on one machine, where the driver knows it
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger images are skipped as too-large
    caption_template: str = DEFAULT_CAPTION_TEMPLATE  # the txt member: this, filled with the noun
    overlap: bool = True  # the stages in threads of their own (False: in turn, in the worker's thread)


@dataclass
class ClipUnit:
    """Images that go to CLIP together, in shard order, with the skipped images among them.

    On CPU a unit is one image (CLIP runs per image: bit-identical whatever the
    neighbours); on an accelerator it is a chunk of a proposal batch within
    ``--batch-size`` / ``--max-batch-bytes`` (masks counted), embedded in one call.
    ``crops[i]`` are item i's crops (after CLIP: only the matched ones),
    ``matched[i]`` its matching; both None for a skipped item. The crop
    threads write the unit's CLIP input, so the CLIP thread only runs the model.
    """

    items: list[MiningItem]
    crops: list[Sequence[MaskedCrop] | dict[int, MaskedCrop] | None] = field(default_factory=list)
    clip_input: torch.Tensor | None = None  # the live items' crops, one (N, 3, S, S) tensor: one CLIP call
    embedded: list[torch.Tensor] = field(default_factory=list)  # each live item's crop embeddings, after CLIP
    matched: list[ImageMatches | None] = field(default_factory=list)

    def live(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if not item.skipped]


class ShardMiner:
    """Mines whole shards with one proposal generator and one CLIP model (one per worker process).

    A shard streams through six stages: read (task records, nouns, decode,
    batches), proposals (device), crops (CPU, ``crop_workers`` threads), CLIP
    (device, nothing else, so its calls follow each other without a gap), matching
    (CPU), and pairs + writing (the calling thread). With
    ``job.overlap`` each stage runs in its own thread (``transforms/stage_threads.py``),
    so the device works while the CPU decodes, crops and encodes; without it
    the same stages run in turn. Both write the same bytes: every image's
    computation is the same, and order is kept.
    """

    def __init__(self, job: ShardJob, generator: ProposalGenerator, clip_worker: ClipWithTextCache,
                 crop_workers: int | None = None, cross_image_clip: bool | None = None) -> None:
        self.job = job
        self.generator = generator
        self.worker = clip_worker
        self.weight = BatchWeight(job.batch_size, job.max_batch_bytes)
        if cross_image_clip is None:  # CPU: one image per CLIP call, so an image's bytes never depend on its neighbours
            cross_image_clip = clip_worker.clip.device.type != "cpu"
        self.cross_image_clip = cross_image_clip
        if crop_workers is None:  # one crop thread per core of this worker's share
            crop_workers = resolve_torch_threads(None, job.local_workers) if job.overlap else 1
        self.crop_workers = max(1, crop_workers)

    def _items(self, task: ShardTask) -> Iterator[MiningItem]:
        for record in task.records():
            item = MiningItem(record=record, shard=task.shard)
            if record.skip_reason:  # the reader refused the entry itself (e.g. duplicate-image-id)
                item.skip(record.skip_reason, record.skip_detail)
            item = extract_nouns_stage(item, self.job.labels)
            yield load_image_stage(item, self.job.images, self.job.max_megapixels)

    def _propose(self, batches: Iterator[list[MiningItem]]) -> Iterator[ClipUnit]:
        """Proposals for each batch of images (one model call a batch), cut into CLIP units."""
        for batch in batches:
            live = [item for item in batch if not item.skipped]
            if live:
                start = time.perf_counter()
                proposals = self.generator.generate([i.image for i in live], [i.record for i in live])
                for item, props in zip(live, proposals):
                    item.proposals = props
                    if len(props) == 0:
                        item.skip(Skip.NO_PROPOSALS)
                _add_seconds(live, "proposals", time.perf_counter() - start)
            if self.cross_image_clip:  # the masks count toward the budget now; skipped items ride along
                yield from (ClipUnit(chunk) for chunk in split_batches(batch, self.weight))
            else:
                yield from (ClipUnit([item]) for item in batch)

    def _crop(self, unit: ClipUnit) -> ClipUnit:
        """Every live item's crops, written into one (N, 3, S, S) tensor: the unit's CLIP input, no stacking."""
        config, device = self.worker.clip.crop_config, self.worker.clip.device
        counts = [0 if item.skipped else len(item.proposals.masks) for item in unit.items]
        if sum(counts):
            size = config.input_size
            unit.clip_input = torch.empty((sum(counts), 3, size, size), dtype=torch.float32, device=device)
        rows = 0
        for item, count in zip(unit.items, counts):
            if item.skipped:
                unit.crops.append(None)
                continue
            start = time.perf_counter()
            out = unit.clip_input[rows : rows + count]
            unit.crops.append(crops_for(item, config, device, out=out))  # on a GPU: all masks at once, there
            rows += count
            _add_seconds([item], "crop", time.perf_counter() - start)
        return unit

    def _embed(self, units: Iterator[ClipUnit]) -> Iterator[ClipUnit]:
        """CLIP on each unit's crops, one call a unit, and nothing else: the device's next call waits on no CPU work."""
        clip = self.worker.clip
        for unit in units:
            live = unit.live()
            if live:  # one call a unit: one image on CPU, a chunk of images on an accelerator
                start = time.perf_counter()
                unit.embedded = list(encode_crops(clip, unit.clip_input, CLIP_BATCH).split([len(unit.crops[i]) for i in live]))
                _add_seconds([unit.items[i] for i in live], "clip", time.perf_counter() - start)
            unit.clip_input = None
            yield unit

    def _match(self, units: Iterator[ClipUnit]) -> Iterator[ClipUnit]:
        """Each embedded image's labels matched to its crops (the text embeddings come from the cache)."""
        clip, job = self.worker.clip, self.job
        for unit in units:
            live = unit.live()
            unit.matched = [None] * len(unit.items)
            for i, emb in zip(live, unit.embedded):
                start = time.perf_counter()
                unit.matched[i] = match_item(unit.items[i], emb, self.worker.text_cache, clip.logit_scale, job.labels)
                unit.crops[i] = matched_crops(unit.matched[i], unit.crops[i])  # the other crops can go
                _add_seconds([unit.items[i]], "match", time.perf_counter() - start)
            unit.embedded = []
            yield unit

    def _results(self, unit: ClipUnit) -> list[ImageResult]:
        """Each image of a matched unit as an ImageResult: its pairs encoded (JPEG, PNG, RLE)."""
        clip, job = self.worker.clip, self.job
        results = []
        for item, crops, matched in zip(unit.items, unit.crops, unit.matched, strict=True):
            pairs, dropped = [], {}
            if matched is not None:
                start = time.perf_counter()
                pairs, drops = build_pairs(item, matched, crops, clip.name, clip.pretrained,
                                           labels=job.labels, min_score=job.min_score)
                dropped = dict(drops)
                _add_seconds([item], "encode", time.perf_counter() - start)
            if not item.skipped and not pairs:
                item.skip(Skip.NO_PAIRS)
            results.append(
                ImageResult(
                    image_id=item.record.image_id,
                    file_name=item.record.file_name,
                    shard=item.shard,
                    status="skipped" if item.skipped else "mined",
                    reason=item.skip_reason,
                    pairs=pairs,
                    dropped=dropped,
                    seconds=dict(item.seconds),
                    rejects=list(item.record.rejects),  # annotations/captions left out (counted, not fatal)
                    detail=item.skip_detail,
                )
            )
            item.image = item.proposals = None  # done with the pixels
        unit.crops = unit.matched = []
        return results

    def _mined(self, task: ShardTask) -> Iterator[ImageResult]:
        """The task's images, mined, in shard order; the stages run in threads of their own with ``job.overlap``."""
        stages = StageThreads(threaded=self.job.overlap, name=f"shard-{task.shard}")
        batch_depth = 2  # batches of decoded images ahead of the proposal model
        unit_depth = max(self.job.batch_size, 2 * self.crop_workers)  # about a batch of images between stages
        try:
            batches = stages.source(lambda: split_batches(self._items(task), self.weight), batch_depth, "read")
            units = stages.stage(self._propose, batches, unit_depth, "proposals")
            units = stages.stage(lambda us: ordered_map(self._crop, us, self.crop_workers, "crop"), units,
                                 self.crop_workers, "crops")
            units = stages.stage(self._embed, units, unit_depth, "clip")
            units = stages.stage(self._match, units, unit_depth, "match")
            for unit in units:
                yield from self._results(unit)
        finally:
            stages.stop()

    def mine(self, shard: int) -> ShardManifest:
        """Mine one shard from its task file and commit it; returns its manifest entry."""
        out = self.job.out
        task = ShardTask(out, shard)
        progress = ProgressFile(out, shard, task.images)
        if task.retry:
            return self._retry(task, progress)
        writer = ShardWriter(out, shard, self.job.caption_template)
        try:
            with closing(self._mined(task)) as results:  # a failure here stops the stage threads at once
                for result in results:
                    writer.add(result)
                    progress.add(result)
            if writer.stats.images != task.images:
                raise RuntimeError(f"shard {shard}: {writer.stats.images} of {task.images} images were mined")
            manifest = writer.close()
        except BaseException:
            writer.abort()
            raise
        progress.remove()
        return manifest

    def _retry(self, task: ShardTask, progress: "ProgressFile") -> ShardManifest:
        """Re-mine the images of the task and rewrite the shard, keeping every other image's samples as they are."""
        out, shard = self.job.out, task.shard
        old = ShardManifest.from_json(storage.read_bytes(manifest_path(out, shard)))
        retried = {}
        with closing(self._mined(task)) as results:
            for result in results:
                retried[result.image_id] = result
                progress.add(result)
        old_pairs = read_shard_pairs(out, shard)
        carried = {}
        for image_id, pairs in old_pairs.items():
            carried[image_id] = ImageResult(image_id, pairs[0].file_name, shard, "mined", pairs=pairs)
        for reject in old.rejects:
            if reject["image_id"] not in retried and is_image_skip(reject):
                carried[reject["image_id"]] = ImageResult(
                    reject["image_id"], reject["file_name"], shard, "skipped", reason=reject["reason"],
                    detail=reject.get("detail", ""),
                )
        for reject in old.rejects:  # a carried image's left-out annotations and captions stay counted
            if reject["image_id"] in carried and not is_image_skip(reject):
                carried[reject["image_id"]].rejects.append(
                    {k: v for k, v in reject.items() if k not in ("image_id", "file_name")}
                )
        if set(carried) & set(retried):
            raise RuntimeError(f"shard {shard}: retried images already have samples in the shard")
        writer = ShardWriter(out, shard, self.job.caption_template)
        try:
            merged = {**carried, **retried}
            for image_id in sorted(merged, key=image_order):
                writer.add(merged[image_id])
            if writer.stats.images != old.images:
                raise RuntimeError(f"shard {shard}: {writer.stats.images} images after the retry, {old.images} before")
            writer.stats.dropped.update(old.dropped)  # the carried images' drops and stage times
            writer.stats.seconds.update(old.seconds)
            # A kill from here on leaves the shard without a manifest: a plain rerun re-mines it whole.
            manifest = writer.close(before_commit=lambda: storage.delete([manifest_path(out, shard)]))
        except BaseException:
            writer.abort()
            raise
        progress.remove()
        return manifest
