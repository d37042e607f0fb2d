"""maskmine train on shards mined from the committed COCO images (coco_cc_by) with the tiny random CLIP."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch

from maskmine.finetune.adapted import load_adapted
from maskmine.finetune.checkpoint import MODEL_FILE, PROMPTS_FILE
from maskmine.finetune.data import SKIP_MALFORMED, SKIP_UNKNOWN_NOUN, PairStream, add_skips, expand_shards, make_loader
from maskmine.finetune.train import TrainConfig, lr_factor, train
from maskmine.finetune.vocab import resolve_vocabulary, vocabulary_for_shards
from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import run_mining
from maskmine.transforms.clip_models import ClipSpec, load_clip, register_configs
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import CropConfig
from mining_helpers import coco_mini_config

TINY = ClipSpec(model="maskmine-tiny", pretrained="none")  # device auto, as the CLI's default

CROP = CropConfig(input_size=64)


def _mine(coco_cc_by: Path, out: Path, **kw) -> Path:
    run_mining(
        coco_mini_config(coco_cc_by, out, **kw),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def mined(coco_cc_by, nltk_data, tmp_path_factory) -> Path:
    """Caption-noun pairs of the 12 committed COCO images in 3 shards (104 pairs: 45, 35 and 24)."""
    return _mine(coco_cc_by, tmp_path_factory.mktemp("mined") / "nouns", num_shards=3)


@pytest.fixture(scope="module")
def val_run(coco_cc_by, tmp_path_factory) -> Path:
    """Ground-truth category pairs of 12 images: validation shards with true classes."""
    return _mine(coco_cc_by, tmp_path_factory.mktemp("mined") / "cats", num_shards=1, labels="categories", limit=12)


@pytest.fixture(scope="module")
def small_run(mined: Path, tmp_path_factory) -> Path:
    """Two shards of 50 mined pairs each (the run's first 100, in shard order): several epochs fit in a few
    optimizer steps."""
    out = tmp_path_factory.mktemp("small")
    samples: list[list[tuple[str, bytes]]] = []  # each sample's members, as (name, bytes)
    for tar in sorted(mined.glob("pairs-*.tar")):
        with tarfile.open(tar) as tin:
            for member in tin.getmembers():
                if not samples or samples[-1][0][0].split(".", 1)[0] != member.name.split(".", 1)[0]:
                    samples.append([])
                samples[-1].append((member.name, tin.extractfile(member).read()))
    assert len(samples) >= 100
    for shard in (0, 1):
        with tarfile.open(out / f"pairs-{shard:06d}.tar", "w", format=tarfile.GNU_FORMAT) as tout:
            for sample in samples[50 * shard : 50 * (shard + 1)]:
                for name, data in sample:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tout.addfile(info, io.BytesIO(data))
    return out


def shards(run: Path) -> str:
    n = len(list(run.glob("pairs-*.tar")))
    return str(run / f"pairs-{{000000..{n - 1:06d}}}.tar")


def copy_samples(src: Path, dst: Path, limit: int | None = None, corrupt: dict[str, str] | None = None) -> list[str]:
    """Copy the first ``limit`` samples of a shard; ``corrupt`` maps sample index -> 'jpg' (garbage
    bytes) or 'drop-mask' (member left out). Returns the keys written."""
    corrupt = corrupt or {}
    keys: list[str] = []
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for member in tin.getmembers():
            key, ext = member.name.split(".", 1)
            if key not in keys:
                if limit is not None and len(keys) == limit:
                    break
                keys.append(key)
            action = corrupt.get(str(len(keys) - 1))
            data = tin.extractfile(member).read()
            if action == "drop-mask" and ext == "mask.png":
                continue
            if action == "jpg" and ext == "jpg":
                data = b"\xff\xd8 this is not a jpeg" + data[:40]
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return keys


def config(out: Path, shard_spec: str, **kw) -> TrainConfig:
    base = dict(
        shards=shard_spec, out=str(out), clip=TINY, mode="prompt",
        batch_size=32, lr=1e-3, warmup_steps=2, steps=10, workers=0, shuffle_buffer=50, save_every=5,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


# ---- data -------------------------------------------------------------------------------

def test_vocabulary_is_the_sorted_nouns_of_the_chosen_shards(mined: Path) -> None:
    urls = expand_shards(shards(mined))
    assert len(urls) == 3
    table = pd.concat(pd.read_parquet(p) for p in sorted((mined / "parquet").glob("*.parquet")))
    assert vocabulary_for_shards(urls) == sorted(set(table["noun"]))
    first = vocabulary_for_shards(urls[:1])
    assert first == sorted(set(table[table["shard"] == 0]["noun"])) and len(first) < len(set(table["noun"]))
    # the run folder and the mining job's vocabulary.json give the same list
    assert resolve_vocabulary(str(mined), urls) == resolve_vocabulary(str(mined / "vocabulary.json"), urls)
    assert resolve_vocabulary(str(mined), urls) == vocabulary_for_shards(urls)


def test_stream_yields_every_pair_once_per_epoch_with_workers(mined: Path) -> None:
    urls = expand_shards(shards(mined))
    vocab = vocabulary_for_shards(urls)
    table = pd.concat(pd.read_parquet(p) for p in sorted((mined / "parquet").glob("*.parquet")))
    stream = PairStream(urls, vocab, CROP, batch_size=50, shuffle_buffer=64, seed=3)
    batches = list(make_loader(stream, workers=2))
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(table["key"]) and len(set(keys)) == len(keys)
    assert {b.worker for b in batches} == {0, 1}
    b = batches[0]
    assert b.pixels.shape == (50, 3, 64, 64) and b.pixels.dtype == torch.float32
    assert b.masks.shape == (50, 64, 64) and b.masks.dtype == torch.bool
    assert [vocab[i] for i in b.labels.tolist()] == b.nouns
    # background pixels hold CLIP's mean colour, i.e. ~0 after the shared normalisation (the median: the
    # unantialiased bicubic resize of OVSeg's crop rings next to the mask edge, and the shards hold JPEG)
    assert b.pixels.permute(0, 2, 3, 1)[~b.masks].abs().median() < 0.05
    # the order is a function of (seed, epoch): same again, different next epoch
    again = [k for b in make_loader(stream, workers=2) for k in b.keys]
    assert again == keys
    stream.set_epoch(1)
    assert [k for b in make_loader(stream, workers=2) for k in b.keys] != keys


def test_corrupt_samples_are_skipped_and_counted_across_workers(mined: Path, tmp_path: Path) -> None:
    src = mined / "pairs-000000.tar"
    good = copy_samples(src, tmp_path / "pairs-000000.tar", limit=40, corrupt={"3": "jpg", "17": "drop-mask"})
    copy_samples(mined / "pairs-000001.tar", tmp_path / "pairs-000001.tar", limit=20, corrupt={"0": "jpg"})
    vocab = vocabulary_for_shards([str(src), str(mined / "pairs-000001.tar")])
    vocab.remove(vocab[0])  # nouns outside the vocabulary are skipped and counted too
    urls = expand_shards(str(tmp_path / "pairs-{000000..000001}.tar"))
    for workers in (0, 2):
        stream = PairStream(urls, vocab, CROP, batch_size=8, shuffle_buffer=0)
        skipped: dict[str, int] = {}
        seen: list[str] = []
        for batch in make_loader(stream, workers):
            add_skips(skipped, batch.skipped)
            seen.extend(batch.keys)
        assert skipped[SKIP_MALFORMED] == 3, workers
        assert good[3] not in seen and good[17] not in seen and good[0] in seen
        assert len(seen) + sum(skipped.values()) == 60
        assert set(skipped) <= {SKIP_MALFORMED, SKIP_UNKNOWN_NOUN}


def test_training_counts_skips_in_result_and_metrics(mined: Path, tmp_path: Path) -> None:
    copy_samples(mined / "pairs-000000.tar", tmp_path / "pairs-000000.tar", limit=30, corrupt={"5": "jpg"})
    result = train(config(tmp_path / "out", str(tmp_path / "pairs-000000.tar"), vocabulary=str(mined),
                          batch_size=29, steps=1, workers=2))
    assert result.skipped == {SKIP_MALFORMED: 1}
    last = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == {SKIP_MALFORMED: 1} and last["samples"] == 29


# ---- training ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode,lr,drop,loss", [("prompt", 1e-2, 0.15, "clip"), ("full", 1e-3, 0.4, "clip"),
                                              ("full", 1e-3, 0.4, "vocab")])
def test_loss_decreases_on_a_fixed_small_set(mined: Path, tmp_path: Path, mode: str, lr: float, drop: float,
                                             loss: str) -> None:
    copy_samples(mined / "pairs-000000.tar", tmp_path / "pairs-000000.tar", limit=24)
    result = train(config(tmp_path / "out", str(tmp_path / "pairs-000000.tar"), vocabulary=str(mined), loss=loss,
                          mode=mode, lr=lr, batch_size=24, steps=30, warmup_steps=3, save_every=100))
    losses = result.losses
    assert len(losses) == 30 and result.samples == 30 * 24
    assert losses[-1] < losses[0] - drop
    assert sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.parametrize("mode,workers", [("prompt", 0), ("full+prompt", 2)])
def test_resume_after_a_stop_repeats_the_uninterrupted_trajectory(mined: Path, small_run: Path, tmp_path: Path, mode: str, workers: int) -> None:
    # 100 pairs in batches of 16 (6 full batches per epoch, the partial one dropped), 2 micro-batches
    # per step: 10 steps run through about 3 epochs; the stop at step 5 falls inside the second.
    kw = dict(mode=mode, workers=workers, accum_steps=2, batch_size=16, steps=10, save_every=3,
              vocabulary=str(mined))
    whole = train(config(tmp_path / "whole", shards(small_run), **kw))
    first = train(config(tmp_path / "split", shards(small_run), stop_after=5, **kw))
    assert not first.finished and first.step == 5 and not (tmp_path / "split" / "config.json").exists()
    second = train(config(tmp_path / "split", shards(small_run), resume=True, **kw))
    assert second.finished and second.step == 10 and len(second.losses) == 5
    # exact equality on CPU: same weights, optimizer state, schedule and batches
    assert first.losses + second.losses == whole.losses
    assert whole.samples == second.samples
    metrics = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 11))
    assert metrics[4]["epoch"] == 1 and metrics[-1]["epoch"] >= 2
    assert [m["loss"] for m in metrics] == whole.losses
    a, b = whole.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_mode_runs_whole_passes_over_the_shards(mined: Path, small_run: Path, tmp_path: Path) -> None:
    result = train(config(tmp_path / "out", shards(small_run), vocabulary=str(mined), steps=None, epochs=2,
                          batch_size=16, workers=0, save_every=100))
    # every full batch of both shards, twice: 100 pairs give 6 batches of 16, the last 4 are dropped
    assert result.finished and result.samples == 2 * 96
    metrics = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert {m["epoch"] for m in metrics} == {0, 1} and len(metrics) == result.step
    assert (tmp_path / "out" / "prompts.pt").is_file()


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine() -> None:
    assert [lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(8, 4, 12) == pytest.approx(0.5)
    assert lr_factor(12, 4, 12) == pytest.approx(0.0)
    assert lr_factor(0, 0, 10) == 1.0


# ---- CLI and outputs -----------------------------------------------------------------------

def test_cli_trains_validates_and_writes_loadable_outputs(mined: Path, val_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip-mpt"
    argv = ["train", "--shards", shards(mined), "--out", str(out), "--clip-model", "maskmine-tiny",
            "--clip-pretrained", "none", "--mode", "full+prompt", "--batch-size", "32", "--steps", "4",
            "--lr", "1e-3", "--warmup-steps", "1", "--val-shards", shards(val_run), "--val-every", "2",
            "--save-every", "2", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 4 and summary["finished"] and summary["skipped"] == {}
    assert {p.name for p in out.iterdir()} >= {"train.json", "metrics.jsonl", "config.json", "vocabulary.json",
                                               MODEL_FILE, PROMPTS_FILE, "checkpoints"}
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if "val_top1" in r]
    assert [v["step"] for v in vals] == [0, 2, 4]
    val_pairs = len(pd.read_parquet(val_run / "parquet" / "pairs-000000.parquet"))
    assert all(v["val_samples"] == val_pairs and 0 <= v["val_top1"] <= v["val_top5"] <= 1 for v in vals)
    assert json.loads((out / "vocabulary.json").read_text()) == vocabulary_for_shards(expand_shards(shards(mined)))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]
    # the full-mode weights are a plain open_clip checkpoint
    register_configs()
    clip, _, _ = open_clip.create_model_and_transforms("maskmine-tiny", pretrained=str(out / MODEL_FILE))
    base = load_clip("maskmine-tiny", "none").model
    assert not torch.equal(clip.visual.proj, base.visual.proj)  # it trained
    assert torch.equal(clip.token_embedding.weight, base.token_embedding.weight)  # text tower locked
    # a second run into the same folder needs --resume; a resume of a finished run is a no-op
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert main(argv[:-1] + ["--lr", "5e-3", "--no-progress", "--resume"]) == 2
    assert "settings differ: lr" in capsys.readouterr().err


def test_load_adapted_after_training_matches_the_in_memory_model(mined: Path, tmp_path: Path) -> None:
    result = train(config(tmp_path / "out", shards(mined), mode="prompt", steps=3, lr=1e-2))
    adapted = load_adapted(tmp_path / "out")
    assert adapted.mode == "prompt" and adapted.config.step == 3
    assert adapted.vocabulary == vocabulary_for_shards(expand_shards(shards(mined)))
    batch = next(iter(make_loader(PairStream(expand_shards(shards(mined)), adapted.vocabulary, CROP, 16, 0))))
    with torch.no_grad():
        expected = result.model.encode_image(batch.pixels, batch.masks)
    got = adapted.encode_crops(batch.pixels, batch.masks)
    assert torch.equal(got, expected)
    base = load_clip("maskmine-tiny", "none").model
    with torch.no_grad():
        plain = torch.nn.functional.normalize(base.encode_image(batch.pixels), dim=-1)
    assert not torch.allclose(got, plain, atol=1e-4)  # the prompts changed the masked crops' embeddings


def test_user_errors(mined: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no shards matched"):
        train(config(tmp_path / "a", str(tmp_path / "pairs-{000000..000002}.tar")))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UserError, match="vocabulary is empty"):
        train(config(tmp_path / "b", shards(mined), vocabulary=str(empty)))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "other.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        train(config(tmp_path / "c", shards(mined)))
    with pytest.raises(UserError, match="prompt_depth"):
        train(config(tmp_path / "d", shards(mined), prompt_depth=5))
    with pytest.raises(UserError, match="steps must be given when `epochs` is not"):
        train(config(tmp_path / "e", shards(mined), steps=None))


def test_expand_shards_accepts_local_globs(tmp_path):
    from maskmine.finetune.data import expand_shards

    for i in (2, 0, 1):
        (tmp_path / f"pairs-{i:06d}.tar").write_bytes(b"")
    assert expand_shards(str(tmp_path / "pairs-*.tar")) == [str(tmp_path / f"pairs-{i:06d}.tar") for i in range(3)]
    with pytest.raises(UserError, match="no shards matched"):
        expand_shards(str(tmp_path / "other-*.tar"))


def test_file_urls_are_local_shards_everywhere(mined: Path, tmp_path: Path) -> None:
    """``file://PATH`` is the local file for every rule: globs, missing files, sample counts, crop settings."""
    from maskmine.finetune.train_config import count_samples

    plain = expand_shards(shards(mined))
    assert expand_shards(f"file://{mined}/pairs-*.tar") == plain
    as_urls = [f"file://{u}" for u in plain]
    table = pd.concat(pd.read_parquet(p) for p in sorted((mined / "parquet").glob("*.parquet")))
    assert count_samples(as_urls) == count_samples(plain) == len(table)  # so --epochs can size the schedule
    assert vocabulary_for_shards(as_urls) == vocabulary_for_shards(plain)
    with pytest.raises(UserError, match="do not exist"):
        expand_shards([as_urls[0], f"file://{tmp_path}/pairs-000009.tar"])
    with pytest.raises(UserError, match="cannot count the samples of s3://bucket/pairs-000000.tar"):
        count_samples(["s3://bucket/pairs-000000.tar"])  # no manifest beside it and no opener for s3://


# ---- OVSeg's recipe: defaults, parameter groups, drop_last, two stages, crop settings ---------

def test_per_mode_defaults_are_ovsegs_and_flags_are_checked(tmp_path: Path) -> None:
    from maskmine.finetune.train import check_config

    for mode, lr, prompt_lr in (("full", 5e-6, None), ("prompt", 0.05, None), ("full+prompt", 5e-6, 0.05)):
        c = TrainConfig(shards="x", out="y", mode=mode)
        check_config(c)
        assert (c.lr, c.prompt_lr, c.weight_decay, c.warmup_steps) == (lr, prompt_lr, 0.2, 100)
    with pytest.raises(UserError, match="prompt lr is the prompts' rate in `mode` full\\+prompt only"):
        check_config(TrainConfig(shards="x", out="y", mode="prompt", prompt_lr=0.1))
    with pytest.raises(UserError, match="init starts mask prompt tuning .* it needs `mode` prompt"):
        check_config(TrainConfig(shards="x", out="y", mode="full", init="runs/full"))


@pytest.mark.parametrize("mode", ["full", "prompt", "full+prompt"])
def test_parameter_groups_follow_ovsegs_rule(mode: str) -> None:
    """Decay exactly where OVSeg's main.py decays (not: ndim < 2, 'bn'/'ln'/'bias'/'logit_scale' in the name)."""
    from maskmine.finetune.model import MaskPromptCLIP
    from maskmine.finetune.train import optimizer_param_groups

    model = MaskPromptCLIP(load_clip("maskmine-tiny", "none").model, mode=mode)
    groups = {g["name"]: g for g in optimizer_param_groups(model, 1e-3, 0.2, prompt_lr=0.05)}
    names = {id(p): n.removeprefix("clip.") for n, p in model.named_parameters()}
    ovseg_exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n != "mask_prompts"]
    expect_decay = {n.removeprefix("clip.") for n, p in trainable if not ovseg_exclude(n, p)}
    expect_plain = {n.removeprefix("clip.") for n, p in trainable if ovseg_exclude(n, p)}
    got = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert got.get("decay", set()) == expect_decay and got.get("no_decay", set()) == expect_plain
    if mode == "prompt":
        # OVSeg's stage 2: logit_scale trains in the no-decay group at --lr (its prompt rate, 0.05 there)
        assert set(groups) == {"prompts", "no_decay"} and groups["prompts"]["lr"] == 0.05
        assert got["no_decay"] == {"logit_scale"} and groups["no_decay"]["weight_decay"] == 0.0
    else:
        assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0
        assert "visual.proj" in got["decay"] and "visual.ln_post.weight" in got["no_decay"]
        assert "visual.class_embedding" in got["no_decay"]
    if "prompts" in groups:
        assert groups["prompts"]["weight_decay"] == 0.0 and got["prompts"] == {"mask_prompts"}


