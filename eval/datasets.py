"""Readers for the prepared open-vocabulary segmentation benchmarks.

Each benchmark is read from the folder layout its detectron2/OVSeg
``prepare_*`` script writes under the datasets root (``$DETECTRON2_DATASETS``
in those projects); ``root`` may be that datasets root or the dataset's own
top folder. Images and label maps are paired by file stem, driven by the
label files (as detectron2's ``load_sem_seg`` does when the counts differ), so
an image folder holding more images than are annotated (VOC's JPEGImages) is
fine.

=========  ===========================================================  =====  =======
name       layout (relative to ROOT)                                    label  ignore
=========  ===========================================================  =====  =======
ade150     ADEChallengeData2016/images/validation/*.jpg                 png    255
           ADEChallengeData2016/annotations_detectron2/validation/*.png
           (detectron2 datasets/prepare_ade20k_sem_seg.py: label - 1, 0 → 255)
ade847     ADE20K_2021_17_01/images_detectron2/validation/*.jpg         tif16  65535
           ADE20K_2021_17_01/annotations_detectron2/validation/*.tif
           (Mask2Former/OVSeg prepare_ade20k_full_sem_seg.py);
           class names from ADE20K_2021_17_01/classes.txt
pc59       pascal_ctx_d2/images/validation/*.jpg                        png    255
           pascal_ctx_d2/annotations_ctx59/validation/*.png
           or VOCdevkit/VOC2010/JPEGImages + annotations_detectron2/pc59_val
pc459      pascal_ctx_d2/images/validation/*.jpg                        tif16  65535
           pascal_ctx_d2/annotations_ctx459/validation/*.tif
           or VOCdevkit/VOC2010/JPEGImages + annotations_detectron2/pc459_val;
           class names from classes.txt (or VOC2010's labels.txt, "N: name")
voc20      pascal_voc_d2/images/validation/*.jpg                        png    255
           pascal_voc_d2/annotations_pascal20/validation/*.png
           or VOCdevkit/VOC2012/JPEGImages + annotations_detectron2/val
           (background already mapped to 255 by the prepare script)
sample     semseg/images/validation/*.jpg                               png    255
           semseg/annotations/validation/*.png, names in semseg/classes.txt
=========  ===========================================================  =====  =======

Labels are returned as int32 arrays with the file's own ignore value, and the
dataset's ``ignore_label`` is what :class:`maskmine.eval.metrics.ConfusionMatrix` must be
built with (65535 for the 16-bit sets, whose class ids exceed 255).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, get_args

import numpy as np
from PIL import Image

from maskmine.transforms.errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "data"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

# What a ground-truth value outside the classes does (--unknown-labels): stop the run, or count it as ignore.
UnknownLabels = Literal["error", "ignore"]
UNKNOWN_LABELS: tuple[UnknownLabels, ...] = get_args(UnknownLabels)


@dataclass(frozen=True)
class Layout:
    """One folder arrangement a prepare script produces."""

    top: str  # dataset folder under the datasets root
    images: str  # image folder, relative to top
    labels: str  # label folder, relative to top
    label_ext: str  # ".png" or ".tif"
    source: str  # which script writes it, for error messages


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    layouts: tuple[Layout, ...]
    ignore_label: int
    num_classes: Optional[int]  # None: whatever the classes file lists
    builtin_names: Optional[str] = None  # file under eval/data/
    names_hint: str = ""  # where to get the names when they are not shipped


@dataclass
class SemSegDataset:
    """A benchmark split: class names, ignore label and (image, label) path pairs."""

    name: str
    root: Path
    class_names: list[str]
    ignore_label: int
    items: list[tuple[Path, Path]]
    unpaired_labels: list[Path] = field(default_factory=list)  # label files with no image

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_label(self, path: str | Path) -> np.ndarray:
        """Read a label map as int32 (H, W)."""
        return load_label(path)

    def __len__(self) -> int:
        return len(self.items)


SPECS: dict[str, DatasetSpec] = {
    "ade150": DatasetSpec(
        "ade150",
        (Layout("ADEChallengeData2016", "images/validation", "annotations_detectron2/validation",
                ".png", "detectron2 datasets/prepare_ade20k_sem_seg.py"),),
        ignore_label=255,
        num_classes=150,
        builtin_names="ade150_classes.txt",
    ),
    "ade847": DatasetSpec(
        "ade847",
        (Layout("ADE20K_2021_17_01", "images_detectron2/validation",
                "annotations_detectron2/validation", ".tif",
                "Mask2Former/OVSeg datasets/prepare_ade20k_full_sem_seg.py"),),
        ignore_label=65535,
        num_classes=847,
        names_hint=(
            "the 847 names, in label order, are the 'name' fields of ADE20K_SEM_SEG_FULL_CATEGORIES "
            "in OVSeg's open_vocab_seg/data/datasets/register_ade20k_full.py"
        ),
    ),
    "pc59": DatasetSpec(
        "pc59",
        (
            Layout("pascal_ctx_d2", "images/validation", "annotations_ctx59/validation", ".png",
                   "prepare_pascal_context_59.py (pascal_ctx_d2 layout)"),
            Layout("VOCdevkit/VOC2010", "JPEGImages", "annotations_detectron2/pc59_val", ".png",
                   "OVSeg datasets/prepare_pascal_context.py"),
        ),
        ignore_label=255,
        num_classes=59,
        builtin_names="pc59_classes.txt",
    ),
    "pc459": DatasetSpec(
        "pc459",
        (
            Layout("pascal_ctx_d2", "images/validation", "annotations_ctx459/validation", ".tif",
                   "prepare_pascal_context_459.py (pascal_ctx_d2 layout)"),
            Layout("VOCdevkit/VOC2010", "JPEGImages", "annotations_detectron2/pc459_val", ".tif",
                   "OVSeg datasets/prepare_pascal_context.py"),
        ),
        ignore_label=65535,
        num_classes=459,
        names_hint=(
            "the 459 names, in label order, are PASCAL-Context's labels.txt (shipped with "
            "trainval.tar.gz, lines 'N: name', label N-1) or PASCAL_CTX_459_CATEGORIES in "
            "OVSeg's register_pascal_context.py"
        ),
    ),
    "voc20": DatasetSpec(
        "voc20",
        (
            Layout("pascal_voc_d2", "images/validation", "annotations_pascal20/validation", ".png",
                   "prepare_voc.py (pascal_voc_d2 layout)"),
            Layout("VOCdevkit/VOC2012", "JPEGImages", "annotations_detectron2/val", ".png",
                   "OVSeg datasets/prepare_voc_sem_seg.py"),
        ),
        ignore_label=255,
        num_classes=20,
        builtin_names="voc20_classes.txt",
    ),
    "sample": DatasetSpec(
        "sample",
        (Layout("semseg", "images/validation", "annotations/validation", ".png",
                "the generated sample set"),),
        ignore_label=255,
        num_classes=None,
        names_hint="the sample generator writes semseg/classes.txt, one name per line",
    ),
}

ALIASES: dict[str, str] = {
    "ade20k-150": "ade150", "ade-150": "ade150", "a-150": "ade150",
    "ade20k-847": "ade847", "ade-847": "ade847", "a-847": "ade847", "ade20k-full": "ade847",
    "pascal-context-59": "pc59", "pc-59": "pc59", "ctx59": "pc59",
    "pascal-context-459": "pc459", "pc-459": "pc459", "ctx459": "pc459",
    "pascal-voc-20": "voc20", "voc-20": "voc20", "pas-20": "voc20", "pas20": "voc20",
}

DATASET_NAMES: tuple[str, ...] = tuple(SPECS)


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
    return key


def builtin_class_names(name: str) -> list[str]:
    """The shipped class-name list of ade150, pc59 or voc20 (detectron2/OVSeg order)."""
    spec = SPECS[canonical_name(name)]
    if spec.builtin_names is None:
        raise UserError(f"{spec.name} class names are not shipped; {spec.names_hint}")
    return read_class_names(DATA_DIR / spec.builtin_names)


def read_class_names(path: str | Path) -> list[str]:
    """One name per line, in label order; also accepts PASCAL-Context's ``N: name`` lines (1-based)."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    numbered = [re.match(r"^(\d+)\s*:\s*(.+)$", ln) for ln in lines]
    if lines and all(numbered):
        by_id = {int(m.group(1)): m.group(2).strip() for m in numbered}  # type: ignore[union-attr]
        if sorted(by_id) != list(range(1, len(by_id) + 1)):
            raise UserError(f"{path}: 'N: name' lines must number 1..N without gaps")
        return [by_id[i] for i in range(1, len(by_id) + 1)]
    if any(not ln for ln in lines):
        raise UserError(f"{path}: blank line {lines.index('') + 1} (one class name per line)")
    return lines


