"""Jobs and the ``maskmine`` command line: wiring, not per-element logic.

- ``cli`` and ``*_cli``: the console script and one module per command
- ``mine``, ``stages``: the mining job (tasks, the Beam graph, the thin DoFn of a shard; the
  mining of a shard itself is ``transforms/shard_mining.py``)
- ``runners``, ``runner_config``, ``dask_bundle_fix``: Beam runner choice, flag checks and fixes
- ``verify``: the check of a finished mining run
- ``benchmarks``: scripts that measure, apart from the tests
"""
import logging


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that the optional GCP client is absent; maskmine does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropBeamImportNoise())
