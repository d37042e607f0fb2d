"""Make Beam's DaskRunner keep what a DoFn emits from ``finish_bundle``.

The bug (measured with apache-beam 2.77.0): the DaskRunner runs each ParDo
on a Dask bag partition through
``apache_beam.runners.dask.transform_evaluator.apply_dofn_to_bundle``, which
snapshots the receivers' outputs *before* it calls ``invoke_finish_bundle()``.
Everything a DoFn emits from ``finish_bundle`` lands in a list nobody reads.
Beam's own batching and file sinks emit from ``finish_bundle``
(``BatchElements`` flushes its last partial batch there, ``WriteToParquet``
its rows), so on Dask a buffering DoFn gave 32 of 40 outputs, RunInference
lost its last partial batch and ``WriteToParquet`` wrote files with 0 rows.
maskmine's mining graph batches inside its shard DoFn's ``process`` and
emits nothing from ``finish_bundle``, so it no longer depends on the fix;
the fix stays for any such transform added to a pipeline run on Dask.

The fix is the same function with the outputs collected *after*
``finish_bundle`` (each Dask task deserialises its own copy of the receivers,
so a bundle's list holds that bundle's outputs only; checked with 8
partitions on one worker, 1 and 4 threads). ``install()`` swaps it into the
transform evaluator's module namespace, where ``ParDo.apply`` looks it up
when it builds the Dask graph. Dask ships the function to the workers by
reference, as ``maskmine.pipelines.dask_bundle_fix.apply_dofn_to_bundle``: the fixed
code is what runs there, provided the workers (and the scheduler, which
unpickles the graph) can import maskmine.

Drop this module once upstream collects outputs after ``finish_bundle``.
Until then ``install()`` guards itself: it leaves Beam alone when Beam's
function changed its signature or when ``upstream_drops_outputs()`` (an
in-process probe) finds the bug gone, and warns when it patches a Beam
version other than the ones listed in ``VERIFIED_BEAM_VERSIONS``.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

log = logging.getLogger(__name__)

# Beam versions on which the loss was measured and this fix tested.
VERIFIED_BEAM_VERSIONS = ("2.77.0",)
_UPSTREAM_PARAMS = ("items", "do_fn_invoker_args", "do_fn_invoker_kwargs", "tagged_receivers")
_original: Any = None


def apply_dofn_to_bundle(
    items: Iterable[Any], do_fn_invoker_args: list, do_fn_invoker_kwargs: dict, tagged_receivers: Any
) -> list:
    """Run a DoFn over one bundle (a Dask partition), outputs of ``finish_bundle`` included.

    Upstream's function line for line, except that the outputs are read after
    ``invoke_finish_bundle()`` instead of before it.
    """
    from apache_beam.runners.common import DoFnInvoker

    do_fn_invoker = DoFnInvoker.create_invoker(*do_fn_invoker_args, **do_fn_invoker_kwargs)
    do_fn_invoker.invoke_setup()
    do_fn_invoker.invoke_start_bundle()
    for it in items:
        do_fn_invoker.invoke_process(it)
    do_fn_invoker.invoke_finish_bundle()
    do_fn_invoker.invoke_teardown()
    return [v.value for v in tagged_receivers.values]


class FinishBundleProbe(beam.DoFn):
    """Emits the sum of every ``group`` elements; the remainder's sum from ``finish_bundle``.

    A bundle of n elements gives ceil(n / group) outputs whose sum is the sum
    of the inputs: the smallest DoFn that shows the loss.
    """

    def __init__(self, group: int = 3) -> None:
        self.group = group
        self._buffer: list[int] = []

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, element: int) -> Iterable[int]:
        self._buffer.append(element)
        if len(self._buffer) == self.group:
            yield sum(self._buffer)
            self._buffer = []

    def finish_bundle(self) -> Iterable[WindowedValue]:
        if self._buffer:
            yield WindowedValue(sum(self._buffer), 0, (GlobalWindow(),))
        self._buffer = []


def _run_probe(bundle_fn: Any, values: list[int]) -> list[int]:
    """Run FinishBundleProbe over one in-process bundle the way the DaskRunner's ParDo does."""
    from apache_beam.runners.common import DoFnContext, DoFnSignature, _OutputHandler
    from apache_beam.runners.dask.transform_evaluator import OneReceiver
    from apache_beam.transforms.window import GlobalWindows

    receivers = OneReceiver()
    handler = _OutputHandler(
        window_fn=GlobalWindows(),
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    kwargs = dict(
        context=DoFnContext("probe", state=None),
        side_inputs=None,
        input_args=[],
        input_kwargs={},
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    items = [WindowedValue(v, 0, (GlobalWindow(),)) for v in values]
    return bundle_fn(items, [DoFnSignature(FinishBundleProbe()), handler], kwargs, receivers)


def upstream_function() -> Any:
    """Beam's own ``apply_dofn_to_bundle``, whether or not the fix is installed."""
    from apache_beam.runners.dask import transform_evaluator

    return _original or transform_evaluator.apply_dofn_to_bundle


def probe(bundle_fn: Any, values: Sequence[int] = (1, 2, 3, 4)) -> list[int]:
    """FinishBundleProbe's outputs for one bundle through ``bundle_fn`` (sorted); lossless: ceil(n/3) sums."""
    return sorted(_run_probe(bundle_fn, list(values)))


def upstream_drops_outputs() -> bool:
    """True when Beam's own bundle function loses ``finish_bundle`` outputs (checked in process)."""
    # one full group of 3, then 4 left for finish_bundle
    return probe(upstream_function(), (1, 2, 3, 4)) != [4, 6]


def _upstream_signature_matches(fn: Any) -> bool:
    return tuple(inspect.signature(fn).parameters) == _UPSTREAM_PARAMS


def installed() -> bool:
    from apache_beam.runners.dask import transform_evaluator

    return transform_evaluator.apply_dofn_to_bundle is apply_dofn_to_bundle


def install() -> bool:
    """Route the DaskRunner's ParDo bundles through ``apply_dofn_to_bundle``; True when active.

    Does nothing (and says so) when Beam's function changed shape or no
    longer loses outputs. Idempotent.
    """
    global _original
    from apache_beam.runners.dask import transform_evaluator

    if installed():
        return True
    upstream = transform_evaluator.apply_dofn_to_bundle
    if not _upstream_signature_matches(upstream):
        log.warning(
            "apache-beam %s changed the DaskRunner's apply_dofn_to_bundle; maskmine's finish_bundle "
            "fix is not applied: check pipelines/dask_bundle_fix.py against this Beam version",
            beam.__version__,
        )
        return False
    _original = upstream
    if not upstream_drops_outputs():
        log.info("apache-beam %s keeps finish_bundle outputs on Dask: no fix needed", beam.__version__)
        return False
    if beam.__version__ not in VERIFIED_BEAM_VERSIONS:
        log.warning(
            "apache-beam %s still drops finish_bundle outputs on Dask; applying the fix verified on %s",
            beam.__version__, ", ".join(VERIFIED_BEAM_VERSIONS),
        )
    transform_evaluator.apply_dofn_to_bundle = apply_dofn_to_bundle
    log.info("DaskRunner: finish_bundle outputs kept (maskmine.pipelines.dask_bundle_fix)")
    return True


def uninstall() -> None:
    """Put Beam's own function back (tests use it to show the loss)."""
    from apache_beam.runners.dask import transform_evaluator

    if _original is not None:
        transform_evaluator.apply_dofn_to_bundle = _original
