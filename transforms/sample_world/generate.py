"""Write the sample set: images, COCO captions/instances and a semantic layout.

Layout under OUT (what ``maskmine mine``/``eval`` read)::

    images/{train,val}/000000000001.jpg
    annotations/captions_{train,val}.json    COCO Captions (5 per image)
    annotations/instances_{train,val}.json   COCO instances, RLE visible masks
    semseg/images/validation/*.jpg           val images again, for ``eval --dataset sample``
    semseg/annotations/validation/*.png      label = category id - 1, 255 = background
    semseg/classes.txt                       one class name per line, label order
    README.txt, README.json                  what was generated, how, and the vocabulary

Every image is drawn from its own generator seeded by (seed, split, index),
so a split is the same whatever the image count before it, and train and val
come from different seeds.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maskmine.transforms.atomic import atomic_write_json
from maskmine.transforms.sample_world.captions import CaptionText, write_captions
from maskmine.transforms.sample_world.coco import caption_annotations, coco_file, image_entry, instance_annotations
from maskmine.transforms.sample_world.scene import Scene, generate_scene
from maskmine.transforms.sample_world.vocabulary import CLASS_NAMES, Vocabulary

SPLIT_SALT = {"train": 0, "val": 1}
ID_OFFSET = {"train": 1, "val": 1_000_001}
SEMSEG_SPLIT = {"val": "validation"}
VERSION = 1


@dataclass(frozen=True)
class SampleConfig:
    out: str
    images: int = 2000
    val_images: int = 300
    seed: int = 0
    val_seed: int | None = None  # default: seed + 1
    captions_per_image: int = 5
    jpeg_quality: int = 95

    @property
    def effective_val_seed(self) -> int:
        return self.seed + 1 if self.val_seed is None else self.val_seed


@dataclass(frozen=True)
class SplitPaths:
    images: Path
    captions: Path
    instances: Path


def split_paths(root: str | Path, split: str) -> SplitPaths:
    root = Path(root)
    return SplitPaths(
        images=root / "images" / split,
        captions=root / "annotations" / f"captions_{split}.json",
        instances=root / "annotations" / f"instances_{split}.json",
    )


def render(seed: int, split: str, index: int, captions_per_image: int = 5) -> tuple[int, Scene, list[CaptionText]]:
    """Image ``index`` of a split: (image id, scene, captions); pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLIT_SALT[split], index])
    scene = generate_scene(rng)
    return ID_OFFSET[split] + index, scene, write_captions(scene, rng, captions_per_image)


def _atomic_json(path: Path, data: object) -> None:
    atomic_write_json(path, data, separators=(",", ":"))


def generate_split(
    out: str | Path, split: str, count: int, seed: int, captions_per_image: int = 5,
    jpeg_quality: int = 95, progress: bool = True,
) -> dict:
    """Write one split's images and annotation files; returns its counts."""
    from tqdm import tqdm

    paths = split_paths(out, split)
    paths.images.mkdir(parents=True, exist_ok=True)
    semseg = SEMSEG_SPLIT.get(split)
    if semseg:
        sem_images = Path(out) / "semseg" / "images" / semseg
        sem_labels = Path(out) / "semseg" / "annotations" / semseg
        sem_images.mkdir(parents=True, exist_ok=True)
        sem_labels.mkdir(parents=True, exist_ok=True)
    images, captions, instances = [], [], []
    per_class: dict[str, int] = {}
    for index in tqdm(range(count), desc=f"sample {split}", unit="img", disable=not progress, file=sys.stderr):
        image_id, scene, caps = render(seed, split, index, captions_per_image)
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(scene.image).save(paths.images / file_name, quality=jpeg_quality)
        images.append(image_entry(image_id, file_name, scene))
        captions.extend(caption_annotations(image_id, caps))
        anns = instance_annotations(image_id, scene)
        instances.extend(anns)
        for obj in scene.objects:
            per_class[obj.name] = per_class.get(obj.name, 0) + 1
        if semseg:
            Image.fromarray(scene.image).save(sem_images / file_name, quality=jpeg_quality)
            Image.fromarray(scene.label_map()).save(sem_labels / f"{image_id:012d}.png")
    description = f"maskmine sample set, split {split}, seed {seed}"
    _atomic_json(paths.captions, coco_file("captions", images, captions, description))
    _atomic_json(paths.instances, coco_file("instances", images, instances, description))
    return {
        "images": count,
        "seed": seed,
        "captions": len(captions),
        "instances": len(instances),
        "instances_per_class": {n: per_class.get(n, 0) for n in CLASS_NAMES},
    }


def generate_sample(config: SampleConfig, progress: bool = True, command: str | None = None) -> dict:
    """Generate train and val splits plus the semantic layout; returns README.json's content."""
    started = time.perf_counter()
    root = Path(config.out)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count, seed in (("train", config.images, config.seed), ("val", config.val_images, config.effective_val_seed)):
        if count > 0:
            splits[split] = generate_split(
                root, split, count, seed, config.captions_per_image, config.jpeg_quality, progress
            )
    (root / "semseg").mkdir(exist_ok=True)
    (root / "semseg" / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    info = {
        "name": "maskmine sample",
        "version": VERSION,
        "command": command,
        "config": asdict(config) | {"val_seed": config.effective_val_seed},
        "splits": splits,
        "vocabulary": asdict(Vocabulary()),
        "layout": {
            "train": {k: str(v.relative_to(root)) for k, v in asdict(split_paths(root, "train")).items()},
            "val": {k: str(v.relative_to(root)) for k, v in asdict(split_paths(root, "val")).items()},
            "semseg": "semseg/ (eval --dataset sample --root OUT): images/validation, annotations/validation, classes.txt",
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
    _atomic_json(root / "README.json", info)
    (root / "README.txt").write_text(readme_text(info), encoding="utf-8")
    return info


def readme_text(info: dict) -> str:
    cfg = info["config"]
    lines = [
        "maskmine sample set: generated scenes for running maskmine offline",
        "",
        f"Command: {info.get('command') or 'maskmine sample'}",
        f"Train: {cfg['images']} images (seed {cfg['seed']}); val: {cfg['val_images']} images (seed {cfg['val_seed']}).",
        f"{len(CLASS_NAMES)} classes (category id = position, semantic label = id - 1, 255 = background):",
        "  " + ", ".join(CLASS_NAMES),
        "Synonyms in captions: " + ", ".join(f"{k}->{v}" for k, v in info["vocabulary"]["synonyms"].items()),
        "Distractor nouns (name nothing in the image): " + ", ".join(info["vocabulary"]["distractors"]),
        "",
        "Files:",
        "  images/{train,val}/*.jpg",
        "  annotations/captions_{train,val}.json   COCO Captions, 5 per image",
        "  annotations/instances_{train,val}.json  COCO instances, RLE masks of the visible pixels",
        "  semseg/images/validation, semseg/annotations/validation, semseg/classes.txt",
        "",
        "Mine the val split:",
        "  maskmine mine --captions OUT/annotations/captions_val.json --instances OUT/annotations/instances_val.json \\",
        "    --images OUT/images/val --out RUN --proposals coco-gt+distractors --clip-model sample",
        "",
    ]
    return "\n".join(lines)
