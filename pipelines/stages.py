"""The mining work of one shard, and the thin Beam DoFn that runs it: a shard is a task.

``ShardMiner.mine(shard)`` streams the shard's task file (``transforms/tasks.py``)
through the per-element functions of ``transforms/`` in batches: nouns and
decode per image, then proposals and CLIP matching per batch (``--batch-size``
and ``--max-batch-bytes``), and hands each finished image to a
``ShardWriter``, which streams the tar and commits the shard (manifest last)
as soon as its own images are done. Every image is timed into
``MiningItem.seconds`` so stats.json reports seconds per stage on any runner.
The two model stages have the shape of Beam's ``ModelHandler`` (load, batch,
run): a picklable spec (``ProposalSpec``, ``ClipSpec``) is loaded once per
worker process through Beam's ``Shared`` handle, batches are sized by
``--batch-size`` and ``--max-batch-bytes``, and the model runs on a whole
batch. Each worker process sizes torch's thread pool (``--torch-threads``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.utils.shared import Shared

from maskmine.transforms.atomic import atomic_write
from maskmine.transforms import storage, run_folder
from maskmine.transforms.clip_models import ClipSpec, LoadedClip, TextEmbeddingCache
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS, ImageSkip, read_record_image
from maskmine.transforms.pairing import LABELS_CATEGORIES, pair_items
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.records import (
    SKIP_NO_NOUNS,
    SKIP_NO_PAIRS,
    SKIP_NO_PROPOSALS,
    ImageResult,
    MiningItem,
)
from maskmine.transforms.shard_format import DEFAULT_CAPTION_TEMPLATE
from maskmine.transforms.shards import (
    ShardManifest,
    ShardWriter,
    image_order,
    is_image_skip,
    manifest_path,
    read_shard_pairs,
)
from maskmine.transforms.tasks import ShardTask

log = logging.getLogger(__name__)


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
            item.skip(SKIP_NO_NOUNS)
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


class _ClipWorker:
    """What one worker process keeps: the CLIP model and its text-embedding cache."""

    def __init__(self, spec: ClipSpec) -> None:
        self.clip: LoadedClip = spec.load()
        self.text_cache = TextEmbeddingCache(self.clip)


class BatchWeight:
    """An item's share of a batch: at most ``max_items`` items and ``max_bytes`` bytes a batch.

    :func:`split_batches` (like Beam's ``BatchElements`` with this as its
    ``element_size_fn``) caps the sum of the weights of a batch at
    ``max_items``. A weight of
    ``max(1, ceil(bytes * max_items / max_bytes))`` keeps both the item count
    and the bytes (decoded image plus proposal masks) under their caps; an
    item larger than the byte budget travels alone.
    """

    def __init__(self, max_items: int, max_bytes: int | None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes

    def __call__(self, item: MiningItem) -> int:
        if not self.max_bytes:
            return 1
        return max(1, math.ceil(item_nbytes(item) * self.max_items / self.max_bytes))


def item_nbytes(item: MiningItem) -> int:
    """Bytes of the arrays an item carries between stages (decoded image, proposal masks)."""
    total = 0 if item.image is None else int(item.image.nbytes)
    if item.proposals is not None:
        total += int(item.proposals.masks.nbytes) + int(item.proposals.scores.nbytes)
    return total


def split_batches(items: Iterable[MiningItem], weight: "BatchWeight") -> Iterator[list[MiningItem]]:
    """Consecutive batches, in order, each at most ``weight.max_items`` slots of live items.

    Skipped items ride along for free (they reach no model); a live item
    heavier than the whole budget travels alone.
    """
    batch: list[MiningItem] = []
    used = 0
    for item in items:
        w = 0 if item.skipped else weight(item)
        if used and used + w > weight.max_items:
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += w
        if used >= weight.max_items:
            yield batch
            batch, used = [], 0
    if batch:
        yield batch


def local_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def dask_local_threads() -> int | None:
    """Threads of all Dask workers on this worker's host (None outside a Dask worker)."""
    try:
        from distributed import get_client, get_worker

        me = get_worker()
    except (ImportError, ValueError):
        return None
    try:
        host = me.address.rsplit(":", 1)[0]
        workers = get_client().scheduler_info()["workers"]
        return sum(int(w.get("nthreads", 1)) for a, w in workers.items() if a.rsplit(":", 1)[0] == host) or None
    except Exception:  # noqa: BLE001 - fall back to the worker's own threads
        return None


