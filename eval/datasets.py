"""Readers for the prepared open-vocabulary segmentation benchmarks.

Each benchmark is read from the folder layout a ``prepare_*`` script of
OVSeg, FC-CLIP/ODISE (the ``*_d2`` layouts) or CAT-Seg writes under the
datasets root (``$DETECTRON2_DATASETS`` in those projects); ``root`` may be
that datasets root or the dataset's own top folder. Images and label maps are
paired by file stem, driven by the label files (as detectron2's
``load_sem_seg`` does when the counts differ), so an image folder holding more
images than are annotated (VOC's JPEGImages) is fine.

=========  ===========================================================  =====  =======
name       layout (relative to ROOT)                                    label  ignore
=========  ===========================================================  =====  =======
ade150     ADEChallengeData2016/images/validation/*.jpg                 png    255
           ADEChallengeData2016/annotations_detectron2/validation/*.png
ade847     ADE20K_2021_17_01/images_detectron2/validation/*.jpg         tif16  65535
           ADE20K_2021_17_01/annotations_detectron2/validation/*.tif
           (or ade/ADE20K_2021_17_01/..., where FC-CLIP's script writes it)
pc59       pascal_ctx_d2/images/validation/*.jpg                        png    255
           pascal_ctx_d2/annotations_ctx59/validation/*.png  (d2 order)
           or VOCdevkit/VOC2010/JPEGImages + annotations_detectron2/pc59_val
           (OVSeg order or CAT-Seg order: see below)
pc459      pascal_ctx_d2/images/validation/*.jpg                        tif16  65535
           pascal_ctx_d2/annotations_ctx459/validation/*.tif
           or VOCdevkit/VOC2010/JPEGImages + annotations_detectron2/pc459_val
voc20      pascal_voc_d2/images/validation/*.jpg                        png    255
           pascal_voc_d2/annotations_pascal20/validation/*.png
           or VOCdevkit/VOC2012/JPEGImages + annotations_detectron2/val
sample     semseg/images/validation/*.jpg                               png    255
           semseg/annotations/validation/*.png, names in semseg/classes.txt
=========  ===========================================================  =====  =======

Class names. Each layout records which preparation scripts write it and the
label order each writes (``eval/data/SOURCES.md`` names file and commit). A
``classes.txt`` in the label folder or the dataset's top folder (one name per
line, line k naming label value k-1) wins over the built-in lists. PASCAL
Context 59 at ``VOCdevkit/VOC2010/annotations_detectron2/pc59_val`` is written
by OVSeg's ``prepare_pascal_context.py`` and by CAT-Seg's
``prepare_pascal_context_59.py`` in two orders that agree on 5 of 59 ids; the
reader tells them apart by comparing the labels with ``pc459_val`` (written
from the same raw annotations in PASCAL Context's own 459 order), else refuses
with one line asking for ``--class-order ovseg|catseg`` (or a classes.txt).

Entries are listed from the layout's folders (there is no list file to trust).
An entry that is not a regular file (a FIFO, a folder, a dangling link), or a
symbolic link whose target lies outside ROOT and the dataset's top folder, is
skipped and counted under its reason in ``SemSegDataset.skipped``.

Labels are returned as int32 arrays with the file's own ignore value, and the
dataset's ``ignore_label`` is what :class:`maskmine.eval.metrics.ConfusionMatrix` must be
built with (65535 for the 16-bit sets, whose class ids exceed 255).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, get_args

import numpy as np
from PIL import Image

from maskmine.transforms.errors import SettingError, UserError

DATA_DIR = Path(__file__).resolve().parent / "data"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
CLASSES_FILE = "classes.txt"  # a user's class names: label folder first, then the dataset's top folder
MAX_ORDER_CHECK_FILES = 200  # label files compared with their 459 twins before giving up telling orders apart

# What a ground-truth value outside the classes does (--unknown-labels): stop the run, or count it as ignore.
UnknownLabels = Literal["error", "ignore"]
UNKNOWN_LABELS: tuple[UnknownLabels, ...] = get_args(UnknownLabels)

# Whose preparation wrote the labels (--class-order): OVSeg's, FC-CLIP/ODISE's *_d2 layouts, CAT-Seg's.
ClassOrder = Literal["ovseg", "d2", "catseg"]
CLASS_ORDERS: tuple[ClassOrder, ...] = get_args(ClassOrder)

# Skip reasons for listed entries (SemSegDataset.skipped)
SKIP_NO_IMAGE = "no-image"
SKIP_NOT_REGULAR = "not-a-regular-file"
SKIP_BROKEN_LINK = "broken-link"
SKIP_OUTSIDE_ROOT = "outside-root"

OVSEG = "facebookresearch/ov-seg@36f49d4"
FCCLIP = "bytedance/fc-clip@2b0bbe2"
CATSEG = "KU-CVLAB/CAT-Seg@6d3a188"


@dataclass(frozen=True)
class Preparation:
    """One project's script that writes a layout, and the label order it writes."""

    order: str  # a ClassOrder, or "sample" for maskmine's generated set
    script: str  # "repo@commit path", for messages and metrics.json
    names: Optional[str]  # file under eval/data listing the names in this order; None: not shipped


