"""Jobs and the ``maskmine`` command line: wiring, not per-element logic.

- ``cli`` and ``*_cli``: the console script and one module per command
- ``mine``, ``stages``: the mining job (tasks, the Beam graph, the DoFn of a shard)
- ``runners``, ``runner_config``: Beam runner choice and flag checks
- ``verify``: the check of a finished mining run
"""
import logging


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that the optional GCP client is absent; maskmine does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropBeamImportNoise())
