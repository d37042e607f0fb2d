"""The shared flags (issue 22): each declared once, one range each, refused in the same words everywhere.

* every command's ``--help`` still lists every flag it had before the shared
  groups (users' scripts keep working), plus the aliases that joined them;
* a flag several commands have is one declaration: the same help, default and
  type in each; ``--mask-threshold 1`` is refused by ``mine`` and ``eval`` with one message;
* the library refuses a value with the setting's name (``mask threshold must be
  ...``), and ``maskmine`` prints it as the flag (``argument --mask-threshold: must
  be ...``), the very words argparse prints for the same value at parse time;
* :func:`settings` builds a settings object from the flags by field name.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import pytest

from maskmine.pipelines.cli import SUBCOMMANDS, build_parser, main
from maskmine.pipelines.cli_options import flag_error, settings
from maskmine.transforms.errors import SettingError, UserError

# Every command's flags before the shared groups (issue 22, taken from main at f12ca77), and the
# aliases the shared groups added: --min-mask-area and --min-area-fraction name one flag in mine
# and eval, eval gained mine's --dedup-iou with its filter group, and demo eval's --mask-threshold.
FLAGS_BEFORE = {
    "audit": "--confidence --image-id --images --json --max-margin --max-pairs --min-score --no-progress --noun --out "
             "--per-noun --query --rare-max-pairs --rare-nouns --sample --score-sheet --seed --suspicious --top-nouns",
    "demo": "--adapted --classes --clip-activation --clip-model --clip-pretrained --device --granularity --host "
            "--max-classes --max-connections --max-megapixels --max-queue --max-upload-mb --port --proposal-checkpoint "
            "--read-timeout --sam-checkpoint --sam-model-type --sam-points-per-side --sam-pred-iou-thresh "
            "--sam-stability-thresh",
    "eval": "--adapted --class-order --clip-activation --clip-model --clip-pretrained --clip-temperature --dataset "
            "--device --ensemble-lambda --fusion-mode --granularity --hard-masks --limit --mask-threshold "
            "--min-area-fraction --no-progress --out --proposal-checkpoint --proposal-filters --proposals --root "
            "--sam-box-nms --sam-model-type --sam-points-per-side --sam-pred-iou-thresh --sam-stability-thresh "
            "--templates --top-k --unknown-labels --visualise",
    "mine": "--batch-size --caption-template --captions --captions-per-image --clip-activation --clip-model "
            "--clip-pretrained --crop-expand --crop-fill --crop-resample --crop-resize --dedup-iou --device --images "
            "--images-per-shard --instances --labels --limit --mask-threshold --max-batch-bytes --max-megapixels "
            "--min-mask-area --min-score --no-progress --num-shards --out --precision --proposal-checkpoint "
            "--proposals --retry-skipped --sam-model-type --top-k --torch-threads",
    "pretrain-sample-clip": "--batch-size --data --eval-images --lr --no-progress --out --seed --steps --threads",
    "pretrain-sample-proposals": "--batch-size --data --eval-images --lr --no-progress --out --queries --seed --steps "
                                 "--threads",
    "sample": "--images --no-progress --out --seed --val-images --val-seed",
    "train": "--accum-steps --allow-partial --augment-scale --batch-size --clip-activation --clip-model "
             "--clip-pretrained --device --epochs --freeze-logit-scale --init --keep-checkpoints --loss --lr --mode "
             "--no-augment --no-progress --out --prompt-depth --prompt-lr --resample --resume --save-every --seed "
             "--shards --shuffle-buffer --steps --stop-after --val-every --val-limit --val-shards --vocabulary "
             "--warmup-steps --weight-decay --workers",
    "verify": "--deep --json",
}
# issue 20 added eval's and demo's --test-size and demo's --inference (OVSeg's test size and demo inference);
# demo gained eval's --sam-box-nms with the SAM filter group.
FLAGS_ADDED = {"eval": "--min-mask-area --dedup-iou --test-size", "mine": "--min-area-fraction",
               "demo": "--mask-threshold --test-size --inference --sam-box-nms"}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def actions_by_flag(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_commands_help_lists_its_flags(command, capsys):
    with pytest.raises(SystemExit) as ended:
        main([command, "--help"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: maskmine {command}")
    assert SUBCOMMANDS[command][1] + "." in shown  # the one-line help of cli.py heads the description
    expected = FLAGS_BEFORE[command].split() + FLAGS_ADDED.get(command, "").split()
    missing = [flag for flag in expected if f"{flag} " not in shown and f"{flag}\n" not in shown
               and f"{flag}," not in shown]
    assert not missing, f"maskmine {command} --help lost {missing}"
    listed = set(actions_by_flag(command_parsers()[command])) - {"-h", "--help"}
    assert listed == set(expected)  # and no flag came or went unnoticed


SHARED = ("--device", "--no-progress", "--precision", "--clip-model", "--clip-pretrained", "--clip-activation",
          "--adapted", "--sam-model-type", "--sam-points-per-side", "--sam-pred-iou-thresh", "--sam-stability-thresh",
          "--sam-box-nms", "--top-k", "--min-mask-area", "--dedup-iou", "--crop-fill", "--crop-expand")


def test_a_shared_flag_is_one_declaration_in_every_command():
    parsers = command_parsers()
    seen = {}
    for flag in SHARED + ("--proposal-checkpoint", "--mask-threshold"):
        found = {name: actions_by_flag(p)[flag] for name, p in parsers.items() if flag in actions_by_flag(p)}
        seen[flag] = sorted(found)
        first = next(iter(found.values()))
        for name, action in found.items():
            assert (action.dest, action.option_strings, action.choices, action.metavar) == (
                first.dest, first.option_strings, first.choices, first.metavar), (flag, name)
            assert type(action) is type(first), (flag, name)
            assert (action.type is None) == (first.type is None), (flag, name)
            if flag in SHARED:  # the same words and default everywhere
                assert (action.help, action.default) == (first.help, first.default), (flag, name)
    assert seen["--device"] == ["demo", "eval", "mine", "train"]
    assert seen["--no-progress"] == ["audit", "eval", "mine", "pretrain-sample-clip", "pretrain-sample-proposals",
                                     "sample", "train"]
    assert seen["--proposal-checkpoint"] == ["demo", "eval", "mine"]
    assert {parsers[c].get_default("proposal_checkpoint") for c in seen["--proposal-checkpoint"]} == {""}
    # the mask threshold's default is each job's own (mining 0.5, OVSeg's MASK_THR 0.4, the demo's that of its
    # --inference: None = 0.4, or 0.35 for OVSeg's demo); its range is one
    assert seen["--mask-threshold"] == ["demo", "eval", "mine"]
    assert [parsers[c].get_default("mask_threshold") for c in ("mine", "eval", "demo")] == [0.5, 0.4, None]
    # (the one range: the refusal test below gives mine, eval and demo the same words)


MINE = ["mine", "--captions", "c.json", "--images", "i", "--out", "o"]
EVAL = ["eval", "--dataset", "sample", "--root", "r", "--proposals", "coco-gt", "--out", "o"]
DEMO = ["demo"]


@pytest.mark.parametrize("value, problem", [
    ("1", "must be >= 0 and < 1, got 1"),
    ("1.0", "must be >= 0 and < 1, got 1.0"),
    ("-0.1", "must be >= 0 and < 1, got -0.1"),
    ("nan", "must be a finite number, got nan"),
])
def test_mask_threshold_is_refused_alike_by_mine_eval_and_demo(value, problem, capsys):
    for argv in (MINE, EVAL, DEMO):
        assert main(argv + ["--mask-threshold", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"maskmine {argv[0]}: error: argument --mask-threshold: {problem} (see maskmine {argv[0]} --help)"


def test_the_library_refuses_values_by_setting_and_the_cli_words_the_flag(tmp_path):
    from maskmine.eval.run import EvalConfig, run_eval

    with pytest.raises(SettingError) as refused:
        run_eval(EvalConfig(dataset="sample", root=str(tmp_path), out=str(tmp_path / "o"), mask_threshold=1.0))
    assert str(refused.value) == "mask threshold must be >= 0 and < 1, got 1.0"  # no flag in library words
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, UserError)
    eval_parser = command_parsers()["eval"]
    assert flag_error(eval_parser, refused.value) == "argument --mask-threshold: must be >= 0 and < 1, got 1.0"
    with pytest.raises(SettingError, match="^ensemble lambda must be >= 0 and <= 1, got 2$"):
        run_eval(EvalConfig(dataset="sample", root=str(tmp_path), out=str(tmp_path / "o"), ensemble_lambda=2))
    # a setting no flag of the command names keeps the library's words
    assert flag_error(eval_parser, SettingError("jpeg_quality", "must be <= 100")) == "jpeg quality must be <= 100"


def test_a_library_refusal_reaches_the_user_as_the_flag(tmp_path, capsys):
    """mine --proposals sam without weights: the ProposalSpec refuses it; the one line names the flag."""
    images = tmp_path / "images"
    images.mkdir()
    argv = ["mine", "--captions", str(tmp_path / "c.json"), "--images", str(images), "--out", str(tmp_path / "run"),
            "--proposals", "sam", "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "maskmine mine: error: argument --proposal-checkpoint: must name a SAM .pth file for the sam backend "
        "(only --sam-model-type maskmine-tiny needs none)")


def test_min_mask_area_and_min_area_fraction_are_one_flag():
    parsers = command_parsers()
    for command in ("mine", "eval"):
        for flag in ("--min-mask-area", "--min-area-fraction"):
            args = parsers[command].parse_args(
                (MINE if command == "mine" else EVAL)[1:] + ["--proposal-filters"] * (command == "eval")
                + [flag, "0.01"])
            assert args.min_area_fraction == 0.01


def test_the_pretrain_batch_range_is_the_trainers(capsys):
    assert main(["pretrain-sample-clip", "--batch-size", "1"]) == 2  # a contrastive batch needs a negative
    assert "argument --batch-size: must be >= 2, got 1" in capsys.readouterr().err


@dataclass
class Example:
    out: str
    limit: int | None = None
    progress: bool = True
    nested: tuple = ()


def test_settings_take_fields_from_flags_of_the_same_name():
    args = argparse.Namespace(out="o", limit=3, progress=False, unrelated="x")
    assert settings(Example, args, nested=(1,)) == Example(out="o", limit=3, progress=False, nested=(1,))
    assert settings(Example, argparse.Namespace(out="p")) == Example(out="p")  # absent flags: the defaults
    with pytest.raises(TypeError, match="no field typo"):
        settings(Example, args, typo=1)


def test_mine_and_eval_settings_come_from_the_shared_groups():
    from maskmine.pipelines import eval_cli, mine_cli

    parsers = command_parsers()
    mine = mine_cli.config_from_args(parsers["mine"].parse_args(
        MINE[1:] + ["--device", "cpu", "--mask-threshold", "0.3", "--crop-expand", "1.5", "--top-k", "7"]))
    assert (mine.clip.device, mine.proposals.device) == ("cpu", "cpu")
    assert (mine.clip.crop.threshold, mine.clip.crop.expand_ratio, mine.proposals.top_k) == (0.3, 1.5, 7)
    assert (mine.proposals.min_area_fraction, mine.proposals.dedup_iou) == (0.0005, 0.9)  # unset: the spec's
    ev = eval_cli.config_from_args(parsers["eval"].parse_args(EVAL[1:] + ["--no-progress", "--device", "cpu"]))
    assert (ev.progress, ev.device, ev.proposals.backend, ev.mask_threshold) == (False, "cpu", "coco-gt", 0.4)
    with pytest.raises(UserError, match="need --proposal-filters"):
        eval_cli.config_from_args(parsers["eval"].parse_args(EVAL[1:] + ["--dedup-iou", "0.5"]))


def test_no_command_module_keeps_its_own_one_line_help():
    """cli.py's SUBCOMMANDS is the one home of each command's one-line help."""
    import importlib

    for module_name, _ in SUBCOMMANDS.values():
        module = importlib.import_module(module_name)
        assert not hasattr(module, "HELP"), module_name
        assert Path(module.__file__).name.endswith("_cli.py")


def test_demo_takes_the_mask_threshold_to_its_segmentation():
    from maskmine.eval.demo import DemoApp, DemoConfig
    from maskmine.pipelines import demo_cli

    parsers = command_parsers()
    config = demo_cli.config_from_args(parsers["demo"].parse_args(["--mask-threshold", "0.25", "--device", "cpu"]))
    assert (config.mask_threshold, config.device, config.maskformer.device, config.sam.device) == (0.25, "cpu", "cpu", "cpu")
    assert config.maskformer.checkpoint == ""  # the maskformer default checkpoint, as mine and eval
    with pytest.raises(SettingError, match="^mask threshold must be >= 0 and < 1, got 1.0$"):
        DemoApp(DemoConfig(mask_threshold=1.0, device="cpu"))  # refused before any model loads


def test_a_range_judges_library_values_as_the_flag_judges_text():
    import pickle

    import numpy as np

    from maskmine.pipelines.cli_options import arg_type
    from maskmine.transforms.masked_crop import MASK_THRESHOLD
    from maskmine.transforms.ranges import POSITIVE_INT

    assert MASK_THRESHOLD.problem(np.float32(0.5)) is None and POSITIVE_INT.problem(np.int64(3)) is None
    assert POSITIVE_INT.problem(True) == "must be an integer, got True"
    assert POSITIVE_INT.problem(2.5) == "must be an integer, got 2.5"
    assert MASK_THRESHOLD.problem(float("nan")) == "must be a finite number, got nan"
    assert MASK_THRESHOLD.problem(1.0) == "must be >= 0 and < 1, got 1.0"
    with pytest.raises(argparse.ArgumentTypeError, match="^must be >= 0 and < 1, got 1.0$"):
        arg_type(MASK_THRESHOLD)("1.0")  # the same words at parse time
    error = pickle.loads(pickle.dumps(SettingError("mask_threshold", "must be >= 0 and < 1, got 1.0")))
    assert (error.setting, error.problem, str(error)) == (
        "mask_threshold", "must be >= 0 and < 1, got 1.0", "mask threshold must be >= 0 and < 1, got 1.0")


def _differences(made: Any, default: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The fields (nested settings objects by their dotted path) where two settings objects differ."""
    out = []
    for f in dataclasses.fields(made):
        got, want = getattr(made, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(got) and dataclasses.is_dataclass(want):
            out += _differences(got, want, f"{prefix}{f.name}.")
        elif got != want:
            out.append((prefix + f.name, got, want))
    return out


def _settings_with_required_flags_only():
    """Each command's settings object from its required flags alone, beside the same object made in code."""
    from maskmine.eval.demo import DemoConfig
    from maskmine.eval.run import EvalConfig
    from maskmine.finetune.pretrain_config import PretrainConfig, ProposalPretrainConfig
    from maskmine.finetune.train_config import TrainConfig
    from maskmine.pipelines import demo_cli, eval_cli, mine_cli, train_cli
    from maskmine.pipelines.cli_options import pretrain_settings
    from maskmine.pipelines.mine import MineConfig
    from maskmine.transforms.audit.report import ReportOptions
    from maskmine.transforms.audit.table import Query
    from maskmine.transforms.sample_world.generate import SampleConfig

    parsers = command_parsers()
    yield ("mine", mine_cli.config_from_args(parsers["mine"].parse_args(["--captions", "c", "--images", "i", "--out", "o"])),
           MineConfig(captions="c", images="i", out="o"))
    yield ("train", train_cli.config_from_args(parsers["train"].parse_args(["--shards", "s", "--out", "o"])),
           TrainConfig(shards="s", out="o"))
    eval_args = ["--dataset", "sample", "--root", "r", "--out", "o", "--proposals", "maskformer"]
    yield ("eval", eval_cli.config_from_args(parsers["eval"].parse_args(eval_args)),
           EvalConfig(dataset="sample", root="r", out="o"))
    yield "demo", demo_cli.config_from_args(parsers["demo"].parse_args([])), DemoConfig()
    yield "sample", settings(SampleConfig, parsers["sample"].parse_args(["--out", "o"])), SampleConfig(out="o")
    audit = parsers["audit"].parse_args(["run"])
    yield "audit query", settings(Query, audit), Query()
    yield ("audit report", settings(ReportOptions, audit, out=Path("o"), images=None, query=Query()),
           ReportOptions(out=Path("o"), images=None, query=Query()))
    for command, cls in (("pretrain-sample-clip", PretrainConfig), ("pretrain-sample-proposals", ProposalPretrainConfig)):
        yield command, pretrain_settings(cls, parsers[command].parse_args(["--data", "d"])), cls(data="d")


def test_every_flag_left_out_gives_its_settings_objects_own_default():
    """A command's own flags write their default beside the settings field's (the settings modules
    import torch, and --help must not); here they must agree, field by field, nested specs included."""
    checked = []
    for command, from_flags, in_code in _settings_with_required_flags_only():
        assert _differences(from_flags, in_code) == [], command
        checked.append(command)
    assert len(checked) == 9
