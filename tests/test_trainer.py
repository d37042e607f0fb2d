"""The pieces of ``maskmine.finetune.train.Trainer``: step, save/resume, validate (tiny random CLIP, CPU)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from maskmine.finetune.data import make_loader
from maskmine.finetune.optim import lr_factor
from maskmine.finetune.train import RunState, TrainConfig, Trainer, check_config
from maskmine.pipelines.mine import run_mining
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import CropConfig
from mining_helpers import coco_mini_config


@pytest.fixture(scope="module")
def run(coco_cc_by, tmp_path_factory) -> Path:
    """Ground-truth category pairs of the 12 committed COCO images in one shard (training and validation data)."""
    out = tmp_path_factory.mktemp("trainer") / "cats"
    run_mining(coco_mini_config(coco_cc_by, out, num_shards=1, labels="categories", limit=12), progress=False)
    return out


def _trainer(run: Path, out: Path, **kw) -> Trainer:
    settings = dict(
        shards=str(run / "pairs-000000.tar"), out=str(out),
        clip=ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu"),
        mode="prompt", batch_size=8, lr=1e-2, warmup_steps=2, steps=6, workers=0, shuffle_buffer=20,
        progress=False,
    )
    settings.update(kw)
    config = TrainConfig(**settings)
    check_config(config)
    return Trainer(config)


def _feed(trainer: Trainer, data, n: int) -> list[float | None]:
    """What ``train`` does with each batch: record where the data stands, then ``step``."""
    out = []
    for _ in range(n):
        epoch, position, batch = next(data)
        trainer.state.epoch, trainer.state.position = epoch, position
        out.append(trainer.step(batch))
    return out


def test_a_step_changes_the_weights_and_advances_the_schedule(run: Path, tmp_path: Path) -> None:
    trainer = _trainer(run, tmp_path / "out", accum_steps=2)
    assert trainer.state == RunState(stream_seed=0) and trainer.total_steps == 6
    before = trainer.model.mask_prompts.detach().clone()
    frozen = trainer.model.clip.visual.proj.detach().clone()
    # two groups: logit_scale (no decay) and the prompts, both at the prompt mode's --lr (OVSeg's stage 2)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["no_decay", "prompts"]
    assert trainer.scheduler.get_last_lr() == [1e-2 * lr_factor(0, 2, 6)] * 2
    scale_before = float(trainer.model.clip.logit_scale.detach())
    data = trainer.batches()
    try:
        first, second = _feed(trainer, data, 2)
    finally:
        data.close()
    # the first micro-batch only adds gradients; the second completes the optimizer step
    assert first is None and isinstance(second, float) and second > 0
    assert trainer.state.step == 1 and trainer.state.samples == 16 and trainer.state.position == 2
    assert not torch.equal(trainer.model.mask_prompts, before)
    assert torch.equal(trainer.model.clip.visual.proj, frozen)  # prompt mode: CLIP stays frozen
    assert trainer.scheduler.last_epoch == 1 and trainer.scheduler.get_last_lr() == [1e-2 * lr_factor(1, 2, 6)] * 2
    assert float(trainer.model.clip.logit_scale.detach()) != scale_before  # the temperature trains
    assert trainer.losses == [second]
    (line,) = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["step"] == 1 and record["loss"] == second and record["lr"] == 1e-2 * lr_factor(0, 2, 6)
    assert record["samples"] == 16 and record["skipped"] == {}


@pytest.mark.parametrize("mode", ["prompt", "full"])
def test_save_then_a_fresh_trainer_continues_exactly(run: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    first = _trainer(run, out, mode=mode, lr=1e-3)
    data = first.batches()
    try:
        _feed(first, data, 2)
        saved_state = RunState(**vars(first.state))
        saved_state.skipped = dict(first.state.skipped)
        assert first.save().name == "step-00000002" and first.saved()
        (continued,) = _feed(first, data, 1)
    finally:
        data.close()
    assert not first.saved()  # step 3 has no checkpoint yet

    second = _trainer(run, out, mode=mode, lr=1e-3, resume=True)
    assert second.state == saved_state and second.state.step == 2
    # metrics lines after the checkpoint are dropped (they are run again)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    data = second.batches()
    try:
        (resumed,) = _feed(second, data, 1)
    finally:
        data.close()
    assert resumed == continued  # same weights, optimizer state, schedule and batch: the same loss
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.scheduler.get_last_lr() == first.scheduler.get_last_lr()


def test_validate_returns_the_models_real_accuracy(run: Path, tmp_path: Path) -> None:
    trainer = _trainer(run, tmp_path / "out", val_shards=str(run / "pairs-000000.tar"))
    record = trainer.validate()
    pairs = pd.read_parquet(run / "parquet" / "pairs-000000.parquet")
    assert record["step"] == 0 and record["val_samples"] == len(pairs)
    # recompute the accuracy from the model and the validation texts
    top1 = top5 = 0
    text = trainer.validator.text
    with torch.no_grad():
        for batch in make_loader(trainer.validator.stream, 0):
            if len(batch) == 0:
                continue
            scores = trainer.model.encode_image(batch.pixels, batch.masks).float() @ text.t()
            best = scores.topk(min(5, text.shape[0]), dim=-1).indices
            top1 += int((best[:, 0] == batch.labels).sum())
            top5 += int((best == batch.labels[:, None]).any(dim=1).sum())
    assert record["val_top1"] == top1 / len(pairs) and record["val_top5"] == top5 / len(pairs)
    assert 0 <= record["val_top1"] <= record["val_top5"] <= 1 and record["val_top5"] > 0
    assert trainer.validations == [record]
    assert json.loads((tmp_path / "out" / "metrics.jsonl").read_text()) == record
    assert trainer.model.training  # validation puts the model back in training mode
    assert _trainer(run, tmp_path / "no-val").validate() is None


def test_config_holds_a_clip_spec_and_keeps_the_flat_settings_keys() -> None:
    c = TrainConfig(shards="s", out="o", clip=ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu"))
    assert TrainConfig(shards="s", out="o").clip == ClipSpec()  # ViT-B-16, its default weights, device auto
    settings = c.settings()  # the export's `train` record: the CLI's names, as before the ClipSpec
    assert (settings["clip_model"], settings["clip_pretrained"], settings["device"]) == ("maskmine-tiny", "none", "cpu")
    assert "clip" not in settings and json.loads(json.dumps(settings)) == settings
    with pytest.raises(UserError, match="crop"):  # crops are cut as the shards were mined
        check_config(replace(c, clip=replace(c.clip, crop=CropConfig(resize="pad"))))
    # train.json's identity: what a resume compares, so an existing run folder is still resumed
    assert sorted(c.identity()) == sorted([
        "shards", "clip_model", "clip_pretrained", "mode", "prompt_depth", "init", "batch_size", "accum_steps",
        "lr", "prompt_lr", "weight_decay", "warmup_steps", "steps", "epochs", "loss", "vocabulary", "val_shards",
        "shuffle_buffer", "resample", "seed", "train_logit_scale", "augment_scale", "clip_activation",
    ])
