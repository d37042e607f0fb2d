"""The schedule, parameter groups, loss and normalisation `train` and `pretrain-sample-clip` share.

`pretrain-sample-clip` produced the committed ``maskmine-sample.pt``; these tests pin
that the shared code computes, for its settings, exactly what its own copies did
(the old formulas are written out here), so reproducing the checkpoint is unchanged.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maskmine.finetune.losses import clip_contrastive_loss
from maskmine.finetune.optim import lr_factor, optimizer_param_groups
from maskmine.finetune.pretrain_sample import PretrainConfig, _normalise, batch_labels, build_model
from maskmine.transforms.masked_crop import OPENAI_MEAN, OPENAI_STD


def _old_pretrain_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """pretrain_sample's own ``_lr_at`` before it called ``lr_factor``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("lr,warmup,steps", [(1e-3, 40, 1000), (3e-4, 7, 50), (1e-3, 0, 30), (0.05, 1, 3)])
def test_lr_factor_with_a_peak_gives_pretrains_rates_bit_for_bit(lr: float, warmup: int, steps: int) -> None:
    got = [lr_factor(s, warmup, steps, peak=lr) for s in range(steps)]
    assert got == [_old_pretrain_lr(s, lr, warmup, steps) for s in range(steps)]


def test_the_float_order_of_the_warmup_matters() -> None:
    """Why ``lr_factor`` multiplies by the peak first: the other order changes some of pretrain's rates."""
    schedule = PretrainConfig(data="unused").schedule
    assert schedule.lr == 1e-3 and schedule.warmup == 40
    other_order = [schedule.lr * ((s + 1) / schedule.warmup) for s in range(schedule.warmup)]
    ours = [schedule.lr_at(s) for s in range(schedule.warmup)]
    assert ours == [lr_factor(s, schedule.warmup, schedule.steps, peak=schedule.lr) for s in range(schedule.warmup)]
    assert ours != other_order and ours[2] != other_order[2]


def test_lr_factor_without_a_peak_is_trains_multiplier() -> None:
    assert [lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 12) == 1.0 and lr_factor(20, 4, 12) == 0.0  # clamped past the end
    for s in range(12):
        assert lr_factor(s, 4, 12, peak=0.05) == pytest.approx(0.05 * lr_factor(s, 4, 12), rel=1e-15)


def test_pretrains_parameter_groups_are_its_old_ones() -> None:
    """The old rule: no decay where ndim < 2 or the name has 'embedding' / 'logit_scale'."""
    model = build_model(0)
    groups = optimizer_param_groups(model, 1e-3, 0.05, no_decay_names=("embedding",))
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and {g["lr"] for g in groups} == {1e-3}
    old_plain = [p for n, p in model.named_parameters()
                 if p.ndim < 2 or "embedding" in n or "logit_scale" in n or "token_embedding" in n]
    old_decay = [p for n, p in model.named_parameters() if not any(p is q for q in old_plain)]
    # the same tensors in the same order (AdamW's update does not depend on anything else here)
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in old_decay]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in old_plain]
    names = {id(p): n for n, p in model.named_parameters()}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert {"token_embedding.weight", "positional_embedding", "visual.positional_embedding"} <= plain
    # train's own rule (no names) decays those 2-D embeddings, as OVSeg's does
    train_rule = {g["name"]: {names[id(p)] for p in g["params"]} for g in optimizer_param_groups(model, 1e-3, 0.05)}
    assert "visual.positional_embedding" in train_rule["decay"]


def _old_pretrain_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """pretrain_sample's loss before it called ``clip_contrastive_loss``."""
    logits = scale * img @ txt.T
    same = (text[:, None, :] == text[None, :, :]).all(-1).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


def test_shared_loss_is_pretrains_soft_target_loss_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(4)
    img = F.normalize(torch.randn(6, 16, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    # token rows: captions 0, 2 and 5 are identical, so are 1 and 4
    text = torch.tensor([[49406, 320, 736, 49407], [49406, 320, 1126, 49407], [49406, 320, 736, 49407],
                         [49406, 320, 2368, 49407], [49406, 320, 1126, 49407], [49406, 320, 736, 49407]])
    labels = batch_labels(text)
    assert labels.tolist()[0] == labels.tolist()[2] == labels.tolist()[5] != labels.tolist()[1] == labels.tolist()[4]
    scale = torch.tensor(14.2)
    old = _old_pretrain_loss(img, txt, scale, text)
    new = clip_contrastive_loss(img, txt, scale, labels, duplicates="share")
    assert torch.equal(new, old)
    (grad_old,) = torch.autograd.grad(old, img)
    (grad_new,) = torch.autograd.grad(new, img)
    assert torch.equal(grad_new, grad_old)
    # train's default masks the duplicates instead: another loss on the same batch
    assert not torch.allclose(clip_contrastive_loss(img, txt, scale, labels), new)
    # with all-distinct captions both are CLIP's loss
    distinct = torch.arange(6)
    assert torch.allclose(clip_contrastive_loss(img, txt, scale, distinct, duplicates="share"),
                          clip_contrastive_loss(img, txt, scale, distinct))
    with pytest.raises(ValueError, match="duplicates"):
        clip_contrastive_loss(img, txt, scale, distinct, duplicates="average")


def test_pretrain_normalises_like_to_clip_tensor_and_as_before() -> None:
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8, generator=g)
    batch = images[torch.tensor([2, 0]), :, 1:17, 3:19]  # as pretrain cuts its jittered crops
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    old = (batch.float() / 255.0 - mean) / std
    new = _normalise(batch)
    assert torch.equal(new, old) and new.stride() == old.stride() and new.shape == (2, 3, 16, 16)
