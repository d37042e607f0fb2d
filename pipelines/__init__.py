"""Jobs and the ``maskmine`` command line: wiring, not logic."""
import logging


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that the optional GCP client is absent; maskmine does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropBeamImportNoise())
