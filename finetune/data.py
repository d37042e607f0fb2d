"""Stream mined (masked crop, noun) shards into training batches with webdataset.

Shards are named like webdataset names them: a brace pattern
(``runs/x/pairs-{000000..000199}.tar``), several joined with ``::``, local
paths, ``file://``, any URL or ``pipe:`` command webdataset opens. Each
DataLoader worker runs its own pipeline:

    shard list (shuffled per epoch, or resampled forever)
      -> split by node (torch.distributed / RANK) -> split by worker
      -> tar members grouped into samples -> shuffle buffer
      -> decode jpg + mask.png, the noun from json -> batch -> to tensors

Decoding uses the mining job's own geometry: mined crops are already at the
model's input size; a crop of another size goes through
``maskmine.transforms.masked_crop.masked_crop`` with an all-kept mask (the same resize),
and every batch is normalised by ``maskmine.transforms.masked_crop.to_clip_tensor``.

Malformed samples (undecodable image or mask, missing member, size mismatch),
tar read errors and nouns outside the vocabulary are skipped, never fatal, and
counted in the worker; each batch carries the counts since the worker's
previous batch (``Batch.skipped``), so the training loop can sum them across
workers. A worker whose stream ends with unreported counts yields an empty
batch carrying them. A worker that fails ``MAX_READ_ATTEMPTS`` reads without
reading a single sample yields a batch marked ``gave_up`` and stops; the
training loop then ends with a one-line error (so does an epoch with no
usable sample), instead of spinning on shards nobody can read.

Every random choice is seeded from (seed, epoch, rank, worker), so with
resampling off one epoch's batch sequence is a function of those alone: that
is what lets ``--resume`` skip exactly the batches already consumed.
"""
from __future__ import annotations

import glob

import io
import random
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from webdataset.shardlists import expand_urls
from webdataset.utils import pytorch_worker_info

from maskmine.finetune.augment import random_resized_crop
from maskmine.finetune.shard_context import local_shard
from maskmine.transforms import shard_format
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import CropConfig, masked_crop, to_clip_tensor

SKIP_MALFORMED = "malformed_sample"  # a member missing or not decodable, or image/mask sizes differ
SKIP_TAR_ERROR = "tar_read_error"  # the tar stream itself could not be read
SKIP_UNKNOWN_NOUN = "noun_not_in_vocabulary"
# A worker that has failed this many reads (tar errors, malformed samples) without reading one
# sample gives up: with --resample the stream would otherwise spin forever on unreadable shards.
MAX_READ_ATTEMPTS = 200


def expand_shards(spec: str | Sequence[str], setting: str = "shards") -> list[str]:
    """The shard URLs of a spec (brace patterns, ``::`` lists, local globs); local files must exist.

    Each ``::``-joined part must name something: an empty part, a part matching
    no file and a folder are one-line errors, never silently dropped; the ones
    about the spec itself are SettingErrors of ``setting`` (``val_shards`` for
    the validation shards).
    """
    parts = spec.split("::") if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for part in parts:
        if not part.strip():
            raise SettingError(setting, "is empty" if len(parts) == 1 else f"{spec!r}: a '::'-joined part is empty")
        found: list[str] = []
        for url in expand_urls(part):
            path = local_shard(url)
            if path is not None and any(c in str(path) for c in "*?["):
                found.extend(sorted(glob.glob(str(path))))  # a local glob such as 'RUN/pairs-*.tar'
            else:
                found.append(url)
        if not found:
            raise UserError(f"no shards matched {spec!r}: {part!r} matches no file" if len(parts) > 1
                            else f"no shards matched {spec!r}")
        folders = [u for u in found if (path := local_shard(u)) is not None and path.is_dir()]
        if folders:
            raise SettingError(setting, f"{folders[0]!r} is a folder: name its shards, e.g. '{folders[0].rstrip('/')}/pairs-*.tar'")
        urls.extend(found)
    missing = [u for u in urls if (path := local_shard(u)) is not None and not path.is_file()]
    if missing and len(missing) == len(urls):
        raise UserError(f"no shards matched {spec!r}: none of the {len(urls)} files exist (e.g. {missing[0]})")
    if missing:
        raise UserError(f"{len(missing)} of {len(urls)} shards in {spec!r} do not exist, e.g. {missing[0]}")
    return urls


