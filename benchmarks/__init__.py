"""Benchmarks: scripts, not tests; each runs with ``python -m benchmarks.NAME``.

- ``mining``: three ratios of the mining stages (nouns through Beam, batched CLIP, shard writing)
- ``scale``: images/s on 1 vs 2 local workers (DirectRunner, Dask), memory per worker
- ``stream``: throughput and memory against job size, first shard, kill and resume
- ``sample``: does mining + mask adaptation work on the sample world (per seed)?
- ``proposals``: class-agnostic mask recall of the proposal generators; the chain mined and evaluated on model proposals
- ``train``: can the shard loader feed the training step, and what do prompts cost?
"""