def test_training_drops_the_last_partial_batch(mined: Path, small_run: Path, tmp_path: Path) -> None:
    # 100 pairs in batches of 32: 3 full batches per epoch, the 4 left over are dropped (OVSeg: drop_last)
    result = train(config(tmp_path / "out", shards(small_run), vocabulary=str(mined), steps=None, epochs=2,
                          batch_size=32, save_every=100))
    assert result.finished and result.step == 6 and result.samples == 2 * 96


def _with_crop_fill(run: Path, dest: Path, fill: str) -> Path:
    import shutil

    shutil.copytree(run, dest)
    data = json.loads((dest / "run.json").read_text())
    data["identity"]["clip"]["crop"]["fill"] = fill
    (dest / "run.json").write_text(json.dumps(data))
    return dest


def test_crop_settings_travel_from_the_mining_run_to_the_export(mined: Path, tmp_path: Path) -> None:
    assert json.loads((mined / "run.json").read_text())["identity"]["clip"]["crop"]["fill"] == "mean"
    zero = _with_crop_fill(mined, tmp_path / "zero-run", "zero")
    train(config(tmp_path / "out", shards(zero), steps=2, save_every=100))
    export = json.loads((tmp_path / "out" / "config.json").read_text())
    assert export["crop"]["fill"] == "zero" and export["crop"]["input_size"] == 64
    assert load_adapted(tmp_path / "out").clip.crop_config.fill == "zero"  # what eval --adapted and the demo crop with
    with pytest.raises(UserError, match="different crop settings"):
        train(config(tmp_path / "mixed", f"{shards(mined)}::{shards(zero)}", steps=2, save_every=100))