@dataclass
class Batch:
    """One batch: normalised crops, their masks, vocabulary labels, and the skips since the last one."""

    pixels: torch.Tensor  # (B, 3, S, S) float, CLIP-normalised
    masks: torch.Tensor  # (B, S, S) bool, True on the region
    labels: torch.Tensor  # (B,) int64 indices into the vocabulary
    nouns: list[str]
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    worker: int = 0
    gave_up: bool = False  # the worker stopped: MAX_READ_ATTEMPTS failures and not one sample read

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pin-memory thread (CUDA training)."""
        self.pixels = self.pixels.pin_memory()
        self.masks = self.masks.pin_memory()
        self.labels = self.labels.pin_memory()
        return self


class SkipCounter:
    """Per-worker counts of skipped samples, reported as deltas with each batch."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}

    def add(self, reason: str, n: int = 1) -> None:
        self.pending[reason] = self.pending.get(reason, 0) + n

    def take(self) -> dict[str, int]:
        out, self.pending = self.pending, {}
        return out

    def tar_handler(self, exn: Exception) -> bool:
        """webdataset exception handler: count and continue."""
        self.add(SKIP_TAR_ERROR)
        return True


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour, as masked_crop resizes its masks."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(img) > 127


def decode_pair(sample: Mapping[str, object], crop: CropConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(pixels SxSx3 uint8, mask SxS bool, noun) of one raw sample; raises ValueError if malformed."""
    try:
        jpg, png = sample[shard_format.IMAGE], sample[shard_format.MASK]
        sample[shard_format.META]
    except KeyError as exc:
        raise ValueError(f"sample {sample.get('__key__')} lacks member {exc}") from exc
    try:
        with Image.open(io.BytesIO(jpg)) as im:
            pixels = np.asarray(im.convert("RGB"))
        with Image.open(io.BytesIO(png)) as im:
            mask = np.asarray(im.convert("L")) > 127
        noun = shard_format.noun_of(sample).strip()  # the txt member holds the caption text, json the noun
    except (OSError, SyntaxError, UnicodeDecodeError, AttributeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"sample {sample.get('__key__')}: {exc}") from exc
    if pixels.shape[:2] != mask.shape or not noun:
        raise ValueError(f"sample {sample.get('__key__')}: image {pixels.shape[:2]} vs mask {mask.shape}, noun {noun!r}")
    size = crop.input_size
    if pixels.shape[:2] != (size, size):
        pixels = masked_crop(pixels, np.ones(mask.shape, dtype=bool), crop).pixels
        mask = _resize_mask(mask, size)
    return pixels, mask, noun


def _make_seed(*parts: int) -> int:
    return random.Random(repr(parts)).getrandbits(63)


class PairStream(IterableDataset):
    """An iterable of ``Batch`` over mined shards; see the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        vocabulary: Sequence[str],
        crop: CropConfig,
        batch_size: int,
        shuffle_buffer: int = 1000,
        resample: bool = False,
        seed: int = 0,
        partial: bool = True,
        max_read_attempts: int = MAX_READ_ATTEMPTS,
        augment_scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.max_read_attempts = max_read_attempts
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.urls = list(urls)
        self.index = {noun: i for i, noun in enumerate(vocabulary)}
        self.crop = crop
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.resample = resample
        self.seed = seed
        self.partial = partial
        self.augment_scale = augment_scale  # RandomResizedCrop's scale range (training); None: crops as stored
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shard order and shuffle (call before ``iter(loader)``)."""
        self.epoch = epoch

    def _shard_urls(self, rank: int, world: int, worker: int, workers: int) -> Iterator[dict]:
        if self.resample:
            # Every worker draws shards with replacement from the whole list, forever.
            rng = random.Random(_make_seed(self.seed, self.epoch, rank, worker, 1))
            while True:
                yield {"url": rng.choice(self.urls)}
        urls = list(self.urls)
        if self.shuffle_buffer > 0:
            random.Random(_make_seed(self.seed, self.epoch)).shuffle(urls)
        # webdataset's own splitters: node first (RANK/WORLD_SIZE or torch.distributed), then worker
        yield from wds.split_by_worker(wds.split_by_node({"url": url} for url in urls))

    def __iter__(self) -> Iterator[Batch]:
        rank, world, worker, workers = pytorch_worker_info()
        counter = SkipCounter()
        state = {"read_ok": False, "gave_up": False}

        def failures() -> int:
            return counter.pending.get(SKIP_TAR_ERROR, 0) + counter.pending.get(SKIP_MALFORMED, 0)

        def bounded(urls: Iterator[dict]) -> Iterator[dict]:
            # webdataset swallows a shard's read error inside its own loop, so the
            # bound is checked here, before each shard is opened
            for url in urls:
                if not state["read_ok"] and failures() >= self.max_read_attempts:
                    state["gave_up"] = True
                    return
                yield url

        samples: Iterator[dict] = wds.tarfile_to_samples(handler=counter.tar_handler)(
            bounded(self._shard_urls(rank, world, worker, workers))
        )
        if self.shuffle_buffer > 0:
            rng = random.Random(_make_seed(self.seed, self.epoch, rank, worker, 2))
            samples = wds.shuffle(bufsize=self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), rng=rng)(samples)
        augment_rng = random.Random(_make_seed(self.seed, self.epoch, rank, worker, 3))
        pixels: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        labels: list[int] = []
        nouns: list[str] = []
        keys: list[str] = []

        def emit() -> Batch:
            size = self.crop.input_size
            batch = Batch(
                pixels=to_clip_tensor(np.stack(pixels), self.crop) if pixels else torch.zeros(0, 3, size, size),
                masks=torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, size, size, dtype=torch.bool),
                labels=torch.tensor(labels, dtype=torch.long),
                nouns=list(nouns),
                keys=list(keys),
                skipped=counter.take(),
                worker=worker,
            )
            for buf in (pixels, masks, labels, nouns, keys):
                buf.clear()
            return batch

        for sample in samples:
            if not state["read_ok"] and failures() >= self.max_read_attempts:
                state["gave_up"] = True
                break
            try:
                px, mk, noun = decode_pair(sample, self.crop)
            except ValueError:
                counter.add(SKIP_MALFORMED)
                continue
            state["read_ok"] = True
            label = self.index.get(noun)
            if label is None:
                counter.add(SKIP_UNKNOWN_NOUN)
                continue
            if self.augment_scale is not None:
                px, mk = random_resized_crop(px, mk, self.crop.input_size, self.augment_scale, augment_rng)
            pixels.append(px)
            masks.append(mk)
            labels.append(label)
            nouns.append(noun)
            keys.append(str(sample.get("__key__")))
            if len(keys) == self.batch_size:
                yield emit()
        if keys and not self.partial:
            for buf in (pixels, masks, labels, nouns, keys):
                buf.clear()
        if keys or counter.pending or state["gave_up"]:
            batch = emit()
            batch.gave_up = state["gave_up"]
            yield batch


def _identity(batch: Batch) -> Batch:
    return batch


def make_loader(stream: PairStream, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over already-batched ``Batch`` items (batching happens in the workers)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: starting an epoch must not draw from the global torch RNG,
        # or a resumed run's RNG stream would differ from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if workers > 0 else None,
    )


def add_skips(total: dict[str, int], new: Mapping[str, int]) -> None:
    for reason, n in new.items():
        total[reason] = total.get(reason, 0) + n
