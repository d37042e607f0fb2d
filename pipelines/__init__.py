"""Jobs and the ``maskmine`` command line: wiring, not per-element logic.

- ``cli`` and ``*_cli``: the console script and one module per command
- ``mine``, ``mine_dofn``: the mining job (tasks, the Beam graph, the thin DoFn of a shard; the
  mining of a shard itself is ``transforms/shard_mining.py``)
- ``runners``, ``runner_config``: Beam runner choice and flag checks
- ``endings``: how a command ends on a signal or a full disk (one line)

The check of a finished mining run is ``transforms/verify_run.py`` (``verify_cli`` runs it).
"""