@dataclass(frozen=True)
class Layout:
    """One folder arrangement and the preparations that write it."""

    top: str  # dataset folder under the datasets root
    images: str  # image folder, relative to top
    labels: str  # label folder, relative to top
    label_ext: str  # ".png" or ".tif"
    preparations: tuple[Preparation, ...]
    # labels written from the same raw annotations in a known order (folder, ext, dataset name):
    # compared pixel by pixel to tell apart preparations whose orders differ
    twin: Optional[tuple[str, str, str]] = None

    @property
    def source(self) -> str:
        return " or ".join(f"{p.script}" for p in self.preparations)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    layouts: tuple[Layout, ...]
    ignore_label: int
    num_classes: Optional[int]  # None: whatever the classes file lists
    names_hint: str = ""  # where to get the names when they are not shipped


@dataclass
class SemSegDataset:
    """A benchmark split: class names, ignore label and (image, label) path pairs."""

    name: str
    root: Path
    class_names: list[str]
    ignore_label: int
    items: list[tuple[Path, Path]]
    skipped: dict[str, list[Path]] = field(default_factory=dict)  # reason → entries left out
    names_source: str = ""  # where the class names (and so the label order) came from

    @property
    def unpaired_labels(self) -> list[Path]:
        """Label files with no image of the same name."""
        return self.skipped.get(SKIP_NO_IMAGE, [])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_label(self, path: str | Path) -> np.ndarray:
        """Read a label map as int32 (H, W)."""
        return load_label(path)

    def __len__(self) -> int:
        return len(self.items)


_PROJECTS = {"ovseg": OVSEG, "d2": FCCLIP, "catseg": CATSEG}  # class order -> the project whose scripts write it


def _written_by(names: Optional[str], **scripts: str) -> tuple[Preparation, ...]:
    """The preparations that write a layout in the order ``names`` lists, one per keyword
    (a class order, naming its project) whose value is that project's ``datasets/`` script."""
    return tuple(Preparation(order, f"{_PROJECTS[order]} datasets/{script}", names)
                 for order, script in scripts.items())


def _d2_layout(top: str, labels: str, label_ext: str, script: str, names: str) -> Layout:
    """An FC-CLIP/ODISE ``*_d2`` folder: ``images/validation`` and ``LABELS/validation``."""
    return Layout(top, "images/validation", f"{labels}/validation", label_ext, _written_by(names, d2=script))


def _vocdevkit_layout(top: str, labels: str, label_ext: str, preparations: tuple[Preparation, ...],
                      twin: Optional[tuple[str, str, str]] = None) -> Layout:
    """OVSeg's and CAT-Seg's PASCAL folders: ``JPEGImages`` and ``annotations_detectron2/LABELS``."""
    return Layout(top, "JPEGImages", f"annotations_detectron2/{labels}", label_ext, preparations, twin)