def load_label(path: str | Path) -> np.ndarray:
    """Label map → int32 (H, W). PNG (L/P, 8-bit or 16-bit) and 16-bit TIFF (``I;16``) alike."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
                raise UserError(f"{path}: label map must be single-channel, got mode {img.mode}")
            arr = np.array(img)
    except FileNotFoundError as exc:
        raise UserError(f"label file not found: {path}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read label file {path}: {exc}") from exc
    if arr.ndim != 2:
        raise UserError(f"{path}: label map must be 2-D, got shape {arr.shape}")
    return arr.astype(np.int32)


def get_dataset(name: str, root: str | Path) -> SemSegDataset:
    """Find the named benchmark's validation split under ``root`` and list its pairs.

    Raises UserError naming the expected layout when nothing is found.
    """
    spec = SPECS[canonical_name(name)]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{spec.name}: dataset root {root} is not a folder; expected {_expected(spec)}")
    for layout in spec.layouts:
        base = _find_base(root, layout)
        if base is None:
            continue
        image_dir, label_dir = base / layout.images, base / layout.labels
        labels = sorted(p for p in label_dir.iterdir() if p.suffix.lower() == layout.label_ext)
        if not labels:
            raise UserError(
                f"{spec.name}: no *{layout.label_ext} label files in {label_dir}; expected {_expected(spec)}"
            )
        images = _images_by_stem(image_dir)
        items = [(images[p.stem], p) for p in labels if p.stem in images]
        unpaired = [p for p in labels if p.stem not in images]
        if not items:
            raise UserError(
                f"{spec.name}: none of the {len(labels)} label files in {label_dir} has an image "
                f"of the same name in {image_dir}"
            )
        return SemSegDataset(
            name=spec.name,
            root=base,
            class_names=_class_names(spec, base, root),
            ignore_label=spec.ignore_label,
            items=items,
            unpaired_labels=unpaired,
        )
    raise UserError(f"{spec.name}: no prepared dataset found under {root}; expected {_expected(spec)}")


def _find_base(root: Path, layout: Layout) -> Optional[Path]:
    """The dataset's top folder: ROOT/top, or ROOT itself when the user pointed at it."""
    for base in (root / layout.top, root):
        if (base / layout.images).is_dir() and (base / layout.labels).is_dir():
            return base
    return None


