"""Mask prompt tuning wrapper and finetuning losses, on a tiny random open_clip CLIP (CPU)."""
from __future__ import annotations

import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from maskmine.finetune.losses import clip_contrastive_loss, vocab_cross_entropy
from maskmine.finetune.model import MaskPromptCLIP, patch_keep_mask

IMAGE, PATCH = 32, 8  # 4x4 = 16 patches
GRID = IMAGE // PATCH
N_PATCHES = GRID * GRID


def tiny_clip(seed: int = 0, layers: int = 3, patch_dropout: float = 0.0) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(
            layers=layers, width=64, head_width=32, patch_size=PATCH, image_size=IMAGE,
            patch_dropout=patch_dropout,
        ),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
    )
    return model.eval()


def images(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def tokens(b: int = 2) -> torch.Tensor:
    t = torch.zeros(b, 16, dtype=torch.long)
    t[:, 0] = 1
    t[:, 1] = torch.arange(b) + 5
    t[:, 2] = 99  # "eot": argmax pooling position
    return t


def masks_with_holes() -> torch.Tensor:
    """Sample 0: top-left 2x2 patches fully masked, one pixel kept in patch 3. Sample 1: all but patch 15 masked."""
    m = torch.ones(2, IMAGE, IMAGE, dtype=torch.bool)
    m[0, :16, :16] = False
    m[0, :8, 24:] = False
    m[0, 3, 30] = True  # patch 3 only partly masked: keeps its token
    m[1] = False
    m[1, 24:, 24:] = True
    return m


def keep_of_holes() -> torch.Tensor:
    keep = torch.ones(2, N_PATCHES)
    keep[0, [0, 1, 4, 5]] = 0
    keep[1, :15] = 0
    return keep


# ---- patch keep mask -------------------------------------------------------------------

def test_patch_keep_mask_full_partial_and_unmasked_patches() -> None:
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 4:, :4] = True  # patch (1,0): fully kept
    m[0, 2, 6] = True  # patch (0,1): a single kept pixel
    # patch (0,0) and (1,1): every pixel masked
    assert patch_keep_mask(m, 4).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    assert patch_keep_mask(m, 4).dtype == torch.float32


def test_patch_keep_mask_row_major_rectangular_and_numeric() -> None:
    m = torch.zeros(2, 8, 13)  # 2x3 patches of 4; the 13th column is dropped like conv1 does
    m[0, 5, 9] = 1.0  # row 1, col 2 -> patch 5
    m[0, :, 12] = 1.0  # only in the dropped column: no effect
    m[1] = 0.7
    keep = patch_keep_mask(m, (4, 4))
    assert keep.tolist() == [[0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]]
    assert patch_keep_mask(masks_with_holes(), PATCH).equal(keep_of_holes())


def test_patch_keep_mask_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        patch_keep_mask(torch.ones(8, 8, dtype=torch.bool), 4)
    with pytest.raises(ValueError):
        patch_keep_mask(torch.ones(1, 3, 3, dtype=torch.bool), 4)


# ---- equivalence with open_clip ---------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_unmasked_crop_gives_clip_embedding_exactly(normalize: bool) -> None:
    clip = tiny_clip()
    model = MaskPromptCLIP(clip, mode="prompt", prompt_depth=3).eval()
    x = images()
    with torch.no_grad():
        ref = clip.encode_image(x, normalize=normalize)
        all_kept = torch.ones(2, IMAGE, IMAGE, dtype=torch.bool)
        partly = torch.rand(2, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3)) > 0.5
        partly[:, ::PATCH, ::PATCH] = True  # every patch keeps at least one pixel
        assert torch.equal(model.encode_image(x, None, normalize=normalize), ref)
        assert torch.equal(model.encode_image(x, all_kept, normalize=normalize), ref)
        assert torch.equal(model.encode_image(x, partly, normalize=normalize), ref)


def test_matches_open_clip_with_patch_dropout_in_train_mode() -> None:
    clip = tiny_clip(patch_dropout=0.5).train()
    model = MaskPromptCLIP(clip, mode="prompt").train()
    x = images()
    torch.manual_seed(7)
    ref = clip.encode_image(x, normalize=True)
    torch.manual_seed(7)
    ours = model.encode_image(x, torch.ones(2, IMAGE, IMAGE, dtype=torch.bool))
    assert torch.equal(ours, ref)


