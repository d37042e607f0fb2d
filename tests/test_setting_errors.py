"""Library errors name settings; ``maskmine`` words them as flags (issue 22).

Each refusal is checked twice: a library call raises it in the settings' own
words (no ``--`` anywhere: a Python caller has no flags), and the command prints
one line, ``maskmine COMMAND: error: argument --flag: ...`` (status 2), every
setting the line names worded as its flag. The cases here need no mined run; those
that do are in test_shard_context.py and test_robustness.py's fuzz cases.
"""
from __future__ import annotations

import argparse

import pytest

from maskmine.finetune.train import train
from maskmine.finetune.train_config import TrainConfig
from maskmine.pipelines.cli import build_parser, main
from maskmine.pipelines.cli_options import flag_error, flag_words
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.errors import SettingError

TINY = ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu")
CLIP_FLAGS = ["--clip-model", "maskmine-tiny", "--clip-pretrained", "none", "--device", "cpu"]


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def refused_line(argv: list[str], capsys) -> str:
    """The one error line of a command that must stop with status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_named_settings_are_worded_as_the_commands_flags():
    parser = command_parser("train")
    assert flag_words(parser, "give `steps` instead of `epochs`") == "give --steps instead of --epochs"
    assert flag_words(parser, "`progress` and `nope` and `a b`") == "--no-progress and `nope` and `a b`"
    error = SettingError("resample", "streams forever: it needs `steps`")
    assert str(error) == "resample streams forever: it needs `steps`"
    assert flag_error(parser, error) == "argument --resample: streams forever: it needs --steps"
    # a setting the command has no flag for keeps its name, the others are still its flags
    assert flag_error(parser, SettingError("jpeg_quality", "needs `steps`")) == "jpeg quality needs --steps"
    mine = command_parser("mine")
    assert flag_words(mine, "`min_area_fraction`") == "--min-mask-area"  # the first of a flag's spellings
    assert flag_error(mine, SettingError("min_area_fraction", "x")) == "argument --min-mask-area/--min-area-fraction: x"


def _train_refusal(tmp_path, **fields) -> SettingError:
    values = dict(shards=str(tmp_path / "pairs-*.tar"), out=str(tmp_path / "out"), clip=TINY, steps=1,
                  workers=0, progress=False)
    with pytest.raises(SettingError) as refused:
        train(TrainConfig(**{**values, **fields}))
    assert "--" not in str(refused.value)
    return refused.value


def test_train_shard_specs_are_refused_as_shards(tmp_path, capsys):
    base = ["train", "--out", str(tmp_path / "out"), "--steps", "1", "--workers", "0", "--no-progress", *CLIP_FLAGS]
    folder = str(tmp_path)
    for spec, problem in (
        ("", "is empty"),
        (folder, f"{folder!r} is a folder: name its shards, e.g. '{folder}/pairs-*.tar'"),
        (f"{folder}/a.tar::", f"{folder + '/a.tar::'!r}: a '::'-joined part is empty"),
    ):
        error = _train_refusal(tmp_path, shards=spec)
        assert (error.setting, error.problem) == ("shards", problem)
        assert refused_line(base + ["--shards", spec], capsys) == f"maskmine train: error: argument --shards: {problem}"
    from maskmine.finetune.data import expand_shards

    with pytest.raises(SettingError, match="^val shards is empty$"):  # the validation shards are their own setting
        expand_shards("", "val_shards")


def test_train_settings_that_do_not_go_together_name_each_other_as_flags(tmp_path, capsys):
    base = ["train", "--shards", "x.tar", "--out", str(tmp_path / "out"), "--workers", "0", *CLIP_FLAGS]
    error = _train_refusal(tmp_path, steps=None, epochs=1, resample=True)
    assert str(error) == "resample streams forever: it needs `steps`"
    assert refused_line(base + ["--epochs", "1", "--resample"], capsys) == (
        "maskmine train: error: argument --resample: streams forever: it needs --steps")
    # (the command line's --steps defaults to 10000 without --epochs: only a library caller meets this one)
    assert str(_train_refusal(tmp_path, steps=None)) == "steps must be given when `epochs` is not"
    error = _train_refusal(tmp_path, mode="full", init="runs/full")
    assert str(error) == "init starts mask prompt tuning from a finetuned CLIP: it needs `mode` prompt"
    assert refused_line(base + ["--steps", "1", "--mode", "full", "--init", "runs/full"], capsys) == (
        "maskmine train: error: argument --init: starts mask prompt tuning from a finetuned CLIP: it needs --mode prompt")
    error = _train_refusal(tmp_path, mode="prompt", prompt_lr=0.1)
    assert str(error) == ("prompt lr is the prompts' rate in `mode` full+prompt only; "
                          "in `mode` prompt the prompts train at the `lr`")
    assert refused_line(base + ["--steps", "1", "--mode", "prompt", "--prompt-lr", "0.1"], capsys) == (
        "maskmine train: error: argument --prompt-lr: is the prompts' rate in --mode full+prompt only; "
        "in --mode prompt the prompts train at the --lr")


def test_train_init_is_refused_as_init(tmp_path, capsys):
    base = ["train", "--shards", "x.tar", "--out", str(tmp_path / "out"), "--steps", "1", "--mode", "prompt",
            "--workers", "0", *CLIP_FLAGS]
    missing = tmp_path / "no-run"
    problem = f"{missing}: {missing} holds no adapted CLIP (config.json or checkpoints/latest)"
    error = _train_refusal(tmp_path, mode="prompt", init=str(missing))
    assert (error.setting, error.problem) == ("init", problem)
    assert refused_line(base + ["--init", str(missing)], capsys) == f"maskmine train: error: argument --init: {problem}"


def test_train_epochs_it_cannot_count_are_refused_as_epochs(tmp_path, capsys):
    (tmp_path / "pairs-000000.tar").write_bytes(b"not a tar file" * 100)
    (tmp_path / "vocabulary.json").write_text('["dog"]')
    spec = str(tmp_path / "pairs-000000.tar")
    error = _train_refusal(tmp_path, shards=spec, steps=None, epochs=1)
    assert error.setting == "epochs" and error.problem.startswith(f"cannot count the samples of {spec} (")
    assert error.problem.endswith("); give `steps` instead")
    line = refused_line(["train", "--shards", spec, "--out", str(tmp_path / "out"), "--epochs", "1", "--workers", "0",
                         "--no-progress", *CLIP_FLAGS], capsys)
    assert line.startswith(f"maskmine train: error: argument --epochs: cannot count the samples of {spec} (")
    assert line.endswith("); give --steps instead")


def test_train_out_folders_are_refused_as_out(tmp_path, capsys):
    """A folder that holds something else, or a damaged or different train.json: ``--out``'s problem."""
    import json

    from maskmine.finetune.train_config import check_config, prepare_out_dir
    from maskmine.transforms.run_folder import TRAIN_FILE

    c = TrainConfig(shards="x.tar", out=str(tmp_path / "busy"), clip=TINY, steps=1)
    check_config(c)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SettingError) as refused:
        prepare_out_dir(c)
    assert str(refused.value) == f"out {tmp_path / 'busy'} is not empty and holds no training run: use a new `out` folder"
    other = dict(c.identity(), lr=1.0)
    c.out = str(tmp_path / "other")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / TRAIN_FILE).write_text(json.dumps({"identity": other}))
    with pytest.raises(SettingError) as refused:
        prepare_out_dir(c)
    assert refused.value.problem == (f"{tmp_path / 'other'} holds a different training run (settings differ: lr): "
                                     "use a new `out` folder")
    assert flag_error(command_parser("train"), refused.value).endswith("use a new --out folder")


