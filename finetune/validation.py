"""Validation during training: masked-region zero-shot accuracy on ground-truth shards."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from maskmine.finetune.data import PairStream, expand_shards, make_loader
from maskmine.finetune.model import MaskPromptCLIP, training_autocast
from maskmine.finetune.shard_context import read_context
from maskmine.finetune.train_config import TrainConfig
from maskmine.finetune.vocab import vocabulary_for_shards
from maskmine.transforms.clip_models import MINING_TEMPLATES, LoadedClip, encode_texts
from maskmine.transforms.errors import SettingError, UserError


@dataclass
class Validator:
    """Masked-region zero-shot accuracy over the validation shards' own vocabulary."""

    stream: PairStream
    text: torch.Tensor  # (V, D) template-ensemble embeddings of the validation vocabulary
    limit: int | None = None

    @torch.no_grad()
    def __call__(self, model: MaskPromptCLIP, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        top1 = top5 = n = 0
        text = self.text.to(device)
        k = min(5, text.shape[0])
        for batch in make_loader(self.stream, 0):
            if len(batch) == 0:
                continue
            with training_autocast(device):
                emb = model.encode_image(batch.pixels.to(device), batch.masks.to(device))
            scores = emb.float() @ text.t()
            best = scores.topk(k, dim=-1).indices.cpu()
            labels = batch.labels[:, None]
            top1 += int((best[:, :1] == labels).any(dim=1).sum())
            top5 += int((best == labels).any(dim=1).sum())
            n += len(batch)
            if self.limit is not None and n >= self.limit:
                break
        model.train(was_training)
        return {"val_top1": top1 / max(n, 1), "val_top5": top5 / max(n, 1), "val_samples": n}


def check_ground_truth_shards(urls: list[str], spec: str) -> None:
    """Validation shards must carry ground-truth classes: refuse those of a caption-noun run.

    The run folder of each shard says how it was labelled (``run.json``,
    ``identity.labels``, read beside the shards by their own scheme); shards
    outside a run folder are taken as they are.
    """
    for folder, run in sorted(read_context(urls).runs.items()):
        labels = run.identity.get("labels")
        if labels is not None and labels != "categories":
            raise SettingError(
                "val_shards", f"{spec!r}: {folder or '.'} was mined with `maskmine mine --labels {labels}`, "
                "so its nouns are caption guesses, not ground truth; mine validation shards with "
                "`maskmine mine --proposals coco-gt --labels categories`"
            )


def make_validator(c: TrainConfig, clip: LoadedClip) -> Validator | None:
    if not c.val_shards:
        return None
    urls = expand_shards(c.val_shards, "val_shards")
    check_ground_truth_shards(urls, c.val_shards)
    vocabulary = vocabulary_for_shards(urls)
    if not vocabulary:
        raise UserError(f"the validation shards {c.val_shards!r} hold no pairs")
    stream = PairStream(urls, vocabulary, clip.crop_config, c.batch_size, shuffle_buffer=0, seed=0)
    return Validator(stream, encode_texts(clip, vocabulary, MINING_TEMPLATES), c.val_limit)
