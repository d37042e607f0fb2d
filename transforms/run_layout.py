"""File names of a mining run folder, for readers that must not import the mining job.

``maskmine verify`` and ``maskmine audit`` read a run; importing
``maskmine.pipelines.mine`` for four names would also import Beam, gRPC and
torch (and their native thread pools) into a process that needs none of them.
``tests/test_robustness.py`` checks these equal the mining job's own names.
"""
RUN_FILE = "run.json"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"
VOCABULARY_FILE = "vocabulary.json"
