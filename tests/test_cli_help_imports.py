"""``maskmine COMMAND --help`` builds the command's parser without the heavy libraries.

A user or a cluster script asking for --help gets it without torch, open_clip,
transformers, Apache Beam or Arrow being imported (seconds each): the flags'
choices, ranges and defaults live in torch-free modules, and each command's
module imports what runs it inside ``run``. Each command is asked in a fresh
interpreter, since this test process has imported them all already.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maskmine.pipelines.cli import SUBCOMMANDS

HEAVY = ("torch", "open_clip", "transformers", "apache_beam", "pyarrow")

PROBE = """
import contextlib, io, json, sys
from maskmine.pipelines.cli import main
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        main([sys.argv[1], "--help"])
    except SystemExit as exc:
        status = exc.code
print(json.dumps({"status": status, "help": help_text.getvalue(),
                  "heavy": sorted(m for m in sys.argv[2:] if m in sys.modules)}))
"""


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_help_imports_no_heavy_library(command: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, command, *HEAVY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["status"] == 0
    assert result["help"].startswith(f"usage: maskmine {command}")
    assert result["heavy"] == [], f"maskmine {command} --help imported {', '.join(result['heavy'])}"
