"""The CLIP factory: model choice, seeded random init, crop geometry, text embeddings."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from maskmine.transforms.clip_models import (
    MINING_TEMPLATES,
    SAMPLE_CHECKPOINT,
    ClipSpec,
    TextEmbeddingCache,
    check_clip,
    encode_crops,
    encode_texts,
    load_clip,
    resolve_model,
)
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import CropConfig


@pytest.fixture(scope="module")
def tiny():
    return load_clip("maskmine-tiny", "none", "cpu")


def test_omitted_pretrained_means_the_models_default():
    assert resolve_model("ViT-B-16", None) == ("ViT-B-16", "openai", "openai")
    assert resolve_model("maskmine-tiny", None) == ("maskmine-tiny", None, "none")
    assert resolve_model("sample", None) == ("maskmine-sample", str(SAMPLE_CHECKPOINT), "sample")
    assert resolve_model("ViT-B-16", "none") == ("ViT-B-16", None, "none")


@pytest.mark.parametrize(
    "name, pretrained, message",
    [
        ("ViT-Nope-99", "none", "clip model 'ViT-Nope-99' is unknown"),
        ("ViT-B-16", "not-a-tag", "known tags: "),
        ("maskmine-tiny", "/no/such/file.pt", "neither a file nor a pretrained tag"),
    ],
)
def test_bad_choices_fail_before_building(name, pretrained, message):
    with pytest.raises(UserError, match=message):
        check_clip(name, pretrained)


def test_random_init_is_seeded_and_leaves_the_global_rng_alone(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = load_clip("maskmine-tiny", "none", "cpu")
    assert torch.equal(torch.rand(3), expected)  # building a model did not consume the caller's RNG
    for (name, a), (_, b) in zip(tiny.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_crop_geometry_comes_from_the_model_and_settings_from_the_caller():
    asked = CropConfig(fill="zero", resize="pad", expand_ratio=1.5, threshold=0.4, resample="pil")
    clip = load_clip("maskmine-tiny", "none", "cpu", asked)
    assert clip.crop_config.input_size == clip.model.visual.image_size[0]
    # every setting as asked, resample too (it was once dropped: --crop-resample pil cut OVSeg's torch crops)
    assert clip.crop_config == replace(asked, input_size=clip.crop_config.input_size)
    assert clip.name == "maskmine-tiny" and clip.pretrained == "none"


def test_sample_checkpoint_loads_its_weights():
    clip = load_clip("sample", None, "cpu")
    saved = torch.load(SAMPLE_CHECKPOINT, map_location="cpu", weights_only=True)
    saved = saved.get("state_dict", saved)
    conv = clip.model.state_dict()["visual.conv1.weight"]
    assert torch.equal(conv, saved["visual.conv1.weight"].to(conv.dtype))
    assert clip.crop_config.input_size == 80 and clip.pretrained == "sample"


def test_text_embeddings_are_the_normalised_template_mean(tiny):
    emb = encode_texts(tiny, ["dog", "red car"])
    assert emb.shape == (2, tiny.model.text_projection.shape[1])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-6)
    with torch.inference_mode():
        tokens = tiny.tokenizer([t.format("dog") for t in MINING_TEMPLATES])
        per_template = torch.nn.functional.normalize(tiny.model.encode_text(tokens).float(), dim=-1)
    manual = torch.nn.functional.normalize(per_template.mean(0), dim=-1)
    assert torch.allclose(emb[0], manual, atol=1e-6)


def test_cached_embedding_does_not_depend_on_its_companions(tiny):
    alone = TextEmbeddingCache(tiny).get(["kite"])[0]
    crowded = TextEmbeddingCache(tiny).get(["beach", "kite", "person", "umbrella"])[1]
    assert torch.equal(alone, crowded)  # bit-identical, whatever else arrived in the batch


def test_crop_embeddings_are_normalised_in_any_chunking(tiny):
    size = tiny.crop_config.input_size
    crops = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(0))
    whole = encode_crops(tiny, crops, batch_size=64)
    chunked = encode_crops(tiny, crops, batch_size=2)
    assert whole.shape == (5, tiny.model.text_projection.shape[1])
    assert torch.allclose(whole.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_clip_spec_defaults_to_the_models_default_and_loads_where_it_says():
    assert ClipSpec().pretrained is None  # like an omitted --clip-pretrained
    assert resolve_model(ClipSpec().model, None)[2] == "openai"
    crop = CropConfig(fill="zero", input_size=32)
    clip = ClipSpec(model="maskmine-tiny", pretrained="none", device="cpu", crop=crop).load()
    assert clip.device == torch.device("cpu") and clip.crop_config.fill == "zero"
