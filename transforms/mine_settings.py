"""Defaults of the mining settings that the command line and the library share, Beam- and torch-free.

``MineConfig`` (``pipelines/mine.py``), ``ShardJob`` (``transforms/shard_mining.py``),
the COCO reader and ``maskmine mine``'s flags take them from here, so each is declared
once and ``mine --help`` shows them without importing Beam or torch.
"""
from __future__ import annotations

CAPTIONS_PER_IMAGE = 5  # the first N captions of each image are read (COCO has 5 an image)
IMAGES_PER_SHARD = 600  # target images per shard where the shard count is not given
BATCH_SIZE = 8  # images per proposal-model batch
# A run without a shard count gets at least this many shards (fewer only with fewer images), so that
# loaders that split shards over workers (open_clip's trainer asserts shards >= workers x GPUs;
# its default is 4 workers) and maskmine train's own workers all get some.
MIN_SHARDS = 8
