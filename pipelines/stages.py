"""Thin Beam wrappers around the per-element functions in ``transforms/``.

Each DoFn times its work into ``MiningItem.seconds`` so stats.json can report
seconds per stage on any runner (no runner-specific metrics needed). Models
are built once per worker process through Beam's ``Shared`` handle.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.utils.shared import Shared

from maskmine.transforms import fileio
from maskmine.transforms.clip_models import LoadedClip, TextEmbeddingCache, load_clip
from maskmine.transforms.image_io import DEFAULT_MAX_MEGAPIXELS, ImageSkip, read_record_image
from maskmine.transforms.masked_crop import CropConfig
from maskmine.transforms.pairing import LABELS_CATEGORIES, pair_items
from maskmine.transforms.proposals.device import resolve_device
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.records import (
    SKIP_NO_NOUNS,
    SKIP_NO_PAIRS,
    SKIP_NO_PROPOSALS,
    ImageRecord,
    ImageResult,
    MiningItem,
)
from maskmine.transforms.shards import ShardManifest, shard_of, write_shard


@dataclass(frozen=True)
class ClipSpec:
    model: str = "ViT-B-16"
    pretrained: str = "openai"
    device: str = "auto"
    crop: CropConfig = CropConfig()


def _add_seconds(items: Sequence[MiningItem], stage: str, seconds: float) -> None:
    share = seconds / max(1, len(items))
    for item in items:
        item.seconds[stage] = item.seconds.get(stage, 0.0) + share


def to_item(record: ImageRecord, num_shards: int) -> MiningItem:
    return MiningItem(record=record, shard=shard_of(record.image_id, num_shards))


def extract_nouns_stage(item: MiningItem, labels: str) -> MiningItem:
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
        item.skip(exc.reason)
    _add_seconds([item], "decode", time.perf_counter() - start)
    return item


class ProposeDoFn(beam.DoFn):
    """Batch of items → the same items with proposals (or skipped: no-proposals)."""

    def __init__(self, spec: ProposalSpec) -> None:
        self.spec = spec
        self._shared = Shared()
        self.generator = None

    def setup(self) -> None:
        self.generator = self._shared.acquire(lambda: build_proposal_generator(self.spec), tag=repr(self.spec))

    def process(self, batch: list[MiningItem]) -> Iterable[MiningItem]:
        live = [item for item in batch if not item.skipped]
        if live:
            start = time.perf_counter()
            proposals = self.generator.generate([i.image for i in live], [i.record for i in live])
            for item, props in zip(live, proposals):
                item.proposals = props
                if len(props) == 0:
                    item.skip(SKIP_NO_PROPOSALS)
            _add_seconds(live, "proposals", time.perf_counter() - start)
        yield from batch


class _ClipWorker:
    """What one worker process keeps: the CLIP model and its text-embedding cache."""

    def __init__(self, spec: ClipSpec) -> None:
        device = resolve_device(spec.device)
        self.clip: LoadedClip = load_clip(spec.model, spec.pretrained, device, spec.crop)
        self.text_cache = TextEmbeddingCache(self.clip)


class MatchDoFn(beam.DoFn):
    """Batch of items with proposals → one ImageResult per item."""

    def __init__(self, spec: ClipSpec, labels: str, min_score: float | None) -> None:
        self.spec = spec
        self.labels = labels
        self.min_score = min_score
        self._shared = Shared()
        self.worker: _ClipWorker | None = None

    def setup(self) -> None:
        self.worker = self._shared.acquire(lambda: _ClipWorker(self.spec), tag=repr(self.spec))

    def process(self, batch: list[MiningItem]) -> Iterable[ImageResult]:
        live = [item for item in batch if not item.skipped]
        outcomes = {}
        if live:
            start = time.perf_counter()
            paired = pair_items(
                live, self.worker.clip, self.worker.text_cache, labels=self.labels, min_score=self.min_score
            )
            _add_seconds(live, "match", time.perf_counter() - start)
            outcomes = {id(item): out for item, out in zip(live, paired)}
        for item in batch:
            pairs, dropped = outcomes.get(id(item), ([], {}))
            if not item.skipped and not pairs:
                item.skip(SKIP_NO_PAIRS)
            yield ImageResult(
                image_id=item.record.image_id,
                file_name=item.record.file_name,
                shard=item.shard,
                status="skipped" if item.skipped else "mined",
                reason=item.skip_reason,
                pairs=pairs,
                dropped=dropped,
                seconds=dict(item.seconds),
                rejects=list(item.record.rejects),  # annotations/captions left out (counted, not fatal)
            )


class BatchWeight:
    """``element_size_fn`` for ``BatchElements``: at most ``max_items`` items and ``max_bytes`` bytes a batch.

    BatchElements caps the sum of one weight per element at its
    ``max_batch_size``. With ``max_batch_size=max_items``, a weight of
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


# Test hook for interrupted runs (tests/test_resume.py): with MASKMINE_FAIL_AFTER_IMAGES=K
# a worker process that has written shards holding K or more images fails before
# writing its next shard. MASKMINE_FAIL_MODE says how: "raise" (default: the
# pipeline fails with an error) or "hang" (it blocks, so a test can SIGKILL the
# job from outside while some shards are complete and some not). Not for users.
FAIL_AFTER_ENV = "MASKMINE_FAIL_AFTER_IMAGES"
FAIL_MODE_ENV = "MASKMINE_FAIL_MODE"
_images_written = 0


def _maybe_fail_for_test(shard: int) -> None:
    limit = os.environ.get(FAIL_AFTER_ENV)
    if limit is None or _images_written < int(limit):
        return
    if os.environ.get(FAIL_MODE_ENV, "raise") == "hang":
        while True:
            time.sleep(3600)
    raise RuntimeError(f"{FAIL_AFTER_ENV}={limit}: failing before shard {shard} (test hook)")


def write_shard_stage(
    keyed: tuple[int, Iterable[ImageResult]], out_dir: str, expected: dict[int, int] | None = None
) -> ShardManifest:
    """Write one shard; refuse (no manifest, so a rerun redoes it) when images went missing on the way."""
    global _images_written
    shard, results = keyed
    results = list(results)
    _maybe_fail_for_test(shard)
    if expected is not None and len(results) != expected.get(shard, 0):
        raise RuntimeError(
            f"shard {shard}: {len(results)} of {expected.get(shard, 0)} images reached the writer; "
            "the runner lost or duplicated elements, so the shard is not marked complete"
        )
    manifest = write_shard(out_dir, shard, results)
    _images_written += len(results)
    return manifest
