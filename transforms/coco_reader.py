"""Read COCO Captions (and optionally instances) into one ImageRecord per image.

Validation happens here, before any work starts: a missing file, invalid JSON
or a file that is not in COCO format is a UserError naming the problem.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

from pycocotools.coco import COCO

from maskmine.transforms.annotations import (
    PROBLEM_BAD_FIELDS,
    PROBLEM_UNKNOWN_CATEGORY,
    AnnotationProblem,
    check_in_range,
    check_segmentation,
    reject,
)
from maskmine.transforms import storage
from maskmine.transforms import mine_settings, ranges
from maskmine.transforms.errors import UserError
from maskmine.transforms.records import Caption, ImageRecord, Instance, Skip

log = logging.getLogger(__name__)
REJECT_BAD_CAPTION = "bad-caption"
# Ids (of images, captions, annotations) are int64 columns of the Parquet table and keys' prefixes:
# 0 <= id < 2**63. (A negative id would start a key with "-", which command-line tools take for an option.)
MAX_ID = 2**63 - 1


def load_coco(path: str | Path, kind: str, required_annotation_keys: tuple[str, ...]) -> COCO:
    """Load and check a COCO annotation file; ``kind`` names it in error messages."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    try:
        with path.open("rb") as handle:
            data = storage.parse_json(handle.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{kind} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise UserError(f"{kind} file {path} is not in COCO format: needs 'images' and 'annotations' lists")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise UserError(f"{kind} file {path}: annotation #{i} is a {type(ann).__name__}, not an object")
        bad_ids = [k for k in ("id", "image_id") if isinstance(ann.get(k), (list, dict))]
        if bad_ids:
            raise UserError(f"{kind} file {path}: annotation #{i} has a list or object as {', '.join(bad_ids)}")
        missing = [k for k in required_annotation_keys if k not in ann]
        if missing:
            raise UserError(f"{kind} file {path}: annotation #{i} lacks {', '.join(missing)}")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise UserError(f"{kind} file {path}: image #{i} is a {type(img).__name__}, not an object")
        if isinstance(img.get("id"), (list, dict)):
            raise UserError(f"{kind} file {path}: image #{i} has a list or object as id")
        missing = [k for k in ("id", "file_name") if k not in img]
        if missing:
            raise UserError(f"{kind} file {path}: image #{i} lacks {', '.join(missing)}")
    categories = data.get("categories", [])
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), (int, str)) for c in categories
    ):
        raise UserError(f"{kind} file {path}: 'categories' must be a list of objects with an integer id")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _as_int(value) -> int | None:
    """``value`` as an int when it is an integer (or an integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_id(value) -> int | None:
    """``value`` as an id when it is an integer in 0..MAX_ID, else None."""
    n = _as_int(value)
    return n if n is not None and 0 <= n <= MAX_ID else None


def _dimension(value) -> int:
    """An image entry's width/height: a positive int, or 0 (unknown) for anything else."""
    n = _as_int(value)
    return n if n is not None and n > 0 else 0


def _id_order(ann: dict) -> tuple:
    """Annotations in id order; ids that are not integers last, in text order."""
    n = _as_int(ann["id"])
    return (n is None, n or 0, str(ann["id"]))


def parse_instance(ann: dict, categories: dict, height: int, width: int) -> Instance:
    """One instance annotation, checked; raises AnnotationProblem naming what is wrong."""
    category_id = _as_int(ann.get("category_id"))
    if category_id is None:
        raise AnnotationProblem(PROBLEM_BAD_FIELDS, f"category_id {ann.get('category_id')!r} is not an integer"[:200])
    if category_id not in categories:
        raise AnnotationProblem(PROBLEM_UNKNOWN_CATEGORY, f"category_id {category_id} is not among the categories")
    bbox = ann.get("bbox", (0, 0, 0, 0))
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        raise AnnotationProblem(PROBLEM_BAD_FIELDS, f"bbox {bbox!r} is not four numbers"[:200])
    x, y, w, h = (float(v) for v in bbox)
    check_in_range([x, x + w], [y, y + h], height, width, "bbox")
    check_segmentation(ann.get("segmentation"), height, width)
    return Instance(
        annotation_id=int(ann["id"]),
        category_id=category_id,
        category=str(categories[category_id].get("name", category_id)),
        segmentation=ann["segmentation"],
        bbox=tuple(float(v) for v in bbox),
        iscrowd=bool(ann.get("iscrowd", 0)),
    )


def _signature(entry: dict) -> tuple:
    """What identifies an image entry's picture: its file name and size (0: not given)."""
    return (entry.get("file_name"), _dimension(entry.get("width")), _dimension(entry.get("height")))


def _same_picture(a: tuple, b: tuple) -> bool:
    """Two signatures name the same picture: same file name, and no size given by both that differs."""
    return a[0] == b[0] and all(x == y or not x or not y for x, y in zip(a[1:], b[1:]))


def image_entries(images: list[dict]) -> dict[int | None, list[dict]]:
    """Image entries by id (0..2**63-1), each id's entries with distinct file name or size, in file order;
    entries whose id is not such an integer under ``None``. (pycocotools keeps only the last entry of an id.)"""
    entries: dict[int | None, list[dict]] = {}
    for entry in images:
        image_id = _as_id(entry["id"])
        same = entries.setdefault(image_id, [])
        if image_id is None or not any(_same_picture(_signature(e), _signature(entry)) for e in same):
            same.append(entry)
    return entries


