"""Importing maskmine changes nothing outside it; the command line is where logging is set up."""
from __future__ import annotations

import subprocess
import sys

PACKAGES = ("maskmine.pipelines", "maskmine.transforms", "maskmine.finetune", "maskmine.eval")

ROOT_LOGGING = "import logging; r = logging.getLogger(); print(len(r.handlers), [type(f).__name__ for f in r.filters], r.level)"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_the_packages_leaves_root_logging_alone():
    before = _python(ROOT_LOGGING)
    after = _python(f"import {', '.join(PACKAGES)}; {ROOT_LOGGING}")
    assert before.returncode == 0 and after.returncode == 0, after.stderr[-2000:]
    assert before.stdout == after.stdout == "0 [] 30\n"


def test_the_command_line_drops_beams_import_warning():
    bare = _python("import apache_beam")
    # `mine` imports Beam to run (not for --help), so its import warning comes there; the run then
    # stops at once on its --out, a path under a file
    cli = _python(
        "import sys\nfrom maskmine.pipelines.cli import main\n"
        "status = main(['mine', '--captions', 'c.json', '--images', '.', '--out', '/dev/null/run'])\n"
        f"print(status, 'apache_beam' in sys.modules); {ROOT_LOGGING}"
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    *_, ran, root = cli.stdout.splitlines()
    assert "--out /dev/null/run" in cli.stderr
    assert ran == "2 True"
    assert "['DropBeamImportNoise']" in root
    assert "apitools not found" in bare.stderr  # this environment has no GCP client: Beam warns at import
    assert "apitools not found" not in cli.stderr


def test_verbose_applies_after_beams_import_warning():
    """Beam's import-time warning makes logging's implicit root handler; -v and maskmine's format still apply."""
    code = (
        "import logging, apache_beam\nfrom maskmine.pipelines.cli import main\n"
        "r = logging.getLogger(); print(len(r.handlers))\n"
        "main(['-v', 'verify', '/nonexistent-run-folder'])\n"
        "print(r.level, len(r.handlers), r.handlers[0].formatter._fmt)"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    *_, before, after = out.stdout.splitlines()
    assert before == "1"  # the implicit handler Beam's logging.warning made
    assert after == "10 1 %(asctime)s %(levelname)s %(name)s: %(message)s"


def test_without_verbose_maskmine_logs_at_info_and_other_libraries_from_warning():
    code = (
        "import logging, apache_beam\nfrom maskmine.pipelines.cli import main\n"
        "main(['verify', '/nonexistent-run-folder'])\n"
        "print(logging.getLogger().level, logging.getLogger('maskmine').level)"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "30 20"  # open_clip's and Beam's INFO lines stay out; maskmine's show