def reference_ovseg_forward(clip: CLIP, prompts: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Straight transcription of OVSeg's masked VisualTransformer.forward (no patch dropout)."""
    v = clip.visual
    m = keep.unsqueeze(-1)
    t = v.conv1(x).flatten(2).transpose(1, 2)
    t = t * m + prompts[0].unsqueeze(0) * (1 - m)
    t = torch.cat([v.class_embedding.expand(t.shape[0], 1, -1), t], dim=1) + v.positional_embedding
    t = v.ln_pre(t)
    for i, blk in enumerate(v.transformer.resblocks):
        if 1 <= i < prompts.shape[0]:
            t = torch.cat([t[:, :1], t[:, 1:] * m + prompts[i].unsqueeze(0) * (1 - m)], dim=1)
        t = blk(t)
    return F.normalize(v.ln_post(t[:, 0]) @ v.proj, dim=-1)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_masked_forward_matches_ovseg_reference(depth: int) -> None:
    clip = tiny_clip(layers=4)
    model = MaskPromptCLIP(clip, mode="prompt", prompt_depth=depth).eval()
    assert model.mask_prompts.shape == (depth, N_PATCHES, 64)
    x = images()
    with torch.no_grad():
        ours = model.encode_image(x, masks_with_holes())
        ref = reference_ovseg_forward(clip, model.mask_prompts, x, keep_of_holes())
        unprompted = clip.encode_image(x, normalize=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert not torch.allclose(ours, unprompted, atol=1e-4)


def test_deep_prompts_matter_only_when_a_patch_is_fully_masked() -> None:
    model = MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=3).eval()
    x = images()
    partly = torch.ones(2, IMAGE, IMAGE, dtype=torch.bool)
    partly[:, :16, :16] = False  # patches 0, 1, 4, 5 mostly masked...
    partly[:, 0, 0] = partly[:, 0, 8] = partly[:, 8, 0] = partly[:, 8, 8] = True  # ...but one pixel kept each
    holes = masks_with_holes()
    with torch.no_grad():
        before_partly = model.encode_image(x, partly)
        before_holes = model.encode_image(x, holes)
        model.mask_prompts[1:].add_(torch.randn_like(model.mask_prompts[1:]))
        after_partly = model.encode_image(x, partly)
        after_holes = model.encode_image(x, holes)
    assert torch.equal(before_partly, after_partly)
    assert not torch.allclose(before_holes, after_holes, atol=1e-4)


def test_patch_dropout_routes_prompts_of_surviving_masked_patches_only() -> None:
    clip = tiny_clip(patch_dropout=0.5).train()
    model = MaskPromptCLIP(clip, mode="prompt", prompt_depth=3).train()
    keep = keep_of_holes()
    torch.manual_seed(11)
    model.encode_image(images(), masks_with_holes()).sum().backward()
    torch.manual_seed(11)  # the same draw open_clip's PatchDropout makes
    survivors = torch.randn(2, N_PATCHES).topk(N_PATCHES // 2, dim=-1).indices
    expected = torch.zeros(N_PATCHES, dtype=torch.bool)
    for b in range(2):
        for p in survivors[b].tolist():
            expected[p] |= bool(keep[b, p] == 0)
    assert expected.any() and not expected.all()
    for d in range(3):
        has_grad = model.mask_prompts.grad[d].abs().sum(dim=-1) > 0
        assert has_grad.equal(expected), f"depth {d}"


# ---- training modes ----------------------------------------------------------------------

def _train_step(model: MaskPromptCLIP) -> None:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2, weight_decay=0.1)
    img = model.encode_image(images(), masks_with_holes())
    txt = model.encode_text(tokens())
    loss = clip_contrastive_loss(img, txt, model.logit_scale, torch.tensor([0, 1]))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_prompt_mode_step_changes_only_prompts_and_temperature() -> None:
    # OVSeg's stage 2 locks both towers (lock_image, lock_text) but not logit_scale: it trains too
    clip = tiny_clip()
    model = MaskPromptCLIP(clip, mode="prompt", prompt_depth=3).train()
    assert {id(p) for p in model.trainable_parameters()} == {id(model.mask_prompts), id(clip.logit_scale)}
    assert [n for n, p in clip.named_parameters() if p.requires_grad] == ["logit_scale"]
    frozen = copy.deepcopy(clip.state_dict())
    prompts_before = model.mask_prompts.detach().clone()
    _train_step(model)
    after = clip.state_dict()
    assert frozen.keys() == after.keys()
    for name, value in frozen.items():
        assert torch.equal(value, after[name]) == (name != "logit_scale"), name
    for d in range(3):
        assert not torch.equal(model.mask_prompts[d], prompts_before[d]), f"prompt depth {d} did not train"
    # the state dict holds each CLIP weight once (no aliasing of the image tower)
    assert set(model.state_dict()) == {"mask_prompts"} | {f"clip.{k}" for k in frozen}


def test_full_mode_trains_image_tower_and_temperature_only() -> None:
    clip = tiny_clip()
    model = MaskPromptCLIP(clip, mode="full").train()
    assert model.mask_prompts is None and model.prompt_depth == 0
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in clip.visual.parameters()} | {id(clip.logit_scale)}
    frozen = MaskPromptCLIP(tiny_clip(), mode="full", train_logit_scale=False)
    assert {id(p) for p in frozen.trainable_parameters()} == {id(p) for p in frozen.clip.visual.parameters()}
    before = copy.deepcopy(clip.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.equal(model.encode_image(x, masks_with_holes()), clip.encode_image(x, normalize=True))
    _train_step(model)
    after = clip.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        if name.startswith("visual.") or name == "logit_scale":
            continue
        assert not changed, f"non-image weight {name} changed"
    assert not torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])
    assert not torch.equal(before["visual.proj"], after["visual.proj"])
    assert not torch.equal(before["visual.transformer.resblocks.0.attn.in_proj_weight"],
                           after["visual.transformer.resblocks.0.attn.in_proj_weight"])


