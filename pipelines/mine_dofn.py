"""The thin Beam DoFn of the mining job: a shard id in, that shard mined and committed.

The mining itself is ``transforms/shard_mining.py`` (``ShardMiner``); this
module wires it into Beam as ``RunInference`` wires a ``ModelHandler``: the
picklable specs (``ProposalSpec``, ``ClipSpec``) are loaded once per worker
process through Beam's ``Shared`` handle, and each worker process sizes
torch's thread pool (``--torch-threads``) first.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable

import apache_beam as beam
from apache_beam.utils.shared import Shared

from maskmine.transforms.proposals.factory import build_proposal_generator
from maskmine.transforms.shard_mining import ClipWithTextCache, ShardJob, ShardMiner
from maskmine.transforms.worker_memory import cap_malloc_arenas
from maskmine.transforms.worker_threads import set_torch_threads

log = logging.getLogger(__name__)


class MineShardDoFn(beam.DoFn):
    """Shard id → that shard mined and committed; yields (shard, images, pairs)."""

    def __init__(self, job: ShardJob) -> None:
        self.job = job
        self._proposals = Shared()
        self._clip = Shared()
        self.miner: ShardMiner | None = None

    def setup(self) -> None:
        cap_malloc_arenas()  # before the stage threads: memory flat shard after shard
        set_torch_threads(self.job.torch_threads, self.job.local_workers)
        generator = self._proposals.acquire(
            lambda: build_proposal_generator(self.job.proposals), tag=repr(self.job.proposals)
        )
        worker = self._clip.acquire(lambda: ClipWithTextCache.load(self.job.clip), tag=repr(self.job.clip))
        self.miner = ShardMiner(self.job, generator, worker)

    def process(self, shard: int) -> Iterable[tuple[int, int, int]]:
        manifest = self.miner.mine(shard)
        log.info("shard %d committed: %d images, %d pairs (worker pid %d)", shard, manifest.images, manifest.samples, os.getpid())
        yield shard, manifest.images, manifest.samples

