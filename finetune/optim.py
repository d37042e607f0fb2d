"""The optimizer recipe shared by ``maskmine train`` and ``maskmine pretrain-sample-clip``.

AdamW with OVSeg's (open_clip's) betas and eps, its parameter groups (what
decays and what does not), and the warmup-then-cosine learning-rate schedule.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

# AdamW betas/eps of OVSeg's training/params.py get_default_params for ViT models.
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-6


def lr_factor(step: int, warmup: int, total: int, peak: float = 1.0) -> float:
    """Linear warmup from ~0 to ``peak`` over ``warmup`` steps, then cosine to 0 at ``total``.

    ``peak=1.0`` gives the multiplier ``maskmine train`` hands to ``LambdaLR``.
    ``pretrain-sample-clip`` sets each step's rate itself with ``peak=lr``;
    the products are written ``peak * (step + 1) / warmup`` and
    ``peak * 0.5 * (1 + cos)``, in that float order, so its rates are the
    ones its committed checkpoint was trained with (with ``peak=1.0`` the
    extra multiplication is exact).
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def _no_decay(name: str, param: torch.nn.Parameter, norm_params: set[int], names: Sequence[str]) -> bool:
    """OVSeg's (open_clip's) rule: no weight decay on gains, biases, norms and the temperature,
    nor on parameters whose name contains one of ``names``."""
    return (param.ndim < 2 or id(param) in norm_params or "bias" in name or "logit_scale" in name
            or any(part in name for part in names))


def optimizer_param_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                           prompt_lr: float | None = None,
                           no_decay_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """AdamW parameter groups as OVSeg's training/main.py and main_mask_prompt_tuning.py build them.

    * CLIP weights with >= 2 dimensions that are not in a norm layer: ``weight_decay`` (OVSeg's --wd 0.2);
    * the rest (1-D gains and biases, LayerNorm/BatchNorm/GroupNorm parameters, ``logit_scale``, and
      parameters whose name contains one of ``no_decay_names``): no decay;
    * the mask prompts (``model.mask_prompts`` of a ``MaskPromptCLIP``): no decay (OVSeg's
      --mask_wd 0.0), at ``prompt_lr`` (default: ``lr``).

    OVSeg finds norms by the substrings "bn"/"ln" in the parameter name; here they are found by
    module type, which selects the same parameters in open_clip's ViT (``ln_*``) and does not
    depend on names. Only parameters that require grad are included; empty groups are left out.
    ``pretrain-sample-clip`` passes ``no_decay_names=("embedding",)``: it trains the whole CLIP
    from scratch and keeps token, positional and class embeddings out of the decay.
    """
    norm_types = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    mask_prompts = getattr(model, "mask_prompts", None)
    decay, no_decay, prompts = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if mask_prompts is not None and param is mask_prompts:
            prompts.append(param)
        elif _no_decay(name, param, norm_params, no_decay_names):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "lr": lr},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lr": lr},
        {"name": "prompts", "params": prompts, "weight_decay": 0.0, "lr": lr if prompt_lr is None else prompt_lr},
    ]
    return [g for g in groups if g["params"]]
