"""Read COCO Captions (and optionally instances) into one ImageRecord per image.

Validation happens here, before any work starts: a missing file, invalid JSON
or a file that is not in COCO format is a UserError naming the problem.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from maskmine.transforms.errors import UserError
from maskmine.transforms.records import Caption, ImageRecord, Instance


def load_coco(path: str | Path, kind: str, required_annotation_keys: tuple[str, ...]) -> COCO:
    """Load and check a COCO annotation file; ``kind`` names it in error messages."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{kind} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise UserError(f"{kind} file {path} is not in COCO format: needs 'images' and 'annotations' lists")
    for i, ann in enumerate(data["annotations"]):
        missing = [k for k in required_annotation_keys if k not in ann]
        if missing:
            raise UserError(f"{kind} file {path}: annotation #{i} lacks {', '.join(missing)}")
    for i, img in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name") if k not in img]
        if missing:
            raise UserError(f"{kind} file {path}: image #{i} lacks {', '.join(missing)}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def read_captioned_images(
    captions_path: str | Path,
    instances_path: str | Path | None = None,
    captions_per_image: int = 5,
    limit: int | None = None,
) -> list[ImageRecord]:
    """One record per image that has at least one caption, in image-id order.

    Captions are taken in annotation-id order and cut to the first
    ``captions_per_image`` (the OVSeg paper uses 1 and 5). With an instances
    file, each record also carries its instance annotations.
    """
    if captions_per_image < 1:
        raise UserError("--captions-per-image must be at least 1")
    captions = load_coco(captions_path, "captions", ("image_id", "caption", "id"))
    instances = None
    if instances_path is not None:
        instances = load_coco(instances_path, "instances", ("image_id", "category_id", "segmentation", "id"))
        if "categories" not in instances.dataset:
            raise UserError(f"instances file {instances_path} has no 'categories'")
    records = []
    for image_id in sorted(captions.imgs):
        info = captions.imgs[image_id]
        anns = sorted(captions.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        if not anns:
            continue
        record = ImageRecord(
            image_id=int(image_id),
            file_name=str(info["file_name"]),
            width=int(info.get("width", 0)),
            height=int(info.get("height", 0)),
            captions=[Caption(int(a["id"]), str(a["caption"]).strip()) for a in anns[:captions_per_image]],
        )
        if instances is not None:
            record.instances = [
                Instance(
                    annotation_id=int(a["id"]),
                    category_id=int(a["category_id"]),
                    category=str(instances.cats[a["category_id"]]["name"]),
                    segmentation=a["segmentation"],
                    bbox=tuple(float(v) for v in a.get("bbox", (0, 0, 0, 0))),
                    iscrowd=bool(a.get("iscrowd", 0)),
                )
                for a in sorted(instances.imgToAnns.get(image_id, []), key=lambda a: a["id"])
            ]
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return records
