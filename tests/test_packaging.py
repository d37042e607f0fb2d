"""What an install of maskmine puts on a machine: one top-level name and every data file the code reads."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_name_and_its_data_files(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("maskmine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"maskmine", wheel.name.split("-py")[0] + ".dist-info"}
    for needed in (
        "maskmine/transforms/data/nltk_data/taggers/averaged_perceptron_tagger_eng.zip",
        "maskmine/transforms/data/nltk_data/corpora/wordnet.zip",
        "maskmine/transforms/data/nltk_data/LICENSE-wordnet.txt",
        "maskmine/transforms/data/nltk_data/LICENSE-nltk_data.txt",
        "maskmine/transforms/data/nonvisual_nouns.txt",
        "maskmine/transforms/checkpoints/maskmine-sample.pt",
        "maskmine/transforms/checkpoints/maskmine-sample-proposals/model.safetensors",
        "maskmine/transforms/checkpoints/maskmine-sample-proposals/config.json",
        "maskmine/transforms/checkpoints/maskmine-sample-proposals/preprocessor_config.json",
        "maskmine/transforms/model_configs/maskmine-tiny.json",
        "maskmine/eval/data/ade150_classes.txt",
        "maskmine/pipelines/cli.py",
        "maskmine/transforms/audit/report.py",
        "maskmine/transforms/audit/templates/page.html",
        "maskmine/transforms/audit/templates/summary.html",
        "maskmine/transforms/audit/templates/gallery.html",
        "maskmine/transforms/audit/templates/macros.html",
        "maskmine/transforms/audit/templates/report.css",
        "maskmine/finetune/train.py",
        "maskmine/finetune/train_config.py",
        "maskmine/eval/demo_page/demo.html",
        "maskmine/eval/demo_page/demo.css",
    ):
        assert needed in names, needed
    assert not any(n.startswith("maskmine/tests/") for n in names)
    # benchmarks are scripts run from a checkout (python -m benchmarks.NAME), not part of the install
    assert not any("benchmarks/" in n for n in names), [n for n in names if "benchmarks/" in n]


def test_installed_names_outside_the_checkout(tmp_path):
    """Away from the repository, only ``maskmine.*`` imports; the generic folder names do not."""
    code = (
        "import importlib.util as u, maskmine.transforms, maskmine.pipelines.cli, maskmine.eval, maskmine.finetune; "
        "print([n for n in ('eval', 'transforms', 'pipelines', 'finetune') "
        f"if (s := u.find_spec(n)) is not None and s.origin and s.origin.startswith({str(REPO)!r})])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_benchmarks_run_from_the_repository_root():
    """``python -m benchmarks.NAME`` from a checkout: each script imports maskmine and parses its flags."""
    names = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")
    assert {"mining", "scale", "stream", "train", "sample", "proposals", "vs_open_clip"} <= set(names)
    code = (
        "import importlib, sys\n"
        "for n in sys.argv[1:]:\n"
        "    m = importlib.import_module('benchmarks.' + n)\n"
        "    try:\n"
        "        m.main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (n, e.code)\n"
        "    print(n, 'ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split()[0] for line in out.stdout.splitlines() if line.endswith(" ok")] == names
