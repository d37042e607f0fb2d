"""ProposalSpec: the one description of a proposal backend, what run folders record of it,
and build_proposal_generator, the one way to make a generator from it."""
from __future__ import annotations

import json
import pickle

import pytest

from maskmine.transforms.errors import UserError
from maskmine.transforms.proposals.factory import (
    BACKENDS,
    ProposalSpec,
    SamOptions,
    build_proposal_generator,
)

# The "proposals" entry of a mining run.json as runs before SamOptions recorded it.
RECORDED = {
    "backend": "sam",
    "checkpoint": "sam_vit_b.pth",
    "device": "cuda",
    "precision": "auto",
    "top_k": 50,
    "min_area_fraction": 0.001,
    "dedup_iou": 0.8,
    "sam_model_type": "vit_b",
}


def test_backends_are_the_literal_kinds() -> None:
    assert BACKENDS == ("coco-gt", "maskformer", "sam", "coco-gt+distractors")
    with pytest.raises(UserError, match="unknown proposal backend 'mask-rcnn'"):
        build_proposal_generator(ProposalSpec(backend="mask-rcnn"))  # type: ignore[arg-type]


def test_identity_keeps_the_keys_run_folders_recorded_before_sam_options() -> None:
    spec = ProposalSpec.from_identity(RECORDED)
    assert spec.sam == SamOptions()
    assert spec.identity() == RECORDED
    for backend in BACKENDS:  # SAM's defaults, or another backend: no "sam" key
        assert "sam" not in ProposalSpec(backend=backend).identity()
    assert "sam" not in ProposalSpec(backend="maskformer", sam=SamOptions(points_per_side=8)).identity()


def test_identity_records_sam_options_that_are_not_the_defaults() -> None:
    options = SamOptions(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6, box_nms_thresh=0.3)
    spec = ProposalSpec(backend="sam", checkpoint="x.pth", sam=options)
    recorded = json.loads(json.dumps(spec.identity()))
    assert recorded["sam"] == {
        "points_per_side": 8, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.6, "box_nms_thresh": 0.3,
    }
    assert ProposalSpec.from_identity(recorded) == spec
    assert ProposalSpec.from_identity(recorded, device="cpu") == ProposalSpec(
        backend="sam", checkpoint="x.pth", device="cpu", sam=options
    )
    assert pickle.loads(pickle.dumps(spec)) == spec  # Beam workers get their own copy


def test_sam_generator_gets_the_spec_options_and_filters() -> None:
    pytest.importorskip("segment_anything", reason="segment-anything (maskmine[sam]) not installed")
    options = SamOptions(points_per_side=3, pred_iou_thresh=0.25, stability_score_thresh=0.5, box_nms_thresh=0.4)
    spec = ProposalSpec(backend="sam", sam_model_type="maskmine-tiny", device="cpu", top_k=7,
                        min_area_fraction=0.01, dedup_iou=0.6, sam=options)
    generator = build_proposal_generator(spec)
    amg = generator.mask_generator
    assert amg.point_grids[0].shape == (3 * 3, 2)
    assert (amg.pred_iou_thresh, amg.stability_score_thresh, amg.box_nms_thresh) == (0.25, 0.5, 0.4)
    assert (generator.filter.top_k, generator.filter.min_area_fraction, generator.filter.dedup_iou) == (7, 0.01, 0.6)
    assert generator.checkpoint == "maskmine-tiny"
    default = build_proposal_generator(ProposalSpec(backend="sam", sam_model_type="maskmine-tiny", device="cpu"))
    assert default.mask_generator.point_grids[0].shape == (32 * 32, 2)
    assert (default.mask_generator.pred_iou_thresh, default.mask_generator.stability_score_thresh,
            default.mask_generator.box_nms_thresh) == (0.88, 0.95, 0.7)
    with pytest.raises(UserError, match="proposal checkpoint must name a SAM .pth file") as refused:
        build_proposal_generator(ProposalSpec(backend="sam", device="cpu"))
    assert refused.value.setting == "proposal_checkpoint"  # maskmine words it as --proposal-checkpoint


