"""Losses for finetuning CLIP on (masked crop, noun) pairs (and pretraining the sample CLIP on (image, caption) pairs).

Both take ``logit_scale`` as the similarity *multiplier* (``exp`` of CLIP's
learnable log temperature, e.g. ``MaskPromptCLIP.logit_scale``), as a float or
a 0-d tensor, and embeddings that are already L2-normalised.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from maskmine.finetune.train_choices import LOSSES, LossKind  # noqa: F401 - imported from here too


def _check(image_emb: Tensor, text_emb: Tensor, labels: Tensor) -> None:
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"embeddings must be (B, E) and (*, E), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != image_emb.shape[0]:
        raise ValueError(f"labels must be (B,) with B={image_emb.shape[0]}, got {tuple(labels.shape)}")


DuplicateTexts = Literal["mask", "share"]
"""What :func:`clip_contrastive_loss` does with in-batch entries of the same label: ``"mask"``
drops them from the softmax (``maskmine train``); ``"share"`` makes them positives too
(``pretrain-sample-clip``, whose identical captions of different images are such entries)."""
DUPLICATE_TEXTS: tuple[str, ...] = get_args(DuplicateTexts)


def clip_contrastive_loss(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, labels: Tensor,
    duplicates: DuplicateTexts = "mask",
) -> Tensor:
    """CLIP's symmetric in-batch InfoNCE, with same-noun false negatives masked out.

    Row i pairs crop i with the text of its noun ``labels[i]`` ("a photo of a
    {noun}."). logits = logit_scale * image_emb @ text_emb.T (B, B); the loss is
    the mean of the image->text cross entropy over rows and the text->image
    cross entropy over columns, target = the diagonal.

    Duplicate nouns: when labels[j] == labels[i] for j != i, text j is the same
    noun as text i, so treating it as a negative for crop i would push the crop
    away from its own class. Such entries are excluded from the softmax
    denominator (their logits set to -inf) in BOTH directions: for image row i
    the columns j != i with labels[j] == labels[i] are dropped, and likewise for
    text column i the rows j != i with the same label. The positive (diagonal)
    is always kept, so with all-distinct labels this is exactly CLIP's loss, and
    each row's loss is -log(exp(s_ii) / sum_{j: j==i or labels[j]!=labels[i]} exp(s_ij)).

    ``duplicates="share"`` keeps every entry in the softmax and spreads each
    row's target evenly over the entries of its label instead (soft targets):
    row i's loss is -mean_{j: labels[j]==labels[i]} log softmax_j(s_i.), in
    both directions. This is ``pretrain-sample-clip``'s loss, computed op for
    op as it always was, so its checkpoint's training is unchanged.
    """
    _check(image_emb, text_emb, labels)
    if text_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(f"text_emb must have one row per crop: {text_emb.shape[0]} != {image_emb.shape[0]}")
    if duplicates not in DUPLICATE_TEXTS:
        raise ValueError(f"duplicates must be one of {DUPLICATE_TEXTS}, got {duplicates!r}")
    logits = logit_scale * image_emb @ text_emb.t()
    b = logits.shape[0]
    same = labels[:, None] == labels[None, :]
    if duplicates == "share":
        weights = same.to(logits.device).float()
        target = weights / weights.sum(1, keepdim=True)
        return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    false_neg = same.to(logits.device) & ~eye  # symmetric, so the same mask serves both directions
    logits = logits.masked_fill(false_neg, float("-inf"))
    target = torch.arange(b, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def vocab_cross_entropy(
    image_emb: Tensor, vocab_text_emb: Tensor, logit_scale: Tensor | float, labels: Tensor
) -> Tensor:
    """Cross entropy of each crop over the whole noun vocabulary.

    ``vocab_text_emb`` (C, E) holds one (template-averaged, normalised) text
    embedding per vocabulary noun and ``labels`` (B,) are indices into it;
    logits = logit_scale * image_emb @ vocab_text_emb.T (B, C). No in-batch
    false negatives arise: each class appears once in the vocabulary.
    """
    _check(image_emb, vocab_text_emb, labels)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab_text_emb.shape[0]):
        raise ValueError(f"labels must index the vocabulary of {vocab_text_emb.shape[0]} nouns")
    logits = logit_scale * image_emb @ vocab_text_emb.t()
    return F.cross_entropy(logits, labels.to(logits.device))
