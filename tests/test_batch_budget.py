"""--max-batch-bytes: BatchElements batches stay under both the image count and the byte budget."""
from __future__ import annotations

import argparse

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that

from maskmine.pipelines import mine_cli
from maskmine.pipelines.runners import make_runner
from maskmine.transforms.batching import BatchWeight, item_nbytes
from maskmine.transforms.records import ImageRecord, MiningItem, ProposalSet

MB = 2**10  # "megabytes" scaled down to KiB: same arithmetic, small arrays


def item(i: int, megabytes: int) -> MiningItem:
    record = ImageRecord(image_id=i, file_name=f"{i}.jpg", width=32, height=megabytes * MB // (32 * 3), captions=[])
    return MiningItem(record=record, shard=0, image=np.zeros((record.height, 32, 3), np.uint8))


def test_weight_counts_image_and_masks():
    it = item(1, 4)
    assert item_nbytes(it) == it.image.nbytes
    it.proposals = ProposalSet(masks=np.zeros((10, 64, 64), bool), scores=np.zeros(10, np.float32), backend="x")
    assert item_nbytes(it) == it.image.nbytes + 10 * 64 * 64 + 40
    assert BatchWeight(8, None)(it) == 1
    assert BatchWeight(8, 64 * MB)(item(2, 4)) == 1  # 4 MB of 64: one slot of 8
    assert BatchWeight(8, 64 * MB)(item(3, 20)) == 3  # ceil(20 * 8 / 64)
    assert BatchWeight(8, 16 * MB)(item(4, 40)) == 20  # over the budget: travels alone


def test_batches_respect_count_and_bytes():
    sizes = [4, 4, 20, 4, 30, 4, 4, 4, 4, 4, 4, 4, 50, 4]
    items = [item(i, mb) for i, mb in enumerate(sizes)]
    budget = 32 * MB

    def check(batches):
        batches = list(batches)
        assert sorted(i.record.image_id for b in batches for i in b) == list(range(len(sizes)))
        for b in batches:
            assert len(b) <= 4
            assert len(b) == 1 or sum(item_nbytes(i) for i in b) <= budget
        assert any(len(b) == 1 and item_nbytes(b[0]) > budget for b in batches)

    weight = BatchWeight(4, budget)
    with beam.Pipeline(runner=make_runner(beam.options.pipeline_options.PipelineOptions([]))) as p:
        batches = (
            p
            | beam.Create(items)
            | beam.BatchElements(min_batch_size=4, max_batch_size=4, element_size_fn=weight)
        )
        assert_that(batches | beam.combiners.ToList(), lambda lists: check(lists[0]))


def test_cli_flag_reaches_the_config():
    parser = argparse.ArgumentParser()
    mine_cli.add_arguments(parser)
    args = parser.parse_args(["--captions", "c.json", "--images", "i", "--out", "o", "--max-batch-bytes", "262144"])
    assert mine_cli.config_from_args(args).max_batch_bytes == 256 * MB
    args = parser.parse_args(["--captions", "c.json", "--images", "i", "--out", "o"])
    assert mine_cli.config_from_args(args).max_batch_bytes is None