def test_full_plus_prompt_trains_both_and_logit_scale() -> None:
    clip = tiny_clip()
    model = MaskPromptCLIP(clip, mode="full+prompt", prompt_depth=2)
    trainable = {id(p) for p in model.trainable_parameters()}
    expected = {id(p) for p in clip.visual.parameters()} | {id(model.mask_prompts), id(clip.logit_scale)}
    assert trainable == expected
    assert not clip.token_embedding.weight.requires_grad
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        MaskPromptCLIP(tiny_clip(), mode="lora")
    with pytest.raises(ValueError):
        MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=4)  # only 3 layers
    with pytest.raises(ValueError):
        MaskPromptCLIP(tiny_clip(), mode="full", prompt_depth=2)
    assert MaskPromptCLIP(tiny_clip(layers=2), mode="prompt").prompt_depth == 2  # default 3 capped
    model = MaskPromptCLIP(tiny_clip(), mode="prompt")
    with pytest.raises(ValueError):
        model.encode_image(images(), torch.ones(2, 16, 16, dtype=torch.bool))


def test_text_side_is_clip_and_builds_no_graph() -> None:
    clip = tiny_clip()
    model = MaskPromptCLIP(clip, mode="full+prompt")
    txt = model.encode_text(tokens(3))
    assert not txt.requires_grad
    assert torch.equal(txt, clip.encode_text(tokens(3), normalize=True))
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3))


def test_works_with_a_registered_open_clip_config(tmp_path) -> None:
    cfg = tmp_path / "maskprompt-test-tiny.json"
    cfg.write_text(
        '{"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,'
        ' "patch_size": 16}, "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16,'
        ' "heads": 2, "layers": 1}}'
    )
    open_clip.add_model_config(cfg)
    clip = open_clip.create_model("maskprompt-test-tiny").eval()
    model = MaskPromptCLIP(clip, mode="prompt").eval()
    assert model.mask_prompts.shape == (2, 4, 32)
    x = images()
    m = torch.ones(2, IMAGE, IMAGE, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x, m), clip.encode_image(x, normalize=True))
        m[0, :16, :16] = False
        assert not torch.equal(model.encode_image(x, m)[0], clip.encode_image(x, normalize=True)[0])


# ---- prompts file ------------------------------------------------------------------------

def test_prompt_state_dict_roundtrip(tmp_path) -> None:
    trained = MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=3).eval()
    with torch.no_grad():
        trained.mask_prompts.mul_(5.0)
    path = tmp_path / "prompts.pt"
    torch.save(trained.prompt_state_dict(), path)
    fresh = MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=3).eval()
    assert not torch.equal(fresh.mask_prompts, trained.mask_prompts)
    fresh.load_prompt_state_dict(torch.load(path))
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(images(), masks_with_holes()),
                           trained.encode_image(images(), masks_with_holes()))
    shallow = MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=2)
    with pytest.raises(ValueError, match="does not match"):
        shallow.load_prompt_state_dict(torch.load(path))
    with pytest.raises(ValueError):
        MaskPromptCLIP(tiny_clip(), mode="full").prompt_state_dict()


# ---- losses ------------------------------------------------------------------------------

