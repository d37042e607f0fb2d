"""How many torch threads one mining worker process uses: ``--torch-threads``, else its share of the cores.

Oversubscribed OpenMP pools made CPU CLIP many times slower (README, *Scaling
out*), so each worker process takes cores ÷ worker processes on its machine.
"""
from __future__ import annotations

import os


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


def set_torch_threads(requested: int | None, local_workers: int | None) -> int:
    """Size this process's torch thread pool (:func:`resolve_torch_threads`); returns the size."""
    import torch

    threads = resolve_torch_threads(requested, local_workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
