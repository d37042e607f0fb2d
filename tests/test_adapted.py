"""Export folders and load_adapted: what eval and mining rebuild equals what training held."""
from __future__ import annotations

import json
from dataclasses import asdict

import open_clip
import pytest
import torch

from maskmine.finetune.adapted import load_adapted
from maskmine.finetune.checkpoint import (
    MODEL_FILE,
    PROMPTS_FILE,
    ExportConfig,
    latest_checkpoint,
    resolve_export,
    weights_fingerprint,
    write_checkpoint,
    write_export,
)
from maskmine.finetune.model import MaskPromptCLIP
from maskmine.finetune.vocab import read_vocabulary_file
from maskmine.transforms.clip_models import encode_texts, load_clip, register_configs

VOCAB = ["cat", "dog", "tree"]


def _model(mode: str, depth: int | None = 2) -> tuple[MaskPromptCLIP, ExportConfig]:
    clip = load_clip("maskmine-tiny", "none")
    fingerprint = weights_fingerprint(clip.model)
    model = MaskPromptCLIP(clip.model, mode=mode, prompt_depth=None if mode == "full" else depth)
    torch.manual_seed(5)
    with torch.no_grad():
        if model.uses_prompts:
            model.mask_prompts.mul_(20.0)
        if mode != "prompt":
            model.clip.visual.proj.add_(torch.randn_like(model.clip.visual.proj))
            model.clip.visual.conv1.weight.mul_(1.5)
    config = ExportConfig(
        clip_model="maskmine-tiny",
        clip_pretrained="none",
        mode=mode,
        prompt_depth=model.prompt_depth,
        step=7,
        crop=asdict(clip.crop_config),
        base_fingerprint=fingerprint,
        train={"lr": 1e-3},
    )
    return model.eval(), config


def _inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 64, 64, generator=g)
    masks = torch.zeros(n, 64, 64, dtype=torch.bool)
    masks[:, 16:48, 8:40] = True
    masks[0] = True
    return pixels, masks


@pytest.mark.parametrize("mode", ["prompt", "full", "full+prompt"])
def test_load_adapted_round_trip_gives_same_embeddings(tmp_path, mode: str) -> None:
    model, config = _model(mode)
    write_export(tmp_path / "export", model, config, VOCAB)
    files = {p.name for p in (tmp_path / "export").iterdir()}
    assert (MODEL_FILE in files) == (mode != "prompt")
    assert (PROMPTS_FILE in files) == (mode != "full")
    pixels, masks = _inputs()
    with torch.no_grad():
        expected = model.encode_image(pixels, masks)
    adapted = load_adapted(tmp_path / "export")
    assert adapted.mode == mode and adapted.vocabulary == VOCAB and adapted.config.step == 7
    got = adapted.encode_crops(pixels, masks, batch_size=2)
    assert got.dtype == torch.float32 and got.shape == (3, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    assert not any(p.requires_grad for p in adapted.model.parameters())
    # the text side is the unchanged tower of the same CLIP
    assert encode_texts(adapted.clip, VOCAB).shape == (3, 32)
    # a fully unmasked crop (row 0) is the plain CLIP embedding of the adapted weights
    plain = torch.nn.functional.normalize(adapted.clip.model.encode_image(pixels[:1]), dim=-1)
    torch.testing.assert_close(got[:1], plain, rtol=0, atol=1e-6)


def test_full_mode_weights_load_with_open_clip(tmp_path) -> None:
    model, config = _model("full")
    write_export(tmp_path, model, config, VOCAB)
    register_configs()
    clip, _, preprocess = open_clip.create_model_and_transforms("maskmine-tiny", pretrained=str(tmp_path / MODEL_FILE))
    clip.eval()
    pixels, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            clip.encode_image(pixels, normalize=True), model.encode_image(pixels, None), rtol=0, atol=1e-6
        )
    assert preprocess is not None


def test_prompts_refuse_a_different_base(tmp_path) -> None:
    model, config = _model("prompt")
    config.base_fingerprint = "0" * 32
    write_export(tmp_path, model, config, VOCAB)
    with pytest.raises(ValueError, match="fingerprint"):
        load_adapted(tmp_path)


def test_checkpoints_are_found_from_the_run_folder_and_pruned(tmp_path) -> None:
    model, config = _model("prompt")
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        resolve_export(tmp_path)
    for step in (10, 20, 30):
        config.step = step
        write_checkpoint(tmp_path, model, config, VOCAB, {"step": step}, keep=2)
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["step-00000020", "step-00000030"]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
    assert latest_checkpoint(tmp_path).name == "step-00000030"
    adapted = load_adapted(tmp_path)
    assert adapted.config.step == 30
    saved = json.loads((tmp_path / "checkpoints" / "step-00000030" / "vocabulary.json").read_text())
    assert saved == VOCAB == read_vocabulary_file(tmp_path / "checkpoints" / "step-00000030" / "vocabulary.json")