def entry_problem(entries: list[dict], instance_entries: list[dict]) -> tuple[str, str] | None:
    """(skip reason, detail) when an image's entries cannot be used, else None.

    Two entries of one id with another file or size (in the captions file, or
    the instances file's entry against the captions'): nothing says which
    picture the captions and masks belong to, so the image is refused whole.
    A file name that is not text is ``bad-file-name``.
    """
    signatures = [_signature(e) for e in entries]
    signatures += [s for s in map(_signature, instance_entries) if not any(_same_picture(s, t) for t in signatures)]
    if len(signatures) > 1:
        shown = "; ".join(f"{name!r} {w}x{h}" for name, w, h in signatures[:4])
        return Skip.DUPLICATE_IMAGE_ID, f"{len(signatures)} entries with this id name other pictures: {shown}"[:300]
    name = entries[0]["file_name"]
    if not isinstance(name, str):
        return Skip.BAD_FILE_NAME, f"file_name is a {type(name).__name__}, not text: {name!r}"[:200]
    return None


def read_captioned_images(
    captions_path: str | Path,
    instances_path: str | Path | None = None,
    captions_per_image: int = mine_settings.CAPTIONS_PER_IMAGE,
    limit: int | None = None,
    report: dict | None = None,
    left_out: list[dict] | None = None,
) -> list[ImageRecord]:
    """One record per image that has at least one caption, in image-id order.

    Captions are taken in annotation-id order and cut to the first
    ``captions_per_image`` (the OVSeg paper uses 1 and 5). With an instances
    file, each record also carries its instance annotations.

    Malformed parts are left out and accounted for, never a crash: a caption
    that is not text and an instance annotation that pycocotools could not
    decode (transforms/annotations.py) go to ``record.rejects``; captions whose
    image has no entry and image entries whose id is not an integer are
    counted in ``report`` (when a dict is given: ``{what: count}``, with the
    rejects as ``reason:problem``), and a one-line summary of everything left
    out is logged before mining starts. ``left_out`` (when a list is given)
    receives one rejects.jsonl line per entry that never became an image:
    ``{"image_id": null, "file_name", "reason": what, "detail"}``.
    """
    ranges.POSITIVE_INT.check("captions_per_image", captions_per_image)
    ranges.POSITIVE_INT.check("limit", limit)
    captions = load_coco(captions_path, "captions", ("image_id", "caption", "id"))
    instances = None
    if instances_path is not None:
        instances = load_coco(instances_path, "instances", ("image_id", "category_id", "segmentation", "id"))
        if not isinstance(instances.dataset.get("categories"), list):
            raise UserError(f"instances file {instances_path} has no 'categories' list")
    counts: dict[str, int] = {}

    def count(what: str, n: int = 1) -> None:
        if n:
            counts[what] = counts.get(what, 0) + n

    lines: list[dict] = []
    for image_id, anns in captions.imgToAnns.items():
        if image_id not in captions.imgs:
            for a in anns:
                lines.append({"image_id": None, "file_name": None, "caption_id": a["id"], "reason": "captions-without-image",
                              "detail": f"caption {a['id']!r} names image {image_id!r}, which has no entry"[:200]})
    entries = image_entries(captions.dataset["images"])
    for entry in entries.pop(None, []):
        name = entry["file_name"] if isinstance(entry["file_name"], str) else None
        lines.append({"image_id": None, "file_name": name, "reason": "image-entries-with-bad-id",
                      "detail": f"image id {entry['id']!r} is not an integer in 0..2**63-1"[:200]})
    for line in lines:
        count(line["reason"])
    if left_out is not None:
        left_out.extend(lines)
    other = image_entries(instances.dataset["images"]) if instances is not None else {}
    records = []
    for image_id in sorted(entries):
        anns = sorted(captions.imgToAnns.get(image_id, []), key=_id_order)
        if not anns:
            continue
        info = entries[image_id][0]
        record = ImageRecord(
            image_id=image_id,
            file_name=info["file_name"] if isinstance(info["file_name"], str) else "",
            width=_dimension(info.get("width")),
            height=_dimension(info.get("height")),
            captions=[],
        )
        refused = entry_problem(entries[image_id], other.get(image_id, []))
        if refused is not None:
            record.skip_reason, record.skip_detail = refused
            records.append(record)  # skipped by the miner with this reason, listed in rejects.jsonl
            if limit is not None and len(records) >= limit:
                break
            continue
        for a in anns[:captions_per_image]:
            caption_id = _as_id(a["id"])
            if caption_id is None or not isinstance(a["caption"], str) or not a["caption"].strip():
                what = "an id that is not an integer" if caption_id is None else (
                    "empty" if isinstance(a["caption"], str) else f"a {type(a['caption']).__name__}, not text")
                record.rejects.append({"caption_id": a["id"], "reason": REJECT_BAD_CAPTION,
                                       "problem": "not-text" if caption_id is not None else "bad-id",
                                       "detail": f"caption is {what}"})
                continue
            record.captions.append(Caption(caption_id, a["caption"].strip()))
        if instances is not None:
            for a in sorted(instances.imgToAnns.get(image_id, []), key=_id_order):
                try:
                    if _as_id(a["id"]) is None:
                        raise AnnotationProblem(PROBLEM_BAD_FIELDS, f"id {a['id']!r} is not an integer in 0..2**63-1"[:200])
                    record.instances.append(parse_instance(a, instances.cats, record.height, record.width))
                except AnnotationProblem as exc:
                    record.rejects.append(reject(a["id"], exc.problem, exc.detail))
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    rejected = [r for rec in records for r in rec.rejects]
    for r in rejected:
        count(f"{r['reason']}:{r['problem']}")
    if counts:
        log.warning(
            "left out of the input (listed in rejects.jsonl when in a mined image): %s",
            ", ".join(f"{n} {what}" for what, n in sorted(counts.items())),
        )
    if report is not None:
        report.update(counts)
    return records