def test_audit_of_a_file_as_out_is_refused_as_out(tmp_path):
    from maskmine.transforms.audit.report import ReportOptions, build_report

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SettingError) as refused:
        build_report(None, ReportOptions(out=tmp_path / "a-file"))  # refused before the run is read
    assert (refused.value.setting, str(refused.value)) == ("out", f"out {tmp_path / 'a-file'} exists and is not a folder")



def test_eval_refusals_name_settings_and_the_command_their_flags(tmp_path, capsys):
    from test_eval_run import ADE, write_ade

    from maskmine.eval.run import EvalConfig, run_eval
    from maskmine.transforms.proposals.factory import ProposalSpec

    root = write_ade(tmp_path / "data", count=1)
    config = EvalConfig(dataset="ade20k-150", root=str(root), out=str(tmp_path / "a"), clip=TINY, device="cpu",
                        proposals=ProposalSpec(backend="coco-gt"), ensemble_lambda=0.7, progress=False, visualise=0)
    with pytest.raises(SettingError) as refused:
        run_eval(config)
    assert str(refused.value) == ("ensemble lambda above 0 needs class scores from the proposal model; only "
                                  "`proposals` maskformer has a class head (got coco-gt)")
    argv = ["eval", "--dataset", "ade20k-150", "--root", str(root), "--proposals", "coco-gt", *CLIP_FLAGS,
            "--no-progress", "--visualise", "0", "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    capsys.readouterr()
    with pytest.raises(SettingError) as refused:  # the same folder, other settings
        run_eval(EvalConfig(dataset="ade20k-150", root=str(root), out=str(tmp_path / "b"), clip=TINY, device="cpu",
                            proposals=ProposalSpec(backend="coco-gt"), mask_threshold=0.3, progress=False, visualise=0))
    assert refused.value.setting == "out" and "--" not in str(refused.value)
    assert f"differ); use another `out`, or delete {tmp_path / 'b'}" in str(refused.value)
    line = refused_line(argv + ["--mask-threshold", "0.3"], capsys)
    assert line.startswith(f"maskmine eval: error: argument --out: {tmp_path / 'b'} holds predictions made with "
                           "different settings (")
    assert f"differ); use another --out, or delete {tmp_path / 'b'}" in line


def test_mining_into_a_folder_of_another_run_is_refused_as_out(tmp_path):
    """The library's words; ``maskmine mine`` prints them as --out (test_robustness's fuzz cases)."""
    import json

    from maskmine.pipelines.mine import MineConfig, prepare_run_dir

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"identity": {"labels": "categories"}}))
    (tmp_path / "c.json").write_text(json.dumps({"images": [], "annotations": []}))  # its digest is in the identity
    config = MineConfig(captions=str(tmp_path / "c.json"), images=str(tmp_path), out=str(tmp_path / "run"))
    with pytest.raises(SettingError) as refused:
        prepare_run_dir(config, 1)
    assert refused.value.setting == "out" and "--" not in str(refused.value)
    assert str(refused.value).endswith("): use a new `out` folder to mine with these settings")
    assert flag_error(command_parser("mine"), refused.value).endswith("): use a new --out folder to mine with these settings")


