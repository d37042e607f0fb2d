"""CLIP wrapper for finetuning on masked crops: full finetuning and OVSeg mask prompt tuning.

Mask prompt tuning (OVSeg, Liang et al. CVPR 2023, ``mask_emb_depth`` in its
open_clip fork): a masked crop has large background areas filled with a
constant colour; the tokens of patches that are *entirely* background carry no
information, so they are replaced by learnable prompt vectors and only those
prompts are trained while CLIP stays frozen. The choices below follow OVSeg's
code and are checked against open_clip 3.3.0's ``VisionTransformer``:

* Patch keep mask ``M`` (B, N): 1 when any pixel of the patch is kept, 0 when
  every pixel is masked (OVSeg: ``ceil(avg_pool(mask))``).
* Layer-0 prompts replace the raw patch embeddings (``conv1`` output) *before*
  the positional embedding is added, exactly as OVSeg does: a prompt at patch
  position k still receives position k's embedding, then ``patch_dropout`` and
  ``ln_pre`` run as usual. The class token is never touched.
* Deep prompts (``prompt_depth`` D > 1): the input of resblock d, d = 1..D-1
  (0-based, i.e. the output of block d-1) gets ``x*M + P_d*(1-M)`` on its patch
  tokens; no positional embedding is added there (OVSeg does the same).
* Prompts are one (N, E) table per depth, stored as one parameter (D, N, E),
  initialised ``normal(std=0.02)`` like OVSeg's default ``mae`` init (zeros
  would make every masked patch identical to a zero token at step 0).
* The forward re-uses the CLIP model's own modules op for op, so with no masks
  (or an all-ones M) the embedding is bit-identical to ``clip.encode_image``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import PatchDropout, VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from maskmine.finetune.train_choices import MODES, Mode  # noqa: F401 - imported from here too

# Each mode's default learning rate, from OVSeg's open_clip_training scripts:
# coco_proposal_1cap_finetune_VitL.sh / coco_gt_171cls_finetune_VitL.sh (--lr 0.000005) and
# coco_proposal_1cap_mask_prompt_tuning_VitL.sh (--lr 0.05 --mask_wd 0.0). full+prompt is
# maskmine's own mode (OVSeg runs the two stages one after the other): its CLIP weights take
# the full rate and its prompts the prompt rate (``TrainConfig.prompt_lr``).
DEFAULT_LR: dict[Mode, float] = {"prompt": 0.05, "full": 5e-6, "full+prompt": 5e-6}
DEFAULT_PROMPT_DEPTH = 3  # OVSeg's MASK_PROMPT_DEPTH for its released ViT-L/14 model
PROMPT_KEY = "mask_prompts"


def training_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA, plain fp32 elsewhere: how training and its validation run the model."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def trains_clip(mode: Mode) -> bool:
    """Whether ``mode`` trains CLIP's image tower (so an export holds ``model.pt``)."""
    return mode in ("full", "full+prompt")


def uses_prompts(mode: Mode) -> bool:
    """Whether ``mode`` has mask prompts (so an export holds ``prompts.pt``)."""
    return mode in ("prompt", "full+prompt")
MAX_LOGIT_SCALE = 100.0  # OVSeg clamps logit_scale at ln(100) after every step (training/train.py lines 119-121, 220-222)
LOGIT_SCALE_KEY = "logit_scale"  # in prompts.pt: the temperature trained with the prompts


