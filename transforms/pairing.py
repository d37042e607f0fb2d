"""Turn matched (noun, proposal) choices into PairSamples ready for the shards."""
from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskmine.transforms.clip_models import TextEmbeddingCache
from maskmine.transforms.masked_crop import CropConfig, MaskedCrop, mask_box, masked_crops
from maskmine.transforms.matching import match_nouns
from maskmine.transforms.records import (
    DROP_BELOW_MIN_SCORE,
    LABELS_CATEGORIES,
    LABELS_NOUNS,
    Match,
    MiningItem,
    PairSample,
)


MAX_SLUG = 64  # longest noun slug kept whole in a key (file names stay far below 255 bytes)


def noun_slug(noun: str) -> str:
    """Key-safe form of a noun: lower case, runs of other characters become '_'.

    WebDataset splits a member name at its first dot, so keys hold no dots.
    A slug longer than MAX_SLUG is cut and ends in 12 hex digits of the noun's
    sha1, so keys (and the audit's file names) stay bounded and distinct.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", noun.lower()).strip("_") or "x"
    if len(slug) > MAX_SLUG:
        slug = f"{slug[:MAX_SLUG - 13]}_{hashlib.sha1(noun.encode('utf-8')).hexdigest()[:12]}"
    return slug


def unique_keys(image_id: int, names: Sequence[str]) -> list[str]:
    """``{image_id}-{slug}``, with ``-2``, ``-3``... where two names share a slug."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        base = f"{image_id}-{noun_slug(name)}"
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return keys


def encode_jpg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def mask_to_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_columns(mask: np.ndarray) -> dict:
    """A full-image mask as the pair schema's ``mask_rle``, ``height``, ``width`` (COCO RLE)."""
    rle = mask_to_rle(mask)
    return {"mask_rle": rle["counts"], "height": rle["size"][0], "width": rle["size"][1]}


def crops_for(item: MiningItem, config: CropConfig, device: torch.device | None = None,
              out: torch.Tensor | None = None) -> list[MaskedCrop]:
    """The item's masked crops, cut on ``device`` (the CLIP's: on a GPU all masks at once), their CLIP
    inputs written into ``out`` if given (see :func:`masked_crops`)."""
    assert item.image is not None and item.proposals is not None
    return masked_crops(item.image, item.proposals.masks, config, device=device, out=out)


def category_matches(scores: torch.Tensor, probs: torch.Tensor, labels: Sequence[str]) -> list[Match]:
    """In ``--labels categories`` mode each proposal keeps its own category.

    ``scores``/``probs`` are (K, K): row i is label i's text against all crops.
    """
    matches = []
    for i, label in enumerate(labels):
        others = torch.cat([scores[i, :i], scores[i, i + 1 :]])
        margin = float(scores[i, i] - others.max()) if others.numel() else None
        matches.append(Match(label, i, float(scores[i, i]), float(probs[i, i]), margin))
    return matches


@dataclass
class ImageMatches:
    """One image's matching result, before its pairs are encoded: the chosen proposal per label."""

    names: list[str]
    matches: list[Match]
    caption_ids: list[list[int]]
    captions: list[list[str]]


def match_item(
    item: MiningItem, crop_emb: torch.Tensor, text_cache: TextEmbeddingCache, logit_scale: float,
    labels: str = LABELS_NOUNS,
) -> ImageMatches:
    """Match an image's labels (caption nouns or its proposals' categories) to its crop embeddings."""
    if labels == LABELS_CATEGORIES:
        names = list(item.proposals.labels or [])
        text = text_cache.get(names)
        scores = text.float() @ crop_emb.float().T
        probs = torch.softmax(scores * logit_scale, dim=1)
        matches = category_matches(scores, probs, names)
        return ImageMatches(names, matches, [[] for _ in names], [[] for _ in names])
    names = [n.noun for n in item.nouns]
    matches = match_nouns(crop_emb, text_cache.get(names), names, logit_scale)
    caption_ids = [list(n.caption_ids) for n in item.nouns]
    by_id = {c.caption_id: c.text for c in item.record.captions}
    return ImageMatches(names, matches, caption_ids, [[by_id[i] for i in ids] for ids in caption_ids])


def matched_crops(matched: ImageMatches, crops: Sequence[MaskedCrop]) -> dict[int, MaskedCrop]:
    """The crops of the chosen proposals only (the others can go once the image is matched).

    Each kept crop gets a CLIP input of its own: the crops of a call share one (K, 3, S, S) tensor
    (:func:`masked_crops`), which a kept view would hold whole.
    """
    kept = {}
    for m in matched.matches:
        if m.proposal_index not in kept:
            crop = crops[m.proposal_index]
            kept[m.proposal_index] = replace(crop, clip_input=crop.clip_input.clone())
    return kept


def build_pairs(
    item: MiningItem, matched: ImageMatches, crops: Sequence[MaskedCrop] | dict[int, MaskedCrop],
    clip_name: str, clip_pretrained: str, *, labels: str = LABELS_NOUNS, min_score: float | None = None,
) -> tuple[list[PairSample], Counter]:
    """An image's PairSamples (mask RLE, box, JPEG crop, PNG mask encoded) and its drops by reason."""
    keys = unique_keys(item.record.image_id, matched.names)
    pairs, dropped = [], Counter()
    for key, match, cap_ids, cap_texts in zip(keys, matched.matches, matched.caption_ids, matched.captions):
        if min_score is not None and match.score < min_score:
            dropped[DROP_BELOW_MIN_SCORE] += 1
            continue
        crop = crops[match.proposal_index]
        mask = item.proposals.masks[match.proposal_index]
        pairs.append(
            PairSample(
                key=key,
                image_id=item.record.image_id,
                file_name=item.record.file_name,
                noun=match.noun,
                caption_ids=cap_ids,
                captions=cap_texts,
                proposal_index=match.proposal_index,
                box=list(mask_box(mask)),
                **mask_columns(mask),
                score=match.score,
                probability=match.probability,
                margin=match.margin,
                proposal_backend=item.proposals.backend,
                proposal_checkpoint=item.proposals.checkpoint,
                clip_model=clip_name,
                clip_pretrained=clip_pretrained,
                label_source="category" if labels == LABELS_CATEGORIES else "caption",
                crop_jpg=encode_jpg(crop.pixels),
                crop_mask_png=encode_png(crop.mask),
            )
        )
    return pairs, dropped

