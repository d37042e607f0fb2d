"""A worker's stages in threads (overlap) write the same bytes as the same stages in turn.

Issue 21: the device must not wait while the CPU decodes, crops and encodes,
so ``ShardMiner`` runs its stages in threads joined by bounded queues. The
shards must not change for it: the same input mined by the overlapped worker
(``maskmine mine`` as it runs) and by a serial one (``ShardJob.overlap=False``),
both with one torch thread, gives byte-identical tars and Parquet parts. A
failure in any stage thread reaches the worker and leaves the shard uncommitted.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskmine.pipelines.mine import plan_run, run_mining, shard_job
from maskmine.transforms.proposals.base import ProposalGenerator
from maskmine.transforms.proposals.factory import build_proposal_generator
from maskmine.transforms.shard_mining import ClipWithTextCache, ShardMiner
from maskmine.transforms.stage_threads import StageThreads, ordered_map
from mining_helpers import coco_mini_config

LIMIT = 12  # every committed image (coco_cc_by)


def config(coco_cc_by: Path, out: Path, **changes):
    settings = dict(num_shards=2, limit=LIMIT, batch_size=4, torch_threads=1, labels="nouns")
    settings.update(changes)
    return coco_mini_config(coco_cc_by, out, **settings)


def shard_bytes(out: Path) -> dict[str, bytes]:
    files = sorted(out.glob("pairs-*.tar")) + sorted((out / "parquet").glob("*.parquet"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def mine_with(cfg, overlap: bool, generator=None, crop_workers: int | None = None,
              cross_image_clip: bool | None = None) -> None:
    """Mine every pending shard of ``cfg`` with one ShardMiner in this process."""
    plan = plan_run(cfg)
    job = replace(shard_job(cfg, 1), overlap=overlap)
    miner = ShardMiner(job, generator or build_proposal_generator(cfg.proposals), ClipWithTextCache.load(cfg.clip),
                       crop_workers=crop_workers, cross_image_clip=cross_image_clip)
    for shard in sorted(plan.pending):
        miner.mine(shard)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_overlapped_and_serial_workers_write_the_same_bytes(coco_cc_by, nltk_data, tmp_path):
    stats = run_mining(config(coco_cc_by, tmp_path / "overlapped"), progress=False)  # the job as it runs
    assert stats["images_read"] == LIMIT and stats["pairs"] > 0
    serial = config(coco_cc_by, tmp_path / "serial")
    mine_with(serial, overlap=False)
    threaded = config(coco_cc_by, tmp_path / "threaded")
    mine_with(threaded, overlap=True, crop_workers=3)  # crops of three images at once, still in order
    whole = shard_bytes(tmp_path / "overlapped")
    assert len(whole) == 4 and whole == shard_bytes(tmp_path / "serial") == shard_bytes(tmp_path / "threaded")


def test_cross_image_clip_chunks_pair_each_image_as_alone(coco_cc_by, nltk_data, tmp_path):
    """The accelerator path (one CLIP call for a chunk of images), run on CPU: every image keeps its pairs."""
    alone, chunked = config(coco_cc_by, tmp_path / "alone"), config(coco_cc_by, tmp_path / "chunked")
    mine_with(alone, overlap=True)
    mine_with(chunked, overlap=True, cross_image_clip=True)
    a = pd.read_parquet(tmp_path / "alone" / "parquet").sort_values("key").reset_index(drop=True)
    c = pd.read_parquet(tmp_path / "chunked" / "parquet").sort_values("key").reset_index(drop=True)
    assert len(a) > 0 and list(a["key"]) == list(c["key"])
    assert list(a["proposal_index"]) == list(c["proposal_index"]) and list(a["noun"]) == list(c["noun"])
    assert np.allclose(a["score"], c["score"], atol=1e-5)


class FailingProposals(ProposalGenerator):
    """The real ground-truth generator, raising on its ``fail_at``-th batch (the failure a test needs)."""

    def __init__(self, inner, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def propose(self, images, records):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("proposal model failed (test)")
        return self.inner.generate(images, records)


def test_a_failing_stage_thread_fails_the_shard_and_stops_its_threads(coco_cc_by, tmp_path):
    cfg = config(coco_cc_by, tmp_path / "run", labels="categories", num_shards=1)
    generator = FailingProposals(build_proposal_generator(cfg.proposals), fail_at=3)
    with pytest.raises(RuntimeError, match="proposal model failed"):
        mine_with(cfg, overlap=True, generator=generator)
    out = tmp_path / "run"
    assert not list(out.glob("manifest/*.json"))  # nothing committed
    assert not list(out.glob("pairs-*.tar")) and not list(out.glob("pairs-*.tar.tmp-*"))  # the temporary tar went
    for thread in threading.enumerate():
        if thread.name.startswith("shard-0-"):
            thread.join(timeout=10)
            assert not thread.is_alive(), f"{thread.name} still runs after the shard failed"


def test_ordered_map_keeps_order_with_workers():
    def slow_square(x: int) -> int:
        threading.Event().wait(0.01 * (x % 3))  # later elements may finish first
        return x * x

    assert list(ordered_map(slow_square, range(20), workers=4)) == [x * x for x in range(20)]
    assert list(ordered_map(slow_square, range(5), workers=1)) == [0, 1, 4, 9, 16]


def test_stage_threads_hand_over_in_order_and_raise_where_read():
    stages = StageThreads(name="t")
    doubled = stages.stage(lambda xs: (2 * x for x in xs), range(100), depth=2, name="double")
    assert list(stages.stage(lambda xs: (x + 1 for x in xs), doubled, depth=3, name="inc")) == [2 * x + 1 for x in range(100)]

    def broken(xs):
        for x in xs:
            if x == 5:
                raise ValueError("element 5")
            yield x

    failing = StageThreads(name="f")
    got = []
    with pytest.raises(ValueError, match="element 5"):
        for x in failing.stage(broken, np.arange(10), depth=1, name="broken"):
            got.append(int(x))
    assert got == [0, 1, 2, 3, 4]
    failing.stop(wait=True)
