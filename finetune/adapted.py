"""Rebuild a CLIP adapted by ``maskmine train`` for eval and mining.

``load_adapted(path)`` takes an export folder (``config.json`` + ``model.pt``
and/or ``prompts.pt`` + ``vocabulary.json``), a training run folder (its newest
checkpoint is used) or a file inside an export folder. Full modes rebuild CLIP
from ``model.pt`` through open_clip itself (``pretrained=model.pt``); prompt
mode rebuilds the frozen base CLIP from the recorded ``clip_pretrained`` and
checks that its weights are the ones the prompts were trained on.

The text tower is never trained, so ``maskmine.transforms.clip_models.encode_texts(adapted.clip, ...)``
gives the text side; ``adapted.encode_crops`` gives the image side with masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from maskmine.finetune.checkpoint import (
    MODEL_FILE,
    PROMPTS_FILE,
    VOCAB_FILE,
    ExportConfig,
    read_export_config,
    resolve_export,
    weights_fingerprint,
)
from maskmine.finetune.model import MaskPromptCLIP, Mode, trains_clip, uses_prompts
from maskmine.finetune.vocab import read_vocabulary_file
from maskmine.transforms.clip_models import LoadedClip, load_clip


@dataclass
class AdaptedClip:
    """An adapted CLIP: ``clip`` (open_clip model, tokenizer, crop geometry), the
    mask-aware ``model`` around the same CLIP module, and the training vocabulary."""

    clip: LoadedClip
    model: MaskPromptCLIP
    vocabulary: list[str]
    mode: Mode
    config: ExportConfig
    folder: Path

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @torch.inference_mode()
    def encode_crops(self, pixels: torch.Tensor, masks: torch.Tensor | None, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised float32 embeddings (N, D) on CPU of normalised crops (N, 3, S, S).

        ``masks`` (N, S, S), True on the region's pixels, selects the patches
        that get mask prompts; it is ignored in mode ``full``. ``None`` means
        "no masked patch" (the plain CLIP forward in every mode).
        """
        size = self.clip.crop_config.input_size
        if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (size, size):
            raise ValueError(f"pixels must be (N, 3, {size}, {size}) normalised crops, got {tuple(pixels.shape)}")
        if masks is not None and (masks.shape[0] != pixels.shape[0] or tuple(masks.shape[-2:]) != (size, size)):
            raise ValueError(f"masks must be (N, {size}, {size}), got {tuple(masks.shape)}")
        out = []
        for start in range(0, pixels.shape[0], batch_size):
            chunk = pixels[start : start + batch_size].to(self.device, torch.float32)
            mchunk = None if masks is None else masks[start : start + batch_size].to(self.device).bool()
            emb = self.model.encode_image(chunk, mchunk, normalize=False).float()
            out.append(F.normalize(emb, dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.model.clip.visual.output_dim)
        return torch.cat(out)


def load_adapted(path: str | Path, device: str = "cpu") -> AdaptedClip:
    """Rebuild the adapted CLIP saved at ``path`` (see the module docstring), in eval mode."""
    folder = resolve_export(path)
    config = read_export_config(folder)
    crop = config.crop_config()
    activation = config.clip_activation or "gelu"  # as it was trained (older exports: open_clip's config as is)
    if trains_clip(config.mode):
        weights = folder / MODEL_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} is a {config.mode!r} export without {MODEL_FILE}")
        clip = load_clip(config.clip_model, str(weights), device=device, crop=crop, activation=activation)
    else:
        clip = load_clip(config.clip_model, config.clip_pretrained, device=device, crop=crop, activation=activation)
        found = weights_fingerprint(clip.model)
        if found != config.base_fingerprint:
            raise ValueError(
                f"the base CLIP {config.clip_model}/{config.clip_pretrained} loaded for {folder} is not "
                "the one its prompts were trained on (weights fingerprint differs)"
            )
    clip.crop_config = crop
    depth = config.prompt_depth if uses_prompts(config.mode) else None
    model = MaskPromptCLIP(clip.model, mode=config.mode, prompt_depth=depth)
    if model.uses_prompts:
        prompts = folder / PROMPTS_FILE
        if not prompts.is_file():
            raise FileNotFoundError(f"{folder} is a {config.mode!r} export without {PROMPTS_FILE}")
        model.load_prompt_state_dict(torch.load(prompts, map_location="cpu", weights_only=True))
    model.to(clip.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return AdaptedClip(
        clip=clip,
        model=model,
        vocabulary=read_vocabulary_file(folder / VOCAB_FILE),
        mode=config.mode,
        config=config,
        folder=folder,
    )
