"""A run's context travels with its shards: train over http:// and pipe: as over local files.

The run is served by a real HTTP server on 127.0.0.1 (http.server in a thread)
and read through webdataset's own opener (curl for http, a shell for pipe:).
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from maskmine.finetune.data import expand_shards
from maskmine.finetune.train import train
from maskmine.finetune.train_config import TrainConfig
from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import run_mining
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import CropConfig
from mining_helpers import TINY_CLIP, coco_mini_config

CLIP_FLAGS = ["--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu"]
BRACE = "pairs-{000000..000002}.tar"


@pytest.fixture(scope="module")
def run(coco_cc_by, nltk_data, tmp_path_factory) -> Path:
    """The 12 committed COCO images in 3 shards, mined with non-default crop settings (zero fill, padded)."""
    out = tmp_path_factory.mktemp("ctx") / "run"
    clip = replace(TINY_CLIP, crop=CropConfig(fill="zero", resize="pad"))
    run_mining(coco_mini_config(coco_cc_by, out, num_shards=3, clip=clip), progress=False)
    return out


@pytest.fixture(scope="module")
def server(run: Path):
    """An HTTP server on 127.0.0.1 over the run's parent folder; stops when the module's tests end."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(run.parent)))
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _train_cli(shards: str, out: Path, *extra: str) -> dict:
    assert main(["train", "--shards", shards, "--out", str(out), "--mode", "full", "--epochs", "1",
                 "--batch-size", "8", "--workers", "0", "--warmup-steps", "1", "--no-progress",
                 *CLIP_FLAGS, *extra]) == 0
    return json.loads((out / "config.json").read_text())


def _local_reference(run: Path, tmp_path: Path) -> tuple[dict, list[str], list[dict]]:
    export = _train_cli(str(run / BRACE), tmp_path / "local")
    vocab = json.loads((tmp_path / "local" / "vocabulary.json").read_text())
    metrics = [json.loads(x) for x in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]
    return export, vocab, metrics


def test_train_over_http_takes_epochs_vocabulary_and_crop_from_the_run(run: Path, server: str, tmp_path: Path) -> None:
    export, vocab, metrics = _local_reference(run, tmp_path)
    assert export["crop"]["fill"] == "zero" and export["crop"]["resize"] == "pad"
    remote = _train_cli(f"{server}/{run.name}/{BRACE}", tmp_path / "http")
    assert remote["crop"] == export["crop"]
    assert json.loads((tmp_path / "http" / "vocabulary.json").read_text()) == vocab
    steps = [m["step"] for m in metrics if "loss" in m]
    remote_metrics = [json.loads(x) for x in (tmp_path / "http" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in remote_metrics if "loss" in m] == steps and steps  # --epochs: the same schedule


def test_train_over_pipe_takes_epochs_vocabulary_and_crop_from_the_run(run: Path, tmp_path: Path) -> None:
    export, vocab, _ = _local_reference(run, tmp_path)
    piped = _train_cli(f"pipe:cat {run}/{BRACE}", tmp_path / "pipe")
    assert piped["crop"] == export["crop"]
    assert json.loads((tmp_path / "pipe" / "vocabulary.json").read_text()) == vocab


def test_remote_vocabulary_file_is_read_through_the_same_opener(run: Path, server: str, tmp_path: Path) -> None:
    remote = f"{server}/{run.name}/vocabulary.json"
    _train_cli(str(run / BRACE), tmp_path / "out", "--vocabulary", remote)
    nouns = sorted(v["noun"] for v in json.loads((run / "vocabulary.json").read_text()))
    assert json.loads((tmp_path / "out" / "vocabulary.json").read_text()) == nouns


def test_shards_of_runs_with_other_crop_settings_are_refused_over_http(run: Path, server: str, tmp_path: Path) -> None:
    other = run.parent / "other"
    if not other.exists():
        shutil.copytree(run, other)
        data = json.loads((other / "run.json").read_text())
        data["identity"]["clip"]["crop"]["fill"] = "mean"
        (other / "run.json").write_text(json.dumps(data))
    spec = f"{server}/{run.name}/{BRACE}::{server}/other/{BRACE}"
    with pytest.raises(UserError, match="different crop settings"):
        train(TrainConfig(shards=spec, out=str(tmp_path / "o"), clip=replace(TINY_CLIP, device="cpu"),
                          steps=1, workers=0, progress=False))


def _unfinished_copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / "stats.json").unlink()
    (dest / "manifest" / "pairs-000002.json").unlink()
    (dest / "pairs-000002.tar").unlink()  # as a killed job leaves it: the third shard never committed
    return dest