def _images_by_stem(image_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        ext = p.suffix.lower()
        if ext in IMAGE_EXTS:
            old = found.get(p.stem)
            if old is None or IMAGE_EXTS.index(ext) < IMAGE_EXTS.index(old.suffix.lower()):
                found[p.stem] = p
    return found


def _class_names(spec: DatasetSpec, base: Path, root: Path) -> list[str]:
    if spec.builtin_names is not None:
        return builtin_class_names(spec.name)
    candidates = [base / "classes.txt", root / "classes.txt"]
    if spec.name == "pc459":
        candidates += [base / "labels.txt", root / "labels.txt"]
    for path in dict.fromkeys(candidates):  # de-duplicated, order kept
        if path.is_file():
            names = read_class_names(path)
            if spec.num_classes is not None and len(names) != spec.num_classes:
                raise UserError(f"{path}: {len(names)} class names, {spec.name} needs {spec.num_classes}")
            if not names:
                raise UserError(f"{path}: no class names")
            return names
    raise UserError(
        f"{spec.name}: class names not found; put them in {base / 'classes.txt'} "
        f"(one per line, in label order): {spec.names_hint}"
    )


def _expected(spec: DatasetSpec) -> str:
    parts = [
        f"ROOT/{lay.top}/{lay.images}/*.jpg with ROOT/{lay.top}/{lay.labels}/*{lay.label_ext} "
        f"(as {lay.source} writes them)"
        for lay in spec.layouts
    ]
    return " or ".join(parts)


def check_labels(gt: np.ndarray, path: Path, dataset: "DatasetSpec", policy: UnknownLabels, unknown: dict[str, int]) -> np.ndarray:
    """Ground truth with every value a class id or the ignore value.

    Another value stops the run with a one-line UserError naming the file
    (``policy`` "error"), or becomes the ignore value and is counted in
    ``unknown`` (``policy`` "ignore").
    """
    n = dataset.num_classes
    bad = (gt != dataset.ignore_label) & ((gt < 0) | (gt >= n))
    if not bad.any():
        return gt
    if policy != "ignore":
        values = np.unique(gt[bad])[:10].tolist()
        raise UserError(
            f"{path}: label values {values} are neither class ids 0..{n - 1} of {dataset.name} nor its "
            f"ignore value {dataset.ignore_label} (wrong --dataset? --unknown-labels ignore counts them as ignore)"
        )
    unknown["pixels"] = unknown.get("pixels", 0) + int(bad.sum())
    unknown["files"] = unknown.get("files", 0) + 1
    return np.where(bad, dataset.ignore_label, gt)