def test_two_stage_recipe_prompts_on_the_finetuned_model(mined: Path, tmp_path: Path) -> None:
    full = train(config(tmp_path / "full", shards(mined), mode="full", lr=1e-3, steps=3, save_every=100))
    assert main(["train", "--shards", shards(mined), "--out", str(tmp_path / "stage2"), "--mode", "prompt",
                 "--init", str(tmp_path / "full"), "--lr", "1e-2", "--batch-size", "32", "--warmup-steps", "1",
                 "--steps", "3", "--workers", "0", "--no-progress"]) == 0
    export = json.loads((tmp_path / "stage2" / "config.json").read_text())
    assert export["mode"] == "prompt" and export["clip_pretrained"] == str((tmp_path / "full" / MODEL_FILE).resolve())
    adapted = load_adapted(tmp_path / "stage2")
    finetuned = full.model.clip.state_dict()
    stage2 = adapted.model.clip.state_dict()
    # the frozen CLIP is the finetuned one; only the temperature trains on (OVSeg's stage 2), kept in prompts.pt
    assert all(torch.equal(v, finetuned[k]) for k, v in stage2.items() if k != "logit_scale")
    assert not torch.equal(stage2["logit_scale"], finetuned["logit_scale"])
    with pytest.raises(UserError, match="stage 2 starts from a `mode` full run"):
        train(config(tmp_path / "bad", shards(mined), mode="prompt", init=str(tmp_path / "stage2"), steps=1))


def test_fewer_samples_than_a_batch_is_a_clear_error(mined: Path, tmp_path: Path) -> None:
    copy_samples(mined / "pairs-000000.tar", tmp_path / "pairs-000000.tar", limit=10)
    with pytest.raises(UserError, match="no full batch"):
        train(config(tmp_path / "out", str(tmp_path / "pairs-000000.tar"), vocabulary=str(mined), batch_size=32,
                     steps=2))