def resolve_torch_threads(requested: int | None, local_workers: int | None) -> int:
    """torch threads for this worker process: ``requested``, else cores ÷ worker processes on this machine.

    ``local_workers`` is what the driver knows (the local runners); on Dask the
    worker counts its host's worker threads itself; elsewhere it is cores ÷ 1.
    """
    if requested:
        return requested
    workers = local_workers or dask_local_threads() or 1
    return max(1, local_cpu_count() // workers)


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to mine any shard of a run (the same for every shard; no records)."""

    out: str
    images: str
    labels: str
    proposals: ProposalSpec
    clip: ClipSpec
    min_score: float | None = None
    batch_size: int = 8
    max_batch_bytes: int | None = None
    torch_threads: int | None = None  # None: cores ÷ local_workers
    local_workers: int | None = None  # worker processes on one machine, where the driver knows it
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger images are skipped as too-large
    caption_template: str = DEFAULT_CAPTION_TEMPLATE  # the txt member: this, filled with the noun


class ShardMiner:
    """Mines whole shards with one proposal generator and one CLIP model (one per worker process)."""

    def __init__(self, job: ShardJob, generator, clip_worker: "_ClipWorker") -> None:
        self.job = job
        self.generator = generator
        self.worker = clip_worker
        self.weight = BatchWeight(job.batch_size, job.max_batch_bytes)

    def _items(self, task: ShardTask) -> Iterator[MiningItem]:
        for record in task.records():
            item = MiningItem(record=record, shard=task.shard)
            if record.skip_reason:  # the reader refused the entry itself (e.g. duplicate-image-id)
                item.skip(record.skip_reason, record.skip_detail)
            item = extract_nouns_stage(item, self.job.labels)
            yield load_image_stage(item, self.job.images, self.job.max_megapixels)

    def _results(self, batch: list[MiningItem]) -> list[ImageResult]:
        live = [item for item in batch if not item.skipped]
        if live:
            start = time.perf_counter()
            proposals = self.generator.generate([i.image for i in live], [i.record for i in live])
            for item, props in zip(live, proposals):
                item.proposals = props
                if len(props) == 0:
                    item.skip(SKIP_NO_PROPOSALS)
            _add_seconds(live, "proposals", time.perf_counter() - start)
        outcomes = {}
        live = [item for item in batch if not item.skipped]
        for chunk in split_batches(live, self.weight):  # the masks count toward the budget now
            start = time.perf_counter()
            paired = pair_items(
                chunk, self.worker.clip, self.worker.text_cache, labels=self.job.labels, min_score=self.job.min_score
            )
            _add_seconds(chunk, "match", time.perf_counter() - start)
            outcomes.update({id(item): out for item, out in zip(chunk, paired)})
        results = []
        for item in batch:
            pairs, dropped = outcomes.get(id(item), ([], {}))
            if not item.skipped and not pairs:
                item.skip(SKIP_NO_PAIRS)
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
        return results

    def mine(self, shard: int) -> ShardManifest:
        """Mine one shard from its task file and commit it; returns its manifest entry."""
        out = self.job.out
        task = ShardTask(out, shard)
        progress = ProgressFile(out, shard, task.images)
        if task.retry:
            return self._retry(task, progress)
        writer = ShardWriter(out, shard, self.job.caption_template)
        try:
            for batch in split_batches(self._items(task), self.weight):
                for result in self._results(batch):
                    writer.add(result)
                    progress.add(result)
            if writer.manifest.images != task.images:
                raise RuntimeError(f"shard {shard}: {writer.manifest.images} of {task.images} images were mined")
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
        for batch in split_batches(self._items(task), self.weight):
            for result in self._results(batch):
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
            if writer.manifest.images != old.images:
                raise RuntimeError(f"shard {shard}: {writer.manifest.images} images after the retry, {old.images} before")
            m = writer.manifest
            for reason, n in old.dropped.items():  # the carried images' drops and stage times
                m.dropped[reason] = m.dropped.get(reason, 0) + n
            for stage, sec in old.seconds.items():
                m.seconds[stage] = m.seconds.get(stage, 0.0) + sec
            # A kill from here on leaves the shard without a manifest: a plain rerun re-mines it whole.
            manifest = writer.close(before_commit=lambda: storage.delete([manifest_path(out, shard)]))
        except BaseException:
            writer.abort()
            raise
        progress.remove()
        return manifest


class ProgressFile:
    """``OUT/progress/pairs-NNNNNN.json``: images and pairs done in a shard in flight, rewritten at most once a second.

    The driver's progress bar sums these files (and the manifests of finished
    shards), so it advances per batch on any runner that shares ``--out``.
    """

    def __init__(self, out: str, shard: int, total: int, interval: float = 1.0) -> None:
        self.path = storage.join(out, run_folder.progress_name(shard))
        self.total = total
        self.images = 0
        self.pairs = 0
        self.interval = interval
        self._last = 0.0
        storage.makedirs(storage.join(out, run_folder.PROGRESS_DIR))

    def add(self, result: ImageResult) -> None:
        self.images += 1
        self.pairs += len(result.pairs)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            body = {"images": self.images, "pairs": self.pairs, "total": self.total}
            atomic_write(self.path, json.dumps(body))

    def remove(self) -> None:
        storage.delete([self.path])


def read_progress(out: str) -> dict[int, dict]:
    """Progress files of the shards in flight: shard -> {"images", "pairs", "total"}."""
    found = {}
    for path in storage.glob(storage.join(out, run_folder.PROGRESS_GLOB)):
        try:
            body = json.loads(storage.read_bytes(path))
        except (OSError, ValueError):  # renamed away between glob and read
            continue
        found[run_folder.shard_from_name(storage.basename(path), run_folder.PROGRESS_SUFFIX)] = body
    return found


class MineShardDoFn(beam.DoFn):
    """Shard id → that shard mined and committed; yields (shard, images, pairs)."""

    def __init__(self, job: ShardJob) -> None:
        self.job = job
        self._proposals = Shared()
        self._clip = Shared()
        self.miner: ShardMiner | None = None

    def setup(self) -> None:
        import torch

        threads = resolve_torch_threads(self.job.torch_threads, self.job.local_workers)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        generator = self._proposals.acquire(
            lambda: build_proposal_generator(self.job.proposals), tag=repr(self.job.proposals)
        )
        worker = self._clip.acquire(lambda: _ClipWorker(self.job.clip), tag=repr(self.job.clip))
        self.miner = ShardMiner(self.job, generator, worker)

    def process(self, shard: int) -> Iterable[tuple[int, int, int]]:
        manifest = self.miner.mine(shard)
        log.info("shard %d committed: %d images, %d pairs (worker pid %d)", shard, manifest.images, manifest.samples, os.getpid())
        yield shard, manifest.images, manifest.samples

