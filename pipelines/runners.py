"""Choosing the Beam runner without surprises.

Beam's ``DirectRunner`` first tries to download and start the Prism binary,
which fails offline after a network attempt. maskmine therefore runs
``--runner DirectRunner`` (and no ``--runner`` at all) on Beam's in-process
FnApiRunner, which honours ``--direct_running_mode`` (in_memory,
multi_threading, multi_processing) and ``--direct_num_workers``. Any other
runner name is handed to Beam as given.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

LOCAL_RUNNER_NAMES = (None, "", "DirectRunner", "direct", "FnApiRunner")


def make_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The runner object to pass to ``beam.Pipeline``; None lets Beam resolve ``--runner``."""
    name = options.view_as(StandardOptions).runner
    if name in LOCAL_RUNNER_NAMES:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return None
