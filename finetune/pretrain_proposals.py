"""Train the small class-agnostic Mask2Former behind ``--proposal-checkpoint sample``.

OVSeg's first stage is a MaskFormer trained on COCO panoptic whose queries are
used as class-agnostic regions. No such network can be downloaded here, so this
trains a small Hugging Face ``Mask2FormerForUniversalSegmentation`` (the code
path every real ``--proposals maskformer`` checkpoint runs) on the sample
world's train split: every visible instance mask of ``instances_train.json``,
things and stuff bands alike (as COCO panoptic has both), is one target of a
single class ("object"); the model learns masks and objectness, not classes.
The loss is the model's own (Hungarian matching; mask BCE + dice + class
cross-entropy with down-weighted "no object", auxiliary losses on every
decoder layer).

Images are resized by the checkpoint's own image processor (a fixed square,
:data:`INPUT_SIZE`), so training sees exactly what inference sees; targets are
the instance masks resized to the same square (nearest). Deterministic for a
given seed and thread count. The checkpoint is a ``save_pretrained`` folder
(config, fp16 safetensors, image processor) plus a JSON record of the command,
steps, losses, time and val recall.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskmine.finetune.epoch_batches import epoch_batches
from maskmine.finetune.pretrain_config import ProposalPretrainConfig
from maskmine.transforms.atomic import atomic_write, replacing_folder
from maskmine.transforms import ranges
from maskmine.transforms.errors import SettingError, UserError
from maskmine.transforms.torch_state import own_rng, torch_threads

log = logging.getLogger(__name__)

INPUT_SIZE = 128  # the model's square input; the sample world's images are 224-320 px
OBJECT_LABEL = "object"
MIN_TARGET_PIXELS = 4  # instances smaller than this at INPUT_SIZE are dropped from the targets


def sample_mask2former_config(num_queries: int = 50) -> Any:
    """The architecture: a 4-stage Swin (embed 32) and a 64-wide pixel decoder and transformer decoder."""
    from maskmine.transforms.proposals.maskformer import swin_mask2former_config

    return swin_mask2former_config(
        64, swin_embed=32, swin_depths=[2, 2, 2, 2], swin_heads=[1, 2, 4, 8], image_size=INPUT_SIZE,
        encoder_layers=2, decoder_layers=4, attention_heads=4, feedforward=256, num_queries=num_queries, num_labels=1,
        drop_path_rate=0.0, id2label={0: OBJECT_LABEL}, label2id={OBJECT_LABEL: 0}, train_num_points=1024,
    )


def sample_processor() -> Any:
    """Resize to the fixed square input, ImageNet normalisation (Mask2Former's defaults otherwise)."""
    from transformers import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor(size={"height": INPUT_SIZE, "width": INPUT_SIZE})


@dataclass
class InstanceData:
    """A split at the model's input size: images and one instance-id map per image."""

    images: torch.Tensor  # (N, S, S, 3) uint8, resized by the image processor
    instances: torch.Tensor  # (N, S, S) uint8; 0 = no instance, k = the image's k-th instance
    counts: list[int]  # instances per image (the ids 1..count are present)


def _decode(segmentation: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def load_instances(data: str | Path, split: str, processor: Any, limit: int | None = None) -> InstanceData:
    """Images resized by ``processor`` and their visible instance masks (disjoint) as id maps."""
    root = Path(data)
    path = root / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise UserError(f"{path} not found: generate the set with `maskmine sample --out {data}`")
    coco = json.loads(path.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd"):
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
    entries = [e for e in sorted(coco["images"], key=lambda e: e["id"]) if e["id"] in by_image][:limit]
    size = INPUT_SIZE
    images = torch.empty((len(entries), size, size, 3), dtype=torch.uint8)
    instances = torch.zeros((len(entries), size, size), dtype=torch.uint8)
    counts: list[int] = []
    for i, entry in enumerate(entries):
        with Image.open(root / "images" / split / entry["file_name"]) as img:
            pixels = np.array(img.convert("RGB"))
        resized = processor(images=[pixels], do_rescale=False, do_normalize=False, return_tensors="pt",
                            input_data_format="channels_last")["pixel_values"][0]
        images[i] = resized.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        ids = np.zeros(pixels.shape[:2], np.uint8)
        for k, ann in enumerate(by_image[entry["id"]][:254]):
            ids[_decode(ann["segmentation"])] = k + 1
        small = np.asarray(Image.fromarray(ids).resize((size, size), Image.NEAREST))
        present = [v for v in np.unique(small) if v and (small == v).sum() >= MIN_TARGET_PIXELS]
        relabelled = np.zeros_like(small)
        for new, old in enumerate(present, start=1):
            relabelled[small == old] = new
        instances[i] = torch.from_numpy(relabelled)
        counts.append(len(present))
    return InstanceData(images=images, instances=instances, counts=counts)


def normalise(images: torch.Tensor, processor: Any) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 -> the processor's rescaled, normalised ``(B, 3, S, S)`` float."""
    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float() * float(processor.rescale_factor)
    return (x - mean) / std


def targets(instances: torch.Tensor, counts: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image the ``(n, S, S)`` float masks and ``(n,)`` labels (all class 0, "object")."""
    masks, labels = [], []
    for ids, n in zip(instances, counts):
        values = torch.arange(1, n + 1, dtype=ids.dtype).view(-1, 1, 1)
        masks.append((ids[None] == values).float())
        labels.append(torch.zeros(n, dtype=torch.long))
    return masks, labels


def build_model(config: ProposalPretrainConfig) -> Any:
    from transformers import Mask2FormerForUniversalSegmentation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Mask2FormerForUniversalSegmentation(sample_mask2former_config(config.num_queries))


def save_checkpoint(model: Any, processor: Any, out: str | Path) -> int:
    """``save_pretrained`` folder with fp16 weights, replaced atomically; returns its bytes."""
    with replacing_folder(out) as tmp:
        model.to(torch.float16).save_pretrained(tmp)
        model.to(torch.float32)
        processor.save_pretrained(tmp)
    return sum(p.stat().st_size for p in Path(out).iterdir())


def pretrain_proposals(config: ProposalPretrainConfig, progress: bool = True, command: str | None = None) -> dict:
    """Train, save the checkpoint folder and its JSON record; returns the record."""
    with torch_threads(config.threads), own_rng(config.seed):  # the caller's torch settings come back after
        return _pretrain_proposals(config, progress, command)


def _pretrain_proposals(config: ProposalPretrainConfig, progress: bool = True, command: str | None = None) -> dict:
    """:func:`pretrain_proposals` with its threads and seed set: train, save the checkpoint folder and its JSON record; returns the record."""
    from tqdm import tqdm

    schedule = config.schedule
    for name in ("steps", "batch_size"):
        ranges.POSITIVE_INT.check(name, getattr(schedule, name))
    started = time.perf_counter()
    processor = sample_processor()
    train = load_instances(config.data, "train", processor)
    usable = torch.tensor([c > 0 for c in train.counts])
    index = torch.nonzero(usable).flatten()
    if index.numel() < schedule.batch_size:
        raise SettingError("batch_size", f"must be at most the {index.numel()} train images with instances of "
                           f"{config.data}, got {schedule.batch_size}")
    load_seconds = time.perf_counter() - started

    model = build_model(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    batches = epoch_batches(index, schedule.batch_size, gen)
    losses: list[float] = []
    bar = tqdm(range(schedule.steps), desc="pretrain sample proposals", unit="step", disable=not progress,
               file=sys.stderr)
    for step in bar:
        idx = next(batches)
        images, ids = train.images[idx], train.instances[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(2), images)
        ids = torch.where(flip.view(-1, 1, 1), ids.flip(2), ids)
        mask_labels, class_labels = targets(ids, [train.counts[int(i)] for i in idx])
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        out = model(pixel_values=normalise(images, processor), mask_labels=mask_labels, class_labels=class_labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # Mask2Former's full-model clipping
        optimizer.step()
        losses.append(float(out.loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if not progress and step % 100 == 0:
                log.info("step %d loss %.3f", step, np.mean(losses[-20:]))
    train_seconds = time.perf_counter() - started - load_seconds
    nbytes = save_checkpoint(model, processor, config.out)
    recall = {}
    if config.eval_images:
        from maskmine.transforms.proposals.recall import measure_recall
        from maskmine.transforms.proposals.maskformer import MaskFormerProposals, load_sample_maskformer

        model, processor = load_sample_maskformer(config.out)
        generator = MaskFormerProposals(config.out, model=model, processor=processor, device="cpu")
        recall = measure_recall(generator, config.data, "val", limit=config.eval_images).as_dict()
    record = {
        "command": command,
        "config": config.as_record(),
        "input_size": INPUT_SIZE,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "train_images": int(index.numel()),
        "train_instances": int(sum(train.counts)),
        "steps": schedule.steps,
        "samples_seen": schedule.steps * schedule.batch_size,
        "first_loss": round(losses[0], 4),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "loss_every_100_steps": [round(float(np.mean(losses[max(0, s - 20) : s + 1])), 3) for s in range(0, len(losses), 100)],
        "load_seconds": round(load_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": config.threads,
        "checkpoint_bytes": nbytes,
        "val_recall": recall,
    }
    atomic_write(Path(config.out).with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    return record
