"""OpenAI's CLIPs run with the QuickGELU they were trained with, everywhere, and runs record it.

No download: open_clip's pretrained registry gets an ``openai`` entry for the tiny config whose
weights are a local random state dict (``file``), exactly as open_clip resolves a real tag.
"""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from maskmine.finetune.train_config import TrainConfig, prepare_out_dir
from maskmine.transforms.clip_models import ClipSpec, load_clip, resolve_activation
from maskmine.transforms.errors import UserError
from maskmine.transforms.run_folder import TRAIN_FILE


def quick_gelu_modules(model: torch.nn.Module) -> int:
    return sum(isinstance(m, QuickGELU) for m in model.modules())


@pytest.fixture()
def openai_tag(tmp_path, monkeypatch):
    """``maskmine-tiny`` gets an ``openai`` tag (open_clip's own entry fields, quick_gelu True) whose
    weights are a random state dict of the QuickGELU build, so loading needs no download."""
    from open_clip import pretrained as registry

    from maskmine.transforms.clip_models import register_configs

    register_configs()  # the tiny config's JSON (transforms/model_configs)
    reference = open_clip.create_model("maskmine-tiny", force_quick_gelu=True)
    weights = tmp_path / "tiny-openai.pt"
    torch.save(reference.state_dict(), weights)
    entry = dict(registry.get_pretrained_cfg("ViT-B-16", "openai"))
    assert entry["quick_gelu"] is True  # what open_clip 3.3 records for every openai tag
    entry = {**{k: v for k, v in entry.items() if k not in ("url", "hf_hub")}, "file": str(weights)}
    monkeypatch.setitem(registry._PRETRAINED, "maskmine-tiny", {"openai": entry})
    return reference


def test_openai_tags_resolve_to_quick_gelu_without_building() -> None:
    assert resolve_activation("ViT-B-16", "openai") == "quick_gelu"
    assert resolve_activation("ViT-L-14", "openai") == "quick_gelu"
    assert resolve_activation("ViT-B-16", "laion2b_s34b_b88k") == "gelu"
    assert resolve_activation("ViT-B-16", None) == "gelu"
    assert resolve_activation("ViT-B-16-quickgelu", None) == "quick_gelu"  # the config says so
    assert resolve_activation("ViT-B-16", "openai", "gelu") == "gelu"  # --clip-activation gelu


def test_an_openai_tag_is_built_with_quick_gelu(openai_tag) -> None:
    clip = load_clip("maskmine-tiny", "openai", "cpu")
    assert clip.activation == "quick_gelu"
    # every MLP of both towers, no nn.GELU left
    assert quick_gelu_modules(clip.model) == quick_gelu_modules(openai_tag) > 0
    assert not any(isinstance(m, torch.nn.GELU) for m in clip.model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(clip.model.encode_image(x), openai_tag.encode_image(x), atol=1e-6)
    assert ClipSpec(model="maskmine-tiny", pretrained="openai").resolved_activation() == "quick_gelu"
    # open_clip's own build with the same tag: GELU, a different network
    plain = open_clip.create_model("maskmine-tiny", pretrained="openai")
    assert quick_gelu_modules(plain) == 0
    with torch.no_grad():
        assert not torch.allclose(plain.encode_image(x), openai_tag.encode_image(x), atol=1e-4)


def test_an_export_file_is_rebuilt_with_its_recorded_activation(tmp_path) -> None:
    model = open_clip.create_model("maskmine-tiny", force_quick_gelu=True)
    folder = tmp_path / "export"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.pt")
    record = {"format": "maskmine-adapted-clip/1", "clip_model": "maskmine-tiny", "clip_activation": "quick_gelu"}
    (folder / "config.json").write_text(json.dumps(record))
    assert load_clip("maskmine-tiny", str(folder / "model.pt")).activation == "quick_gelu"
    del record["clip_activation"]  # an export written before the field: built as open_clip's config says
    (folder / "config.json").write_text(json.dumps(record))
    assert load_clip("maskmine-tiny", str(folder / "model.pt")).activation == "gelu"
    # a plain file records nothing: --clip-activation decides
    assert load_clip("maskmine-tiny", str(folder / "model.pt"), activation="quick_gelu").activation == "quick_gelu"


def test_a_training_run_without_a_recorded_activation_is_not_resumed(tmp_path) -> None:
    c = TrainConfig(shards="s", out=str(tmp_path / "out"), clip=ClipSpec(model="maskmine-tiny", pretrained="none"))
    assert c.identity()["clip_activation"] == "gelu"
    old = dict(c.identity())
    del old["clip_activation"]  # train.json of a run trained before the activation was recorded
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / TRAIN_FILE).write_text(json.dumps({"identity": old}))
    with pytest.raises(UserError, match="clip_activation"):
        prepare_out_dir(c)


@pytest.mark.slow
def test_issue_reproduction_vit_b_32_openai(tmp_path, monkeypatch) -> None:
    """The issue's reproduction: open_clip's downloader pointed at a random ViT-B-32-quickgelu state dict."""
    import open_clip.factory as factory

    weights = tmp_path / "vit-b-32.pt"
    torch.save(open_clip.create_model("ViT-B-32-quickgelu").state_dict(), weights)
    monkeypatch.setattr(factory, "download_pretrained", lambda cfg, **kw: str(weights))
    clip = load_clip("ViT-B-32", "openai", "cpu")
    assert clip.activation == "quick_gelu" and quick_gelu_modules(clip.model) == 24
