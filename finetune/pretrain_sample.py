"""Train the small ``maskmine-sample`` CLIP on the sample set's (whole image, caption) pairs.

This stands in for a pretrained CLIP where none can be downloaded: an
open_clip model from ``transforms/model_configs/maskmine-sample.json``,
trained contrastively (symmetric InfoNCE, learnable temperature) on whole
images and their captions only, as real CLIP never sees masked regions. The
masked-crop gap OVSeg closes is therefore present here too.

Deterministic by seed: batches, caption choice and crops come from seeded
generators and torch runs with a fixed thread count. The checkpoint is an fp16
state_dict (open_clip loads it with ``pretrained=PATH``) written atomically;
token-embedding rows of tokens that never occur in the training captions or
the mining templates are zeroed (they were never trained, and zero rows keep
the committed file small once compressed). A JSON beside it records the
command, seed, steps, final loss, wall time and sanity metrics.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from maskmine.finetune.epoch_batches import epoch_batches
from maskmine.finetune.losses import clip_contrastive_loss
from maskmine.finetune.model import MAX_LOGIT_SCALE
from maskmine.finetune.optim import ADAM_BETAS, ADAM_EPS, optimizer_param_groups
from maskmine.finetune.pretrain_config import CONTRASTIVE_BATCH, PretrainConfig
from maskmine.transforms.atomic import atomic_torch_save, atomic_write
from maskmine.transforms.clip_models import MINING_TEMPLATES, SAMPLE_MODEL_NAME, register_configs
from maskmine.transforms import ranges
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.masked_crop import OPENAI_MEAN, OPENAI_STD, CropConfig, masked_crop, to_clip_tensor
from maskmine.transforms.torch_state import own_rng, torch_threads

log = logging.getLogger(__name__)

@dataclass
class SplitData:
    images: torch.Tensor  # (N, 3, S + 2*jitter, S + 2*jitter) uint8, stretched whole images
    captions: list[list[str]]
    file_names: list[str]


def _split_files(data: Path, split: str) -> tuple[Path, Path, Path]:
    ann = data / "annotations"
    return ann / f"captions_{split}.json", ann / f"instances_{split}.json", data / "images" / split


def load_split(data: str | Path, split: str, size: int, limit: int | None = None) -> SplitData:
    """Whole images stretched to ``size`` (the sample's images are near square) and their captions."""
    captions_path, _, image_dir = _split_files(Path(data), split)
    if not captions_path.is_file():
        raise UserError(f"{captions_path} not found: generate the set with `maskmine sample --out {data}`")
    coco = json.loads(captions_path.read_text())
    by_image: dict[int, list[tuple[int, str]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"])))
    entries = sorted(coco["images"], key=lambda e: e["id"])
    entries = [e for e in entries if e["id"] in by_image][:limit]
    pixels = np.empty((len(entries), size, size, 3), np.uint8)
    for i, entry in enumerate(entries):
        with Image.open(image_dir / entry["file_name"]) as img:
            pixels[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC))
    return SplitData(
        images=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        captions=[[c for _, c in sorted(by_image[e["id"]])] for e in entries],
        file_names=[e["file_name"] for e in entries],
    )


def build_model(seed: int) -> torch.nn.Module:
    register_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(SAMPLE_MODEL_NAME, pretrained=None)


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` -> CLIP-normalised float, as every crop is (``to_clip_tensor``, OpenAI's
    mean and std); the two permutes cancel, so the result has the input's strides."""
    return to_clip_tensor(batch.permute(0, 2, 3, 1), CropConfig(mean=OPENAI_MEAN, std=OPENAI_STD))


def batch_labels(text: torch.Tensor) -> torch.Tensor:
    """One label per caption row of ``text`` (B, L): equal token rows get the same label.

    Captions of different images can be identical ("a red circle"): the loss
    counts such pairs as positives, not negatives to push apart.
    """
    return torch.unique(text, dim=0, return_inverse=True)[1]


def used_tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """Sorted ids of every token the texts use (start/end tokens included)."""
    ids = set()
    for start in range(0, len(texts), 1024):
        ids.update(tokenizer(texts[start : start + 1024]).unique().tolist())
    return torch.tensor(sorted(ids))


def save_checkpoint(model: torch.nn.Module, path: str | Path, keep_tokens: torch.Tensor) -> int:
    """fp16 state_dict, unused token rows zeroed, written atomically; returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
    emb = state["token_embedding.weight"]
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[keep_tokens] = True
    emb[~keep] = 0
    atomic_torch_save(state, path)
    return path.stat().st_size


@torch.inference_mode()
def sanity_metrics(model: torch.nn.Module, tokenizer, data: str | Path, size: int, limit: int = 300) -> dict:
    """Whole-image retrieval on val and zero-shot classification of ground-truth masked crops.

    ``retrieval_r1``: image -> caption top-1 among the first caption of every
    val image (chance 1/N). ``crop_accuracy``: each visible val instance,
    masked-cropped as mining does, classified over the whole vocabulary with
    the mining templates (chance 1/classes).
    """
    from pycocotools import mask as mask_utils

    from maskmine.transforms.sample_world.vocabulary import CLASS_NAMES

    model.eval()
    val = load_split(data, "val", size, limit)
    if not val.captions:
        return {}
    img = F.normalize(model.encode_image(_normalise(val.images)).float(), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer([c[0] for c in val.captions])).float(), dim=-1)
    retrieval = float(((img @ txt.T).argmax(1) == torch.arange(len(val.captions))).float().mean())

    prompts = [t.format(n) for n in CLASS_NAMES for t in MINING_TEMPLATES]
    cls = F.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1)
    cls = F.normalize(cls.view(len(CLASS_NAMES), len(MINING_TEMPLATES), -1).mean(1), dim=-1)
    _, instances_path, image_dir = _split_files(Path(data), "val")
    coco = json.loads(instances_path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    wanted = set(val.file_names)
    files = {e["id"]: e["file_name"] for e in coco["images"] if e["file_name"] in wanted}
    # the committed checkpoint's figures (checkpoints/README.md) were measured on these PIL crops
    crop_config = CropConfig(input_size=size, resample="pil")
    crops, labels, cache = [], [], {}
    for ann in coco["annotations"]:
        if ann["image_id"] not in files:
            continue
        if ann["image_id"] not in cache:
            cache = {ann["image_id"]: np.asarray(Image.open(image_dir / files[ann["image_id"]]).convert("RGB"))}
        mask = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        crops.append(masked_crop(cache[ann["image_id"]], mask.astype(bool), crop_config).pixels)
        labels.append(CLASS_NAMES.index(names[ann["category_id"]]))
    emb = []
    for start in range(0, len(crops), 256):
        batch = to_clip_tensor(np.stack(crops[start : start + 256]), crop_config)
        emb.append(F.normalize(model.encode_image(batch).float(), dim=-1))
    pred = (torch.cat(emb) @ cls.T).argmax(1)
    labels_t = torch.tensor(labels)
    per_class = {
        CLASS_NAMES[c]: round(float((pred[labels_t == c] == c).float().mean()), 3)
        for c in range(len(CLASS_NAMES)) if (labels_t == c).any()
    }
    return {
        "val_images": len(val.captions),
        "retrieval_r1": round(retrieval, 4),
        "retrieval_chance": round(1 / len(val.captions), 4),
        "crops": len(labels),
        "crop_accuracy": round(float((pred == labels_t).float().mean()), 4),
        "crop_chance": round(1 / len(CLASS_NAMES), 4),
        "crop_accuracy_per_class": per_class,
    }


def pretrain(config: PretrainConfig, progress: bool = True, command: str | None = None) -> dict:
    """Train, save the checkpoint and its JSON record; returns the record."""
    with torch_threads(config.threads), own_rng(config.seed):  # the caller's torch settings come back after
        return _pretrain(config, progress, command)


def _pretrain(config: PretrainConfig, progress: bool = True, command: str | None = None) -> dict:
    """:func:`pretrain` with its threads and seed set: train, save the checkpoint and its JSON record; returns the record."""
    from tqdm import tqdm

    schedule = config.schedule
    ranges.POSITIVE_INT.check("steps", schedule.steps)
    CONTRASTIVE_BATCH.check("batch_size", schedule.batch_size)
    started = time.perf_counter()
    model = build_model(config.seed)
    tokenizer = open_clip.get_tokenizer(SAMPLE_MODEL_NAME)
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size)
    train = load_split(config.data, "train", size + 2 * config.jitter)
    n = len(train.captions)
    if n < schedule.batch_size:
        raise SettingError("batch_size", f"must be at most the {n} train images of {config.data}, got {schedule.batch_size}")
    per_image = max(len(c) for c in train.captions)
    flat = [c[k % len(c)] for c in train.captions for k in range(per_image)]
    tokens = tokenizer(flat).view(n, per_image, -1)
    keep = used_tokens(tokenizer, flat + [t.format("") for t in MINING_TEMPLATES])
    load_seconds = time.perf_counter() - started

    groups = optimizer_param_groups(model, schedule.lr, schedule.weight_decay, no_decay_names=("embedding",))
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    losses: list[float] = []
    batches = epoch_batches(torch.arange(n), schedule.batch_size, gen)
    bar = tqdm(range(schedule.steps), desc="pretrain sample CLIP", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        idx = next(batches)
        which = torch.randint(0, per_image, (len(idx),), generator=gen)
        text = tokens[idx, which]
        dx, dy = torch.randint(0, 2 * config.jitter + 1, (2,), generator=gen).tolist()
        images = _normalise(train.images[idx, :, dy : dy + size, dx : dx + size])
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(text), dim=-1)
        loss = clip_contrastive_loss(img, txt, model.logit_scale.exp(), batch_labels(text), duplicates="share")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    train_seconds = time.perf_counter() - started - load_seconds
    nbytes = save_checkpoint(model, config.out, keep)
    metrics = sanity_metrics(build_loaded(config.out), tokenizer, config.data, size, config.eval_images) if config.eval_images else {}
    record = {
        "command": command,
        "config": config.as_record(),
        "model": SAMPLE_MODEL_NAME,
        "train_images": n,
        "captions_per_image": per_image,
        "steps": schedule.steps,
        "samples_seen": schedule.steps * schedule.batch_size,
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "first_loss": round(losses[0], 4),
        "logit_scale": round(model.logit_scale.exp().item(), 3),
        "load_seconds": round(load_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": config.threads,
        "checkpoint_bytes": nbytes,
        "kept_token_rows": int(keep.numel()),
        "sanity": metrics,
    }
    atomic_write(Path(config.out).with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    return record


def build_loaded(checkpoint: str | Path) -> torch.nn.Module:
    """The saved checkpoint loaded back through open_clip, as every consumer loads it."""
    register_configs()
    model = open_clip.create_model(SAMPLE_MODEL_NAME, pretrained=str(checkpoint))
    model.eval()
    return model