_ADE847 = "ade847_classes.txt"
_PC459 = "pc459_classes.txt"
_VOC20 = "voc20_classes.txt"
_ADE847_DIRS = ("images_detectron2/validation", "annotations_detectron2/validation", ".tif")
_ADE847_PREPS = _written_by(_ADE847, ovseg="prepare_ade20k_full_sem_seg.py", d2="prepare_ade20k_full_sem_seg.py",
                            catseg="prepare_ade20k_full.py")

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("ade150", (
        Layout("ADEChallengeData2016", "images/validation", "annotations_detectron2/validation", ".png",
               _written_by("ade150_classes.txt", ovseg="prepare_ade20k_sem_seg.py", d2="prepare_ade20k_sem_seg.py",
                           catseg="prepare_ade20k_150.py")),
    ), ignore_label=255, num_classes=150),
    DatasetSpec("ade847", (
        Layout("ADE20K_2021_17_01", *_ADE847_DIRS, _ADE847_PREPS),
        Layout("ade/ADE20K_2021_17_01", *_ADE847_DIRS, _ADE847_PREPS[1:2]),  # where FC-CLIP's script writes it
    ), ignore_label=65535, num_classes=847),
    DatasetSpec("pc59", (
        _d2_layout("pascal_ctx_d2", "annotations_ctx59", ".png", "prepare_pascal_ctx_sem_seg.py",
                   "pc59_d2_classes.txt"),
        _vocdevkit_layout("VOCdevkit/VOC2010", "pc59_val", ".png",
                          _written_by("pc59_classes.txt", ovseg="prepare_pascal_context.py")
                          + _written_by("pc59_d2_classes.txt", catseg="prepare_pascal_context_59.py"),
                          twin=("annotations_detectron2/pc459_val", ".tif", "pc459")),
    ), ignore_label=255, num_classes=59),
    DatasetSpec("pc459", (
        _d2_layout("pascal_ctx_d2", "annotations_ctx459", ".tif", "prepare_pascal_ctx_full_sem_seg.py", _PC459),
        _vocdevkit_layout("VOCdevkit/VOC2010", "pc459_val", ".tif", _written_by(
            _PC459, ovseg="prepare_pascal_context.py", catseg="prepare_pascal_context_459.py")),
    ), ignore_label=65535, num_classes=459),
    DatasetSpec("voc20", (
        _d2_layout("pascal_voc_d2", "annotations_pascal20", ".png", "prepare_pascal_voc_sem_seg.py", _VOC20),
        _vocdevkit_layout("VOCdevkit/VOC2012", "val", ".png", _written_by(
            _VOC20, ovseg="prepare_voc_sem_seg.py", catseg="prepare_voc.py")),
    ), ignore_label=255, num_classes=20),
    DatasetSpec("sample", (
        Layout("semseg", "images/validation", "annotations/validation", ".png",
               (Preparation("sample", "maskmine's sample-world generator", None),)),
    ), ignore_label=255, num_classes=None,
        names_hint="the sample generator writes semseg/classes.txt, one name per line"),
)}

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


def builtin_class_names(name: str, order: Optional[str] = None) -> list[str]:
    """A shipped class-name list (``order``: whose preparation; None: the first layout's first one)."""
    spec = SPECS[canonical_name(name)]
    preps = [p for lay in spec.layouts for p in lay.preparations if order is None or p.order == order]
    if not preps or preps[0].names is None:
        raise UserError(f"{spec.name} class names are not shipped; {spec.names_hint}")
    return read_class_names(DATA_DIR / preps[0].names)