def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_contrastive_loss_hand_computed() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * img @ txt.T = [[2.0, 1.2], [0.0, 1.6]]
    i2t = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2
    t2i = (_ce([2.0, 0.0], 0) + _ce([1.2, 1.6], 1)) / 2
    loss = clip_contrastive_loss(img, txt, 2.0, torch.tensor([3, 7]))
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    assert clip_contrastive_loss(img, txt, torch.tensor(2.0), torch.tensor([3, 7])).item() == pytest.approx(loss.item())


def test_duplicate_labels_are_removed_from_negatives() -> None:
    s = 1.0
    img = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    logits = (s * img @ txt.T).tolist()
    distinct = clip_contrastive_loss(img, txt, s, torch.tensor([0, 1, 2]))
    plain = 0.5 * (F.cross_entropy(torch.tensor(logits), torch.arange(3))
                   + F.cross_entropy(torch.tensor(logits).T, torch.arange(3)))
    assert distinct.item() == pytest.approx(plain.item(), rel=1e-6)

    dup = clip_contrastive_loss(img, txt, s, torch.tensor([5, 5, 9]))
    L = logits
    # items 0 and 1 share a noun: entry (0,1) and (1,0) leave the denominators in both directions
    i2t = _ce([L[0][0], L[0][2]], 0) + _ce([L[1][1], L[1][2]], 0) + _ce(L[2], 2)
    t2i = _ce([L[0][0], L[2][0]], 0) + _ce([L[1][1], L[2][1]], 0) + _ce([L[0][2], L[1][2], L[2][2]], 2)
    assert dup.item() == pytest.approx((i2t / 3 + t2i / 3) / 2, rel=1e-6)
    assert dup.item() < distinct.item()  # removing negatives can only lower each term


def test_contrastive_loss_gradients_finite_even_when_all_labels_equal() -> None:
    img = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    loss = clip_contrastive_loss(img, txt, scale, torch.tensor([2, 2, 2, 2]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # only the positive is left in each softmax
    loss = clip_contrastive_loss(img, txt, scale, torch.tensor([2, 2, 1, 0]))
    loss.backward()
    assert all(torch.isfinite(t.grad).all() for t in (img, txt, scale))
    assert img.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        clip_contrastive_loss(img, txt[:3], scale, torch.tensor([0, 1, 2, 3]))


def test_vocab_cross_entropy_hand_computed() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    vocab = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    loss = vocab_cross_entropy(img, vocab, 3.0, torch.tensor([2, 1]))
    expected = (_ce([3.0, 0.0, 1.8], 2) + _ce([0.0, 3.0, 2.4], 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(img.grad).all()
    with pytest.raises(ValueError):
        vocab_cross_entropy(img, vocab, 3.0, torch.tensor([0, 3]))


def test_grad_checkpointing_gives_same_output_and_prompt_grads() -> None:
    model = MaskPromptCLIP(tiny_clip(), mode="prompt", prompt_depth=3).train()
    model.encode_image(images(), masks_with_holes()).sum().backward()
    plain_grad = model.mask_prompts.grad.clone()
    model.mask_prompts.grad = None
    model.clip.set_grad_checkpointing(True)
    model.encode_image(images(), masks_with_holes()).sum().backward()
    torch.testing.assert_close(model.mask_prompts.grad, plain_grad, rtol=0, atol=1e-7)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_masked_forward_matches_ovseg_reference_on_random_masks(depth: int) -> None:
    """Random pixel masks; the reference's per-patch keep flag is computed here independently
    (a patch keeps its token when any of its pixels is in the mask, as OVSeg's mask embedding)."""
    clip = tiny_clip(seed=depth, layers=4)
    model = MaskPromptCLIP(clip, mode="prompt", prompt_depth=depth).eval()
    gen = torch.Generator().manual_seed(10 + depth)
    with torch.no_grad():
        model.mask_prompts.normal_(0.0, 1.0, generator=gen)
    coarse = torch.rand(3, IMAGE // 4, IMAGE // 4, generator=gen) < 0.35  # blobs of 4x4 pixels
    masks = coarse.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    grid = IMAGE // PATCH
    keep = masks.reshape(3, grid, PATCH, grid, PATCH).permute(0, 1, 3, 2, 4).reshape(3, grid * grid, -1)
    keep = keep.any(dim=-1).float()
    assert 0 < keep.mean() < 1
    x = images(3, seed=depth)
    with torch.no_grad():
        ours = model.encode_image(x, masks)
        ref = reference_ovseg_forward(clip, model.mask_prompts, x, keep)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