def test_an_unfinished_run_is_refused_unless_allow_partial(run: Path, tmp_path: Path, capsys, caplog) -> None:
    partial = _unfinished_copy(run, tmp_path / "partial")
    samples = sum(json.loads((partial / "manifest" / f"pairs-00000{i}.json").read_text())["samples"] for i in (0, 1))
    spec = str(partial / "pairs-*.tar")
    with pytest.raises(UserError) as err:
        train(TrainConfig(shards=spec, out=str(tmp_path / "a"), clip=TINY_CLIP, epochs=1, steps=None,
                          workers=0, batch_size=8, progress=False))
    message = str(err.value)
    assert "\n" not in message and "unfinished" in message and "pass `allow_partial`" in message and "--allow" not in message
    assert f"{samples} samples in 2 of 3 shards" in message
    summary = err.value.problem.split(": finish it")[0]
    caplog.clear()
    result = train(TrainConfig(shards=spec, out=str(tmp_path / "b"), clip=TINY_CLIP, epochs=1, steps=None,
                               workers=0, batch_size=8, progress=False, allow_partial=True))
    assert result.finished and result.total_steps == samples // 8
    allowed = ": `allow_partial`, training on the 2 committed shards"  # the warning names the setting
    assert [m for m in caplog.messages if "committed shards" in m] == [summary + allowed]
    argv = ["train", "--shards", spec, "--out", str(tmp_path / "c"), "--steps", "1", "--workers", "0",
            "--batch-size", "8", "--no-progress", *CLIP_FLAGS]
    capsys.readouterr()
    assert main(argv) == 2  # the command line names the flags: the shards' one and the one that allows them
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"maskmine train: error: argument --shards: {partial} is an unfinished mining run")
    assert line.endswith("finish it (rerun the same `maskmine mine` command) or pass --allow-partial "
                         "to train on its committed shards")
    caplog.clear()
    assert main(argv + ["--allow-partial"]) == 0
    assert [m for m in caplog.messages if "committed shards" in m] == [  # the command line's warning, its flag
        f"{summary}: --allow-partial, training on the 2 committed shards"]
    # the same run again: the library names the setting that continues it, the command line its flag
    with pytest.raises(SettingError) as again:
        train(TrainConfig(shards=spec, out=str(tmp_path / "b"), clip=TINY_CLIP, epochs=1, steps=None,
                          workers=0, batch_size=8, progress=False, allow_partial=True))
    assert str(again.value) == (f"out {tmp_path / 'b'} already holds this training run: pass `resume` to continue it, "
                                "or use a new `out`")
    capsys.readouterr()
    assert main(argv + ["--allow-partial"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"maskmine train: error: argument --out: {tmp_path / 'c'} already holds this training run: pass --resume to "
        "continue it, or use a new --out")


def test_shards_without_nouns_or_ground_truth_are_refused_by_their_setting(run: Path, tmp_path: Path, capsys) -> None:
    """A shard outside a run folder needs --vocabulary; validation shards of caption nouns are refused."""
    from maskmine.finetune.validation import check_ground_truth_shards

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "pairs-000000.tar", lone / "pairs-000000.tar")
    spec = str(lone / "pairs-000000.tar")
    problem = (f"must be given: no manifest entry or vocabulary.json beside {spec}: its nouns are unknown "
               "(name a vocabulary.json or Parquet file)")
    with pytest.raises(SettingError) as refused:
        train(TrainConfig(shards=spec, out=str(tmp_path / "a"), clip=TINY_CLIP, steps=1, workers=0, progress=False))
    assert (refused.value.setting, refused.value.problem) == ("vocabulary", problem) and "--" not in str(refused.value)
    capsys.readouterr()
    assert main(["train", "--shards", spec, "--out", str(tmp_path / "b"), "--steps", "1", "--workers", "0",
                 "--no-progress", *CLIP_FLAGS]) == 2
    assert capsys.readouterr().err.strip() == f"maskmine train: error: argument --vocabulary: {problem}"
    val = str(run / "pairs-*.tar")
    with pytest.raises(SettingError) as refused:  # mined from caption nouns: maskmine mine's flags are the advice
        check_ground_truth_shards(expand_shards(val), val)
    assert refused.value.setting == "val_shards"
    assert refused.value.problem == (
        f"{val!r}: {run}/ was mined with `maskmine mine --labels nouns`, so its nouns are caption guesses, not "
        "ground truth; mine validation shards with `maskmine mine --proposals coco-gt --labels categories`")


def test_shard_specs_are_checked_part_by_part(run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="^shards is empty$"):
        expand_shards("")
    with pytest.raises(UserError, match="is a folder"):
        expand_shards(str(run))
    with pytest.raises(UserError, match="nomatch-\\*.tar.*matches no file"):
        expand_shards(f"{run}/pairs-*.tar::{tmp_path}/nomatch-*.tar")
    with pytest.raises(UserError, match="is empty"):
        expand_shards(f"{run}/pairs-*.tar::")
    assert len(expand_shards(f"{run}/pairs-*.tar::{run}/pairs-000000.tar")) == 4