def patch_keep_mask(mask: Tensor, patch_size: int | Sequence[int]) -> Tensor:
    """Per-patch keep mask (B, N) float from a pixel mask (B, H, W).

    ``mask`` is True (or non-zero) on kept/object pixels, False on masked
    background. A patch gets 0 ("fully masked, replace by a prompt") only when
    every one of its pixels is masked; any kept pixel makes it 1. Patches are
    numbered row-major like open_clip's ``conv1`` output flattening; trailing
    rows/columns that do not fill a patch are dropped, as the strided conv does.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    b, h, w = mask.shape
    gh, gw = h // ph, w // pw
    if gh == 0 or gw == 0:
        raise ValueError(f"mask of size {h}x{w} is smaller than one {ph}x{pw} patch")
    kept = mask[:, : gh * ph, : gw * pw] != 0
    per_patch = kept.reshape(b, gh, ph, gw, pw).any(dim=4).any(dim=2)
    return per_patch.reshape(b, gh * gw).float()


def _blend(tokens: Tensor, keep: Tensor, prompts: Tensor) -> Tensor:
    """``tokens*keep + prompts*(1-keep)`` with keep (B, L) broadcast over the width."""
    k = keep.unsqueeze(-1).to(tokens.dtype)
    return tokens * k + prompts.to(tokens.dtype) * (1 - k)


class MaskPromptCLIP(nn.Module):
    """An open_clip CLIP whose image tower can take crop masks (mask prompt tuning).

    Modes:
      ``"prompt"``       CLIP fully frozen; only the mask prompts train.
      ``"full"``         every image-tower weight trains; no prompts.
      ``"full+prompt"``  image tower and prompts train.
    The text tower (and ``logit_bias`` if any) is always frozen. The temperature
    ``logit_scale`` trains in every mode with ``train_logit_scale=True`` (the default), as
    in both of OVSeg's stages: its ``lock_image``/``lock_text`` freeze the towers only
    (open_clip_training/src/open_clip/model.py, ``lock_image_tower``/``lock_text_tower``),
    and its optimizers put ``logit_scale`` in the no-decay group (training/main.py line 173,
    main_mask_prompt_tuning.py line 178); :meth:`clamp_logit_scale` is OVSeg's clamp.
    """

    def __init__(
        self,
        clip: nn.Module,
        mode: Mode = "prompt",
        prompt_depth: int | None = None,
        prompt_init_std: float = 0.02,
        train_logit_scale: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.clip = clip
        self.mode = mode
        self.uses_prompts = uses_prompts(mode)
        self.train_logit_scale = train_logit_scale
        if self.uses_prompts:
            self._check_vit(clip.visual)
            n_layers = len(self.visual.transformer.resblocks)
            depth = min(DEFAULT_PROMPT_DEPTH, n_layers) if prompt_depth is None else prompt_depth
            if not 1 <= depth <= n_layers:
                raise ValueError(f"prompt_depth must be in 1..{n_layers} (vision layers), got {depth}")
            grid = self.visual.grid_size
            width = self.visual.class_embedding.shape[-1]
            self.prompt_depth = depth
            device = self.visual.class_embedding.device  # fp32 prompts, cast to the tokens' dtype on use
            self.mask_prompts = nn.Parameter(
                torch.randn(depth, grid[0] * grid[1], width, device=device) * prompt_init_std
            )
        else:
            if prompt_depth not in (None, 0):
                raise ValueError(f"mode 'full' has no prompts; prompt_depth={prompt_depth} is not allowed")
            self.prompt_depth = 0
            self.mask_prompts = None
        self._set_trainable()

    @property
    def visual(self) -> nn.Module:
        """CLIP's own image tower (a property, so its weights are registered once, under ``clip``)."""
        return self.clip.visual

    @staticmethod
    def _check_vit(visual: nn.Module) -> None:
        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                f"mask prompts need an open_clip VisionTransformer image tower, got {type(visual).__name__}"
            )
        if isinstance(visual.patch_dropout, PatchDropout) and not visual.patch_dropout.exclude_first_token:
            raise ValueError("patch dropout that may drop the class token is not supported")

    def _set_trainable(self) -> None:
        train_visual = trains_clip(self.mode)
        for name, p in self.clip.named_parameters():
            p.requires_grad = train_visual and name.startswith("visual.")
        self.clip.logit_scale.requires_grad = self.train_logit_scale
        if self.mask_prompts is not None:
            self.mask_prompts.requires_grad = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should get (prompts and/or image tower)."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def logit_scale(self) -> Tensor:
        """The similarity multiplier exp(logit_scale) (not the log), unclamped, as OVSeg's
        ``CLIP.forward`` returns it (open_clip/model.py line 531): the clamp is on the parameter."""
        return self.clip.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """OVSeg's clamp after each optimizer step: ``logit_scale.clamp_(0, math.log(100))``."""
        self.clip.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))

    # ---- text side ---------------------------------------------------------------
    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """CLIP text embeddings; the text tower is frozen, so no graph is built."""
        with torch.no_grad():
            return self.clip.encode_text(tokens, normalize=normalize)

    # ---- image side --------------------------------------------------------------
    def encode_image(self, images: Tensor, masks: Tensor | None = None, normalize: bool = True) -> Tensor:
        """Image embeddings (B, D). ``masks`` (B, H, W), True = kept pixel, drives the prompts.

        Without prompts (mode ``"full"``) masks are ignored and CLIP's own
        ``encode_image`` runs, so any image tower works in that mode.
        """
        if not self.uses_prompts:
            return self.clip.encode_image(images, normalize=normalize)
        keep = None
        if masks is not None:
            if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
                raise ValueError(
                    f"masks {tuple(masks.shape)} must be (B, H, W) matching images {tuple(images.shape)}"
                )
            keep = patch_keep_mask(masks.to(images.device), self.visual.patch_size)
        features = self._visual_forward(images, keep)
        return F.normalize(features, dim=-1) if normalize else features

    def _visual_forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """open_clip VisionTransformer.forward with mask prompts spliced in."""
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, N, width)
        if keep is not None:
            x = _blend(x, keep, self.mask_prompts[0].unsqueeze(0))
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        x = x + v.positional_embedding.to(x.dtype)
        x, kept_idx = self._patch_dropout(x)
        x = v.ln_pre(x)

        deep_keep, deep_prompts = None, None
        if keep is not None and self.prompt_depth > 1:
            deep_keep = keep if kept_idx is None else keep.gather(1, kept_idx)
            deep_prompts = self.mask_prompts[1:]  # (D-1, N, E)
            if kept_idx is not None:
                deep_prompts = deep_prompts[:, kept_idx]  # (D-1, B, K, E)
            else:
                deep_prompts = deep_prompts.unsqueeze(1)  # (D-1, 1, N, E)

        tr = v.transformer
        if not tr.batch_first:
            x = x.transpose(0, 1).contiguous()
        for d, block in enumerate(tr.resblocks):
            if deep_keep is not None and 1 <= d < self.prompt_depth:
                x = self._apply_deep(x, deep_keep, deep_prompts[d - 1], tr.batch_first)
            if tr.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, attn_mask=None)
        if not tr.batch_first:
            x = x.transpose(0, 1)

        pooled, _ = v._pool(x)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled

    @staticmethod
    def _apply_deep(x: Tensor, keep: Tensor, prompts: Tensor, batch_first: bool) -> Tensor:
        if not batch_first:
            x = x.transpose(0, 1)
        x = torch.cat([x[:, :1], _blend(x[:, 1:], keep, prompts)], dim=1)
        return x if batch_first else x.transpose(0, 1)

    def _patch_dropout(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """open_clip's PatchDropout (same RNG draws), also returning which patches survived."""
        pd = self.visual.patch_dropout
        if not isinstance(pd, PatchDropout) or not pd.training or pd.prob == 0.0:
            return x, None
        cls_tok, patches = x[:, :1], x[:, 1:]
        batch, num_tokens = patches.shape[0], patches.shape[1]
        num_keep = max(1, int(num_tokens * (1 - pd.prob)))
        rand = torch.randn(batch, num_tokens)
        idx = rand.topk(num_keep, dim=-1).indices.to(x.device)
        patches = patches[torch.arange(batch, device=x.device)[:, None], idx]
        return torch.cat((cls_tok, patches), dim=1), idx

    # ---- small prompts file -------------------------------------------------------
    def prompt_state_dict(self) -> dict[str, Tensor]:
        """The prompts (D, N, E) and the temperature on CPU: a few MB instead of the whole CLIP."""
        if self.mask_prompts is None:
            raise ValueError("mode 'full' has no prompts to save")
        return {PROMPT_KEY: self.mask_prompts.detach().cpu().clone(),
                LOGIT_SCALE_KEY: self.clip.logit_scale.detach().cpu().clone()}

    def load_prompt_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load prompts saved by ``prompt_state_dict``; the shape must match this model."""
        if self.mask_prompts is None:
            raise ValueError("mode 'full' has no prompts to load")
        if PROMPT_KEY not in state:
            raise ValueError(f"prompt state has no {PROMPT_KEY!r} entry (keys: {sorted(state)})")
        value = state[PROMPT_KEY]
        if tuple(value.shape) != tuple(self.mask_prompts.shape):
            raise ValueError(
                f"prompt shape {tuple(value.shape)} does not match this model's "
                f"(depth, patches, width) = {tuple(self.mask_prompts.shape)}"
            )
        with torch.no_grad():
            self.mask_prompts.copy_(value.to(self.mask_prompts.device, self.mask_prompts.dtype))
            if LOGIT_SCALE_KEY in state:  # files written before the temperature trained have none
                scale = self.clip.logit_scale
                scale.copy_(state[LOGIT_SCALE_KEY].to(scale.device, scale.dtype).reshape(scale.shape))