def test_maskformer_generator_gets_the_spec_filters() -> None:
    spec = ProposalSpec(backend="maskformer", checkpoint="maskmine-tiny", device="cpu", top_k=3,
                        min_area_fraction=0.02, dedup_iou=0.7)
    generator = build_proposal_generator(spec)
    assert generator.checkpoint == "maskmine-tiny"
    assert (generator.filter.top_k, generator.filter.min_area_fraction, generator.filter.dedup_iou) == (3, 0.02, 0.7)


@pytest.mark.parametrize("field, value, message", [
    ("top_k", 0, "top k must be >= 1, got 0"),
    ("top_k", 2.5, "top k must be an integer, got 2.5"),
    ("min_area_fraction", 1.0, "min area fraction must be >= 0 and < 1, got 1.0"),
    ("min_area_fraction", -0.1, "min area fraction must be >= 0 and < 1, got -0.1"),
])
def test_a_spec_refuses_filters_out_of_the_command_lines_range_however_it_is_made(field, value, message) -> None:
    from maskmine.transforms.errors import SettingError

    with pytest.raises(SettingError) as refused:
        ProposalSpec(backend="maskformer", **{field: value})
    assert (refused.value.setting, str(refused.value)) == (field, message)
    with pytest.raises(SettingError, match=f"^{message}$"):  # a run.json's record too
        ProposalSpec.from_identity({**RECORDED, field: value})


def test_every_spec_a_command_or_run_folder_makes_passes() -> None:
    from maskmine.eval.proposal_classes import NO_FILTERS

    assert ProposalSpec.from_identity(RECORDED).top_k == 50
    off = ProposalSpec(backend="maskformer", **NO_FILTERS)  # eval without filters: dedup_iou 1.01 turns it off
    assert (off.top_k, off.min_area_fraction, off.dedup_iou) == (10**9, 0.0, 1.01)


@pytest.mark.parametrize("field, value, setting, flag", [
    ("points_per_side", 0, "sam_points_per_side", "--sam-points-per-side"),
    ("pred_iou_thresh", 1.5, "sam_pred_iou_thresh", "--sam-pred-iou-thresh"),
    ("stability_score_thresh", -0.1, "sam_stability_thresh", "--sam-stability-thresh"),
    ("box_nms_thresh", float("nan"), "sam_box_nms", "--sam-box-nms"),
])
def test_sam_options_refuse_what_their_flags_refuse(field, value, setting, flag, capsys) -> None:
    """One range each: SamOptions made in code or from a run.json refuses a value with the words
    eval's parser uses for the same value of the flag, and names the setting by the flag's dest."""
    from maskmine.pipelines.cli import main
    from maskmine.transforms.errors import SettingError

    with pytest.raises(SettingError) as refused:
        SamOptions(**{field: value})
    assert refused.value.setting == setting and "--" not in str(refused.value)
    with pytest.raises(SettingError):
        ProposalSpec.from_identity({**RECORDED, "sam": {field: value}})
    capsys.readouterr()
    assert main(["eval", "--dataset", "sample", "--root", ".", "--out", "o", "--proposals", "sam", flag, str(value)]) == 2
    assert f"argument {flag}: {refused.value.problem}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "demo"])
def test_the_sam_flags_defaults_are_sam_options_defaults(command) -> None:
    import argparse

    from maskmine.pipelines.cli import build_parser
    from maskmine.pipelines.cli_options import sam_options

    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    args = sub.parse_args(["--dataset", "sample", "--root", ".", "--out", "o", "--proposals", "sam"] if command == "eval" else [])
    assert sam_options(args) == SamOptions()
    changed = sub.parse_args((["--dataset", "sample", "--root", ".", "--out", "o", "--proposals", "sam"] if command == "eval" else [])
                             + ["--sam-points-per-side", "8", "--sam-box-nms", "0.5"])
    assert sam_options(changed) == SamOptions(points_per_side=8, box_nms_thresh=0.5)
