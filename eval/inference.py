"""Two-stage open-vocabulary segmentation of one image.

proposals (class-agnostic masks) → masked crops (the shared
:func:`maskmine.transforms.masked_crop.masked_crop`) → CLIP class probabilities over the
class names (prompt-template ensemble) → a label map, either

* MaskFormer's semantic inference (:mod:`maskmine.eval.semantic`) as OVSeg runs it:
  every mask's soft probability map adds its class distribution to its pixels,
  optionally combined with the proposal model's own class scores by OVSeg's
  geometric ensemble ``p = p_proposal ** (1 - lam) * p_clip ** lam``; or
* SAM granularity fusion (:mod:`maskmine.eval.fusion`) when ``granularity`` is given.

The region encoder is anything with ``encode_crops(pixels, masks)`` — plain
CLIP ignores the masks, the adapted (mask-prompt-tuned) CLIP uses them — and
the text side always comes from the encoder's :class:`LoadedClip`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from maskmine.eval.fusion import FusionMode, granularity_fusion
from maskmine.eval.settings import DEFAULT_MASK_THRESHOLD
from maskmine.eval.semantic import argmax_labels, ensemble_probs, semantic_map
from maskmine.eval.shortest_edge import resize_label_map, scores_to_size
from maskmine.eval.templates import VILD_TEMPLATES
from maskmine.transforms.clip_models import ClipSpec, LoadedClip, encode_crops, encode_texts
from maskmine.transforms.devices import resolve_device
from maskmine.transforms.errors import UserError
from maskmine.transforms.masked_crop import masked_crops
from maskmine.transforms.records import ProposalSet


class RegionEncoder(Protocol):
    """Embeds masked crops: ``(N, 3, S, S)`` normalised pixels + ``(N, S, S)`` masks → ``(N, D)`` unit vectors."""

    def encode_crops(self, pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PlainClipEncoder:
    """Off-the-shelf CLIP: sees the masked crop only; the mask itself is not used."""

    clip: LoadedClip
    batch_size: int = 64

    def encode_crops(self, pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return encode_crops(self.clip, pixels, self.batch_size)


@dataclass
class RegionScores:
    probs: np.ndarray  # (Q, C) softmax over the class names; zero rows for empty masks
    valid: np.ndarray  # (Q,) bool: the mask was non-empty and classified


OVSEG_TEMPERATURE = 100.0  # OVSeg's get_sim_logits default (clip_adapter/adapter.py line 67)


@dataclass
class RegionClassifier:
    """CLIP class probabilities of mask regions, text embeddings cached per class list.

    ``temperature`` multiplies the cosine similarities before the softmax: OVSeg's fixed
    100 by default (``ClipAdapter.get_sim_logits(..., temperature=100)``, ov-seg@36f49d4
    open_vocab_seg/modeling/clip_adapter/adapter.py lines 63-69); None uses the model's
    own ``exp(logit_scale)`` (the same 100 for OpenAI's CLIP, not for other CLIPs).
    """

    encoder: RegionEncoder
    clip: LoadedClip
    templates: tuple[str, ...] = VILD_TEMPLATES
    temperature: Optional[float] = OVSEG_TEMPERATURE
    _text_cache: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """(C, D) template-ensemble embeddings: per-template L2-normalised, averaged, normalised."""
        key = tuple(class_names)
        if key not in self._text_cache:
            if not key:
                raise UserError("no class names to classify into")
            self._text_cache[key] = encode_texts(self.clip, list(key), self.templates)
        return self._text_cache[key]

    def scale(self) -> float:
        return float(self.temperature) if self.temperature is not None else self.clip.logit_scale

    @torch.inference_mode()
    def classify(self, image: np.ndarray, masks: np.ndarray, class_names: Sequence[str]) -> RegionScores:
        """(Q, H, W) masks of ``image`` → class probabilities of each region."""
        masks = np.asarray(masks, dtype=bool)
        q = masks.shape[0]
        text = self.text_embeddings(class_names)
        probs = np.zeros((q, len(class_names)), dtype=np.float32)
        valid = masks.reshape(q, -1).any(axis=1) if q else np.zeros(0, dtype=bool)
        rows = np.flatnonzero(valid)
        if rows.size == 0:
            return RegionScores(probs=probs, valid=valid)
        config = self.clip.crop_config
        pixels = torch.empty((rows.size, 3, config.input_size, config.input_size), dtype=torch.float32,
                             device=self.clip.device)
        crops = masked_crops(image, masks[rows], config, device=self.clip.device, out=pixels)  # batched on a GPU
        crop_masks = torch.from_numpy(np.stack([c.mask for c in crops]))
        emb = self.encoder.encode_crops(pixels, crop_masks).float().cpu()
        logits = self.scale() * emb @ text.float().T
        probs[rows] = torch.softmax(logits, dim=-1).numpy()
        return RegionScores(probs=probs, valid=valid)


@dataclass
class Segmentation:
    """One image's result; ``labels`` holds ``empty_label`` where no mask decided a class."""

    labels: np.ndarray  # (H, W) int32
    proposals: ProposalSet
    clip_probs: np.ndarray  # (Q, C)
    class_probs: np.ndarray  # (Q, C) what decided the labels (ensembled when lam is set)
    kept: Optional[list[int]] = None  # granularity fusion: indices of the masks that were used


def binarised_proposals(proposals: ProposalSet, shape: tuple[int, int],
                        mask_threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The (Q, H, W) binary masks of ``proposals`` of an image of ``shape``, and their soft masks (None
    for boolean masks): soft masks (``soft_masks``, or float ``masks``) ``> mask_threshold`` (OVSeg's
    strict test), boolean masks as they are; ValueError where the shapes do not match."""
    raw = np.asarray(proposals.masks)
    if raw.ndim != 3 or raw.shape[1:] != tuple(shape):
        raise ValueError(f"proposal masks {raw.shape[1:]} do not match the image {tuple(shape)}")
    soft = proposals.soft_masks
    if soft is not None:
        soft = np.asarray(soft, dtype=np.float32)
        if soft.shape != raw.shape:
            raise ValueError(f"soft masks {soft.shape} do not match the masks {raw.shape}")
        return soft > mask_threshold, soft
    if raw.dtype == bool:
        return raw, None
    soft = raw.astype(np.float32)  # float masks without a separate binary version
    return soft > mask_threshold, soft


def segment(
    image: np.ndarray,
    class_names: Sequence[str],
    proposals: ProposalSet,
    classifier: RegionClassifier,
    *,
    granularity: Optional[float] = None,
    proposal_class_probs: Optional[np.ndarray] = None,
    ensemble_lambda: Optional[float] = None,
    empty_label: int = 255,
    fusion_mode: FusionMode = "assigned",
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    hard_masks: bool = False,
    output_size: Optional[tuple[int, int]] = None,
) -> Segmentation:
    """Classify ``proposals`` of ``image`` into ``class_names`` and paint the label map.

    Every mask is binarised ``mask > mask_threshold`` (OVSeg's MASK_THR, 0.4): the
    binary mask makes the crop, and a mask with no pixel above it is not classified
    (OVSeg's valid flag). Boolean masks (ground truth, SAM) are their own binary mask.

    ``granularity`` None: semantic inference. By default OVSeg's:
    ``scores[c] = sum_q p(c|q) * m_q`` over the *soft* masks (``proposals.soft_masks``
    when the backend keeps them, else the boolean masks as 0/1), then argmax: with
    CLIP alone only the valid masks take part; with the ensemble every mask does
    (an unclassified one keeps ``p_proposal ** (1 - lam)``). Every pixel gets a class
    (argmax; a pixel no mask touches gets class 0, as detectron2's argmax); only an
    image without any proposal is all ``empty_label``.
    ``hard_masks=True`` is maskmine's earlier variant: the binary masks are summed,
    unclassified masks add nothing, and pixels no classified mask covers get ``empty_label``.

    A float ``granularity``: SAM granularity fusion on the binary masks (see
    :mod:`maskmine.eval.fusion`: 1 keeps each class's single best mask, lower values
    merge more masks into a class).

    ``ensemble_lambda`` needs ``proposal_class_probs`` (Q, C); None means CLIP alone.

    ``output_size`` (height, width): ``image`` is a resized copy (OVSeg's test size, see
    :mod:`maskmine.eval.shortest_edge`) and the labels are wanted at this size: the (C, h, w)
    score map is interpolated bilinearly to it before the argmax, as OVSeg's ``sem_seg_postprocess``;
    a fused label map (``granularity``) has no scores and is resized with nearest neighbour.
    """
    if 0 <= empty_label < len(class_names):
        raise ValueError(f"empty_label {empty_label} is a class id for {len(class_names)} classes")
    height, width = image.shape[:2]
    masks, soft = binarised_proposals(proposals, (height, width), mask_threshold)
    scores = classifier.classify(image, masks, class_names)
    probs: np.ndarray = scores.probs
    if ensemble_lambda is not None and ensemble_lambda <= 0:
        ensemble_lambda = None  # OVSeg's CLIP_ENSEMBLE_WEIGHT 0: CLIP alone
    if ensemble_lambda is not None:
        if proposal_class_probs is None:
            raise UserError("the ensemble weight needs class scores from the proposal model")
        probs = ensemble_probs(proposal_class_probs, scores.probs, ensemble_lambda, scores.valid).numpy()
    out_shape = tuple(output_size) if output_size is not None else (height, width)
    if masks.shape[0] == 0:
        labels = np.full(out_shape, empty_label, dtype=np.int32)
        return Segmentation(labels, proposals, scores.probs, probs, [] if granularity is not None else None)
    if granularity is not None or hard_masks:
        probs = np.where(scores.valid[:, None], probs, 0.0).astype(np.float32)
        if granularity is not None:
            fused = granularity_fusion(masks, probs, granularity, ignore_label=empty_label, mode=fusion_mode)
            return Segmentation(
                resize_label_map(fused.labels.astype(np.int32), out_shape), proposals, scores.probs, probs,
                [k.index for k in fused.kept],
            )
        scores_map = scores_to_size(semantic_map(masks, probs), out_shape)
        labels = argmax_labels(scores_map, empty_label=empty_label).numpy().astype(np.int32)
        return Segmentation(labels, proposals, scores.probs, probs)
    # OVSeg's semantic inference on the soft masks
    weights = soft if soft is not None else masks.astype(np.float32)
    rows = np.arange(len(probs)) if ensemble_lambda is not None else np.flatnonzero(scores.valid)
    probs = np.asarray(probs, dtype=np.float32)
    scores_map = scores_to_size(semantic_map(weights[rows], probs[rows]), out_shape)
    labels = argmax_labels(scores_map).numpy().astype(np.int32)
    used = np.zeros(len(probs), dtype=np.float32)
    used[rows] = 1.0
    return Segmentation(labels, proposals, scores.probs, probs * used[:, None])


def build_classifier(
    clip: ClipSpec,
    adapted: Optional[str] = None,
    templates: Sequence[str] = VILD_TEMPLATES,
    temperature: Optional[float] = OVSEG_TEMPERATURE,
) -> RegionClassifier:
    """Plain CLIP as ``clip`` says, or the adapted CLIP of a finetune run, on ``clip.device``.

    With ``adapted`` (a ``maskmine train`` export or run folder) the model names and crop
    settings are taken from that run and ``clip``'s model, pretrained and crop are ignored.
    """
    if adapted:
        try:
            from maskmine.finetune.adapted import load_adapted
        except ImportError as exc:
            raise UserError(
                "`adapted` needs finetune/adapted.py (the adapted-CLIP loader), which is not installed"
            ) from exc
        model = load_adapted(adapted, device=str(resolve_device(clip.device)))
        return RegionClassifier(encoder=model, clip=model.clip, templates=tuple(templates),
                                temperature=temperature)
    loaded = clip.load()
    return RegionClassifier(encoder=PlainClipEncoder(loaded), clip=loaded, templates=tuple(templates),
                            temperature=temperature)
