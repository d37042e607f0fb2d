"""A mining worker's memory stays flat shard after shard: glibc's malloc arenas capped.

glibc gives a thread that finds the other arenas busy an arena of its own (up to 8 per
core) and gives little of an arena's freed memory back to the system. A worker's stage
threads (read, proposals, crops, CLIP, write) allocate and free per-image arrays of every
size, so with glibc's default its resident memory crept up shard after shard. Measured on
2,500 sample images in 10 shards (sample Mask2Former and CLIP, 2 cores, in-process runner):
1.68 GB after the first shard, 1.90 GB after the ninth; with this cap 1.54 and 1.63 GB, the
output byte-identical and the wall time the same (docs/benchmarks.md, "Memory against job size").
"""
from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h
WORKER_ARENAS = 2


def cap_malloc_arenas(arenas: int = WORKER_ARENAS) -> bool:
    """``mallopt(M_ARENA_MAX, arenas)`` in this process, as ``MALLOC_ARENA_MAX`` does at start-up.

    Not applied where the user set ``MALLOC_ARENA_MAX`` (theirs wins) or where the C
    library is not glibc. Arenas made before the call stay; the worker calls it before its
    stage threads start. True when applied.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