def read_class_names(path: str | Path) -> list[str]:
    """One name per line, in label order; also accepts PASCAL-Context's ``N: name`` lines (1-based).

    A name given twice is refused (one line naming it): metrics.json keys classes by name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    numbered = [re.match(r"^(\d+)\s*:\s*(.+)$", ln) for ln in lines]
    if lines and all(numbered):
        by_id = {int(m.group(1)): m.group(2).strip() for m in numbered}  # type: ignore[union-attr]
        if sorted(by_id) != list(range(1, len(by_id) + 1)) or len(by_id) != len(lines):
            raise UserError(f"{path}: 'N: name' lines must number 1..N without gaps")
        names = [by_id[i] for i in range(1, len(by_id) + 1)]
    else:
        if any(not ln for ln in lines):
            raise UserError(f"{path}: blank line {lines.index('') + 1} (one class name per line)")
        names = lines
    first: dict[str, int] = {}
    for line, name in enumerate(names, 1):
        if name in first:
            raise UserError(
                f"{path}: class name {name!r} on lines {first[name]} and {line}; every class needs its own "
                "name (metrics.json and the per-class CSV are keyed by name)"
            )
        first[name] = line
    return names


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


def get_dataset(name: str, root: str | Path, class_order: Optional[str] = None) -> SemSegDataset:
    """Find the named benchmark's validation split under ``root`` and list its pairs.

    ``class_order`` (ovseg, d2 or catseg) says whose preparation wrote the labels
    where the data cannot tell. Raises UserError naming the expected layout when
    nothing is found.
    """
    spec = SPECS[canonical_name(name)]
    if class_order is not None and class_order not in CLASS_ORDERS:
        raise SettingError("class_order", f"must be one of {', '.join(CLASS_ORDERS)}, got {class_order!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{spec.name}: dataset root {root} is not a folder; expected {_expected(spec)}")
    for layout in spec.layouts:
        base = _find_base(root, layout)
        if base is None:
            continue
        confine = (root.resolve(), base.resolve())
        image_dir, label_dir = base / layout.images, base / layout.labels
        skipped: dict[str, list[Path]] = {}
        labels = _regular_entries(label_dir, (layout.label_ext,), confine, skipped)
        if not labels:
            raise UserError(
                f"{spec.name}: no *{layout.label_ext} label files in {label_dir}{_skip_note(skipped)}; "
                f"expected {_expected(spec)}"
            )
        images = _images_by_stem(image_dir)
        items = []
        for label in labels:
            image = images.get(label.stem)
            reason = SKIP_NO_IMAGE if image is None else _entry_problem(image, confine)
            if reason:
                skipped.setdefault(reason, []).append(label if image is None else image)
            else:
                items.append((image, label))
        if not items:
            raise UserError(
                f"{spec.name}: none of the {len(labels)} label files in {label_dir} has an image "
                f"of the same name in {image_dir}{_skip_note(skipped)}"
            )
        names, source = _class_names(spec, layout, base, [lab for _, lab in items], class_order, confine)
        return SemSegDataset(
            name=spec.name,
            root=base,
            class_names=names,
            ignore_label=spec.ignore_label,
            items=items,
            skipped=skipped,
            names_source=source,
        )
    raise UserError(f"{spec.name}: no prepared dataset found under {root}; expected {_expected(spec)}")


def check_pair_sizes(items: list[tuple[Path, Path]]) -> None:
    """Every label map has its image's size, read from both headers before anything is predicted.

    The image's stored size or its EXIF-upright size (what ``decode_image`` may
    use) must match; else a one-line UserError names both files.
    """
    for image, label in items:
        lw, lh = _header(label)[0]
        (iw, ih), orientation = _header(image)
        if (iw, ih) != (lw, lh) and not (orientation in (5, 6, 7, 8) and (ih, iw) == (lw, lh)):
            raise UserError(
                f"label map {label} is {lw}x{lh} but its image {image} is {iw}x{ih}; "
                "fix or remove the pair before evaluating"
            )


def _header(path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) and EXIF orientation, from the file's header (no pixels decoded)."""
    try:
        with Image.open(path) as img:
            return img.size, int(img.getexif().get(0x0112, 1) or 1)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def _find_base(root: Path, layout: Layout) -> Optional[Path]:
    """The dataset's top folder: ROOT/top, or ROOT itself when the user pointed at it."""
    for base in (root / layout.top, root):
        if (base / layout.images).is_dir() and (base / layout.labels).is_dir():
            return base
    return None


def _entry_problem(path: Path, confine: tuple[Path, ...]) -> str:
    """Why a listed entry must not be opened ("" when it may): not a regular file, or a link out of ROOT."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:
        return SKIP_BROKEN_LINK
    except OSError:
        return SKIP_NOT_REGULAR
    if not stat.S_ISREG(mode):
        return SKIP_NOT_REGULAR
    if path.is_symlink():
        target = path.resolve()
        if not any(target.is_relative_to(folder) for folder in confine):
            return SKIP_OUTSIDE_ROOT
    return ""


def _regular_entries(folder: Path, exts: tuple[str, ...], confine: tuple[Path, ...],
                     skipped: dict[str, list[Path]]) -> list[Path]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in exts:
            continue
        reason = _entry_problem(path, confine)
        if reason:
            skipped.setdefault(reason, []).append(path)
        else:
            found.append(path)
    return found


def _images_by_stem(image_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        ext = p.suffix.lower()
        if ext in IMAGE_EXTS:
            old = found.get(p.stem)
            if old is None or IMAGE_EXTS.index(ext) < IMAGE_EXTS.index(old.suffix.lower()):
                found[p.stem] = p
    return found


def _skip_note(skipped: dict[str, list[Path]]) -> str:
    if not skipped:
        return ""
    return " (skipped: " + ", ".join(f"{len(v)} {k}, e.g. {v[0]}" for k, v in sorted(skipped.items())) + ")"


def _class_names(spec: DatasetSpec, layout: Layout, base: Path, labels: list[Path],
                 class_order: Optional[str], confine: tuple[Path, ...]) -> tuple[list[str], str]:
    """The names in this layout's label order, and where they came from."""
    for path in (base / layout.labels / CLASSES_FILE, base / CLASSES_FILE):
        if os.path.lexists(path):
            problem = _entry_problem(path, confine)
            if problem:
                raise UserError(f"{path}: {problem} (a classes file must be a regular file inside the dataset root)")
            names = _sized(read_class_names(path), spec, path)
            return names, f"{path} (a user's {CLASSES_FILE} wins over the built-in lists)"
    preps = layout.preparations
    if all(p.names is None for p in preps):
        raise UserError(
            f"{spec.name}: class names not found; put them in {base / CLASSES_FILE} "
            f"(one per line, in label order): {spec.names_hint}"
        )
    told = ""
    if len({p.names for p in preps}) > 1 and layout.twin is not None:
        preps, told = _tell_apart(spec, layout, base, labels, preps, confine)
    if class_order is not None:
        chosen = tuple(p for p in preps if p.order == class_order)
        if not chosen:
            writers = ", ".join(p.order for p in layout.preparations)
            if any(p.order == class_order for p in layout.preparations):
                raise SettingError(
                    "class_order", f"{class_order} contradicts the data of {spec.name}: {told}; "
                    f"the labels in {base / layout.labels} are in {preps[0].order} order"
                )
            raise SettingError("class_order", f"{class_order} does not write {spec.name}'s {base / layout.labels} "
                                              f"(written by: {writers})")
        preps = chosen
    if len({p.names for p in preps}) > 1:
        raise SettingError(
            "class_order", f"is needed: {spec.name}'s {base / layout.labels} is written in different class orders by "
            + " and by ".join(f"{p.script} ({p.order})" for p in preps)
            + ", and the data does not tell which; rerun with `class_order` "
            + "|".join(p.order for p in preps)
            + f" or put the names in {base / layout.labels / CLASSES_FILE}"
        )
    prep = preps[0]
    names = _sized(read_class_names(DATA_DIR / prep.names), spec, DATA_DIR / prep.names)  # type: ignore[operator]
    source = f"built-in eval/data/{prep.names}: {prep.order} order, as {prep.script} writes it"
    return names, source + (f"; {told}" if told else "")


