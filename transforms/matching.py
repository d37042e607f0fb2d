"""Pair every noun of an image with the proposal CLIP finds most similar."""
from __future__ import annotations

from typing import Sequence

import torch

from maskmine.transforms.records import Match


def match_nouns(
    crop_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    nouns: Sequence[str],
    logit_scale: float,
) -> list[Match]:
    """Argmax proposal per noun, with cosine score, softmax probability and margin.

    ``crop_embeddings`` (K, E) and ``text_embeddings`` (N, E) are L2-normalised.
    The probability is the softmax of ``logit_scale * cosine`` over the K
    proposals of the image (how CLIP would pick among them); the margin is the
    winner's cosine minus the runner-up's, None when there is one proposal.
    """
    if crop_embeddings.shape[0] == 0:
        raise ValueError("no proposals to match against")
    if text_embeddings.shape[0] != len(nouns):
        raise ValueError(f"{text_embeddings.shape[0]} text embeddings for {len(nouns)} nouns")
    scores = text_embeddings.float() @ crop_embeddings.float().T  # (N, K)
    probs = torch.softmax(scores * logit_scale, dim=1)
    top = torch.topk(scores, k=min(2, scores.shape[1]), dim=1)
    matches = []
    for i, noun in enumerate(nouns):
        best = int(top.indices[i, 0])
        margin = float(top.values[i, 0] - top.values[i, 1]) if scores.shape[1] > 1 else None
        matches.append(
            Match(
                noun=noun,
                proposal_index=best,
                score=float(scores[i, best]),
                probability=float(probs[i, best]),
                margin=margin,
            )
        )
    return matches
