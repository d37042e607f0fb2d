"""Choosing and preparing the Beam runner without surprises.

Local: Beam's ``DirectRunner`` first tries to download and start the Prism
binary, which fails offline after a network attempt. maskmine therefore runs
``--runner DirectRunner`` (and no ``--runner`` at all) on Beam's in-process
FnApiRunner, which honours ``--direct_running_mode`` (in_memory,
multi_threading, multi_processing) and ``--direct_num_workers``.

Dask: ``--runner DaskRunner --dask_client_address tcp://HOST:8786`` uses
Beam's DaskRunner, after checking that the scheduler and every worker can
import maskmine (the scheduler unpickles the task graph, the workers run it).
Beam 2.77's DaskRunner drops what a DoFn emits from ``finish_bundle`` (its
``apply_dofn_to_bundle`` reads a bundle's outputs before it calls
``finish_bundle``). The mining graph does not depend on it: a shard is mined
and committed inside ``MineShardDoFn.process``, which yields from there only.
So the runner refuses, before anything runs, a pipeline with a DoFn that
overrides ``finish_bundle`` (Beam's ``BatchElements``, file sinks, a buffering
DoFn) instead of losing its last outputs without a word. Unless ``--dask_npartitions`` or
``--dask_partition_size`` is given, every shard id is a partition of its own,
so the shards spread over the workers one task each.

Any other runner name is handed to Beam as given (see
``maskmine.pipelines.runner_config`` for the checks of Dataflow, Flink and Spark
options).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

from maskmine.transforms.errors import UserError

log = logging.getLogger(__name__)

LOCAL_RUNNER_NAMES = (None, "", "DirectRunner", "direct", "FnApiRunner")
DASK_RUNNER_NAMES = ("DaskRunner", "dask")
# What the Dask scheduler and workers must import: the DoFns' module.
DASK_IMPORT_PROBE = "__import__('importlib').import_module('maskmine.pipelines.mine_dofn').__file__"


def runner_name(options: PipelineOptions) -> str | None:
    return options.view_as(StandardOptions).runner


def is_local(options: PipelineOptions) -> bool:
    return runner_name(options) in LOCAL_RUNNER_NAMES


def is_dask(options: PipelineOptions) -> bool:
    return runner_name(options) in DASK_RUNNER_NAMES


def make_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The runner object to pass to ``beam.Pipeline``; None lets Beam resolve ``--runner``."""
    if is_local(options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    if is_dask(options):
        return make_dask_runner(options)
    return None


def make_dask_runner(options: PipelineOptions) -> PipelineRunner:
    """Beam's DaskRunner, after checking the cluster can import maskmine."""
    try:
        from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner
    except ImportError as exc:  # dask or distributed missing
        raise UserError(f"--runner DaskRunner needs dask[distributed]: {exc}") from exc
    dask = options.view_as(DaskOptions)
    if dask.address or dask.scheduler_file:
        check_dask_cluster(dask.address, dask.scheduler_file, dask.timeout)
    return _closing(DaskRunner)()


def finish_bundle_dofns(pipeline: Any) -> list[str]:
    """Labels of the ParDos whose DoFn overrides ``finish_bundle`` (what Beam 2.77's DaskRunner drops)."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor

    found: list[str] = []

    class _Visitor(PipelineVisitor):
        def visit_transform(self, applied) -> None:
            fn = getattr(applied.transform, "fn", None)
            if isinstance(applied.transform, beam.ParDo) and type(fn).finish_bundle is not beam.DoFn.finish_bundle:
                found.append(f"{applied.full_label} ({type(fn).__name__})")

    pipeline.visit(_Visitor())
    return found


def _closing(dask_runner_class: type) -> type:
    """The DaskRunner, closing its Dask client once the job is done.

    Beam's DaskRunner opens a ``distributed.Client`` per run and never closes
    it: the client then outlives the job (and, once the cluster is gone, logs
    reconnection errors for half a minute). It also refuses a pipeline whose
    DoFns emit from ``finish_bundle`` (see the module docstring).
    """
    from apache_beam.runners.dask.dask_runner import DaskRunnerResult

    class ClosingResult(DaskRunnerResult):
        def wait_until_finish(self, duration=None) -> str:
            try:
                return super().wait_until_finish(duration)
            finally:
                self.client.close()

    class ClosingDaskRunner(dask_runner_class):
        def run_pipeline(self, pipeline, options):
            if dropped := finish_bundle_dofns(pipeline):
                raise UserError(
                    "Beam's DaskRunner drops what a DoFn emits from finish_bundle; this pipeline has such "
                    f"DoFns: {', '.join(dropped)}. Run it on another runner, or emit from process()."
                )
            result = super().run_pipeline(pipeline, options)
            return ClosingResult(result.client, result.futures)

    return ClosingDaskRunner


def check_dask_cluster(address: str | None, scheduler_file: str | None = None, timeout: object = None) -> int:
    """Fail early, with a clear message, when the cluster cannot run maskmine; return the worker count."""
    import distributed

    kwargs = {"timeout": timeout} if isinstance(timeout, int) else {"timeout": 30}
    try:
        client = distributed.Client(address=address, scheduler_file=scheduler_file, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address or scheduler_file}: {exc}") from exc
    try:
        workers = client.run(eval, DASK_IMPORT_PROBE, on_error="return")
        if not workers:
            raise UserError(f"the Dask cluster at {client.scheduler.address} has no workers")
        failed = {w: r for w, r in workers.items() if isinstance(r, BaseException)}
        try:
            client.run_on_scheduler(eval, DASK_IMPORT_PROBE)
        except Exception as exc:  # noqa: BLE001 - any failure means the scheduler cannot unpickle our graph
            failed["scheduler"] = exc
        if failed:
            where = "; ".join(f"{w}: {type(e).__name__}: {e}" for w, e in sorted(failed.items()))
            raise UserError(
                "the Dask scheduler and every worker must be able to import maskmine "
                f"(install it there, e.g. `pip install -e .` in the same environment): {where}"
            )
        log.info("Dask cluster %s: %d workers import maskmine", client.scheduler.address, len(workers))
        return len(workers)
    finally:
        client.close()


def with_runner_defaults(beam_args: Sequence[str], batch_size: int | None = None) -> list[str]:
    """Beam arguments with maskmine's defaults added where the user gave none.

    The pipeline's elements are shard ids (a shard is a task), so on Dask each
    one gets a partition of its own. ``batch_size`` is unused (kept for callers).
    """
    args = list(beam_args)
    options = PipelineOptions(args)
    if is_dask(options):
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        if not dask.npartitions and not dask.partition_size:
            args += ["--dask_partition_size", "1"]
    return args