def test_warnings_name_settings_and_the_command_their_flags(tmp_path, caplog, capsys):
    """A library warning names a setting in backquotes; ``maskmine`` logs it as the command's flag."""
    import json
    import logging

    from maskmine.finetune.train_config import prepare_out_dir
    from maskmine.transforms.clip_models import resolve_activation

    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a plain weights file: it records no activation")
    out = tmp_path / "new-run"
    with caplog.at_level(logging.WARNING, logger="maskmine"):
        assert resolve_activation("ViT-B-16", str(weights), "auto") == "gelu"
        assert prepare_out_dir(TrainConfig(shards="x.tar", out=str(out), clip=TINY, steps=1, resume=True)) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{weights} records no activation: building ViT-B-16 with GELU as its config says; give `clip_activation` "
        "quick_gelu for weights trained with QuickGELU (OpenAI's)",
        f"`resume`: {out} holds no run yet, starting from step 0",
    ]
    caplog.clear()
    # the command line: mine works out its run's identity (the CLIP's activation) before it refuses another run's folder
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"identity": {"labels": "categories"}}))
    (tmp_path / "c.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
                                                 "annotations": [{"id": 1, "image_id": 1, "caption": "a dog"}]}))
    line = refused_line(["mine", "--captions", str(tmp_path / "c.json"), "--images", str(tmp_path),
                         "--out", str(tmp_path / "run"), "--clip-model", "ViT-B-16", "--clip-pretrained", str(weights),
                         "--device", "cpu", "--no-progress"], capsys)
    assert line.startswith("maskmine mine: error: argument --out: ")
    warned = [r.getMessage() for r in caplog.records if r.name == "maskmine.transforms.clip_models"]
    assert warned and all(m.endswith("; give --clip-activation quick_gelu for weights trained with QuickGELU (OpenAI's)")
                          for m in warned), warned
    caplog.clear()  # once the command is done, the library's own words again
    with caplog.at_level(logging.WARNING, logger="maskmine"):
        resolve_activation("ViT-B-16", str(weights), "auto")
    assert "give `clip_activation` quick_gelu" in caplog.messages[0] and "--" not in caplog.messages[0]


def test_advice_about_another_command_is_its_command_line_in_backquotes(tmp_path, capsys):
    """An audit of a folder ``maskmine mine`` did not write, or did not finish, says which command to run;
    the command line leaves it as it is (only a lone setting name is a flag)."""
    import json

    from maskmine.transforms.audit.access import open_run
    from maskmine.transforms.errors import UserError

    with pytest.raises(UserError) as refused:
        open_run(tmp_path)
    problem = f"{tmp_path} is not a maskmine run folder (no run.json); give a folder that `maskmine mine` wrote"
    assert str(refused.value) == problem
    assert refused_line(["audit", str(tmp_path), "--no-progress"], capsys) == f"maskmine audit: error: {problem}"
    (tmp_path / "run.json").write_text(json.dumps({"identity": {}}))
    with pytest.raises(UserError) as refused:
        open_run(tmp_path)
    assert str(refused.value) == (f"{tmp_path} holds an unfinished run (no stats.json): "
                                  "rerun the same `maskmine mine` command to complete it")