def _sized(names: list[str], spec: DatasetSpec, path: Path) -> list[str]:
    if not names:
        raise UserError(f"{path}: no class names")
    if spec.num_classes is not None and len(names) != spec.num_classes:
        raise UserError(f"{path}: {len(names)} class names, {spec.name} needs {spec.num_classes}")
    return names


def _tell_apart(spec: DatasetSpec, layout: Layout, base: Path, labels: list[Path],
                preps: tuple[Preparation, ...], confine: tuple[Path, ...]) -> tuple[tuple[Preparation, ...], str]:
    """The preparations whose label order agrees, pixel by pixel, with the twin labels (e.g. pc59 vs pc459).

    Both come from the same raw annotation, so a pixel's 59-class name must be its
    459-class name. Returns all ``preps`` and "" when no twin file decides.
    """
    twin_dir, twin_ext, twin_name = layout.twin  # type: ignore[misc]
    twin_dir_path = base / twin_dir
    if not twin_dir_path.is_dir():
        return preps, ""
    twin_names = builtin_class_names(twin_name)
    index = {n: i for i, n in enumerate(twin_names)}
    tables = {p: np.array([index.get(n, -1) for n in read_class_names(DATA_DIR / p.names)])  # type: ignore[operator]
              for p in preps}
    wrong = {p: 0 for p in preps}
    compared = 0
    for label in labels[:MAX_ORDER_CHECK_FILES]:
        twin = twin_dir_path / f"{label.stem}{twin_ext}"
        if not os.path.lexists(twin) or _entry_problem(twin, confine):
            continue
        ours, theirs = load_label(label), load_label(twin)
        if ours.shape != theirs.shape:
            continue
        keep = (ours >= 0) & (ours < len(next(iter(tables.values())))) & (theirs >= 0) & (theirs < len(twin_names))
        if not keep.any():
            continue
        compared += 1
        for p, table in tables.items():
            wrong[p] += int((table[ours[keep]] != theirs[keep]).sum())
        if any(wrong.values()):
            break
    fit = tuple(p for p in preps if wrong[p] == 0)
    if not compared or len(fit) == len(preps):
        return preps, ""
    how = (f"told apart by comparing {compared} label file(s) with {twin_dir_path}: "
           + ", ".join(f"{p.order} order mislabels {wrong[p]} pixels" for p in preps))
    if not fit:
        raise UserError(
            f"{spec.name}: the labels in {base / layout.labels} fit none of the known class orders ({how}); "
            f"put the names in {base / layout.labels / CLASSES_FILE}"
        )
    return fit, how


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
            f"ignore value {dataset.ignore_label} (wrong `dataset`? `unknown_labels` ignore counts them as ignore)"
        )
    unknown["pixels"] = unknown.get("pixels", 0) + int(bad.sum())
    unknown["files"] = unknown.get("files", 0) + 1
    return np.where(bad, dataset.ignore_label, gt)
