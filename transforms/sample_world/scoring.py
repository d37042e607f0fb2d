"""Pair precision of a mining run on the sample set, against chance.

A pair is right when the mask chosen for its noun is a ground-truth instance
of the noun's class (IoU >= ``iou``; with ``coco-gt`` based proposals right
answers are exact copies). Nouns that name no class (distractors such as
"cartoon") or a class absent from the image are not scored, and counted.

Chance is the precision of picking one of the image's proposals uniformly at
random: for each scored pair, the fraction of that image's proposals that are
right for the noun, averaged over pairs. The proposals are rebuilt from the
run's own settings (run.json), so chance refers to exactly what CLIP chose
from.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from maskmine.transforms.coco_reader import read_captioned_images
from maskmine.transforms.errors import SettingError
from maskmine.transforms.image_io import read_image
from maskmine.transforms.proposals.base import mask_iou_matrix
from maskmine.transforms.proposals.coco_gt import instance_mask
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.run_folder import PARQUET_GLOB, RUN_FILE
from maskmine.transforms.sample_world.vocabulary import noun_to_class

NOT_IN_VOCABULARY = "noun-names-no-class"
CLASS_ABSENT = "class-not-in-image"


@dataclass
class PairPrecision:
    pairs: int  # all pairs of the run
    scored: int  # pairs whose noun names a class present in the image
    correct: int
    precision: float
    chance: float  # expected precision of a uniformly random proposal
    proposals_per_image: float
    unscored: dict[str, int] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> pairs, correct, precision
    index_mismatches: int = 0  # pairs whose rebuilt proposal differs from the stored mask (should be 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _decode(counts: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [int(height), int(width)], "counts": counts.encode("ascii")}).astype(bool)


def _right(masks: np.ndarray, gt: list[np.ndarray], iou: float) -> np.ndarray:
    """(K,) bool: each mask matches one of ``gt`` with IoU >= ``iou``."""
    if not gt or masks.shape[0] == 0:
        return np.zeros(masks.shape[0], bool)
    both = np.concatenate([masks, np.stack(gt)])
    ious = mask_iou_matrix(both)[: masks.shape[0], masks.shape[0] :]
    return ious.max(1) >= iou


def load_pairs(run_dir: str | Path) -> pd.DataFrame:
    files = sorted(Path(run_dir).glob(PARQUET_GLOB))
    if not files:
        raise UserError(f"{run_dir} has no {PARQUET_GLOB}: is it a mining run folder?")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def pair_precision(
    run_dir: str | Path, instances: str | Path | None = None, images: str | Path | None = None, iou: float = 0.9
) -> PairPrecision:
    """Score a mining run; ``instances``/``images`` default to those recorded in run.json."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / RUN_FILE).read_text())
    identity = run["identity"]
    instances = instances or identity.get("instances")
    images = images or run.get("images")
    if not instances:
        raise SettingError("instances", "must name the instances file of the mined split: its run.json records none")
    pairs = load_pairs(run_dir)
    records = {
        r.image_id: r
        for r in read_captioned_images(identity["captions"], instances, identity.get("captions_per_image", 5))
    }
    spec = ProposalSpec.from_identity(identity["proposals"], device="cpu")
    generator = build_proposal_generator(spec)
    vocabulary = noun_to_class()
    unscored: dict[str, int] = {}
    per_class: dict[str, list[int]] = {}
    correct = scored = mismatches = 0
    chances: list[float] = []
    proposal_counts: list[int] = []
    for image_id, rows in pairs.groupby("image_id", sort=True):
        record = records[int(image_id)]
        first = rows.iloc[0]
        height, width = int(first["height"]), int(first["width"])
        by_class: dict[str, list[np.ndarray]] = {}
        for inst in record.instances:
            if not inst.iscrowd:
                by_class.setdefault(inst.category, []).append(instance_mask(inst, height, width))
        image = read_image(Path(images) / record.file_name) if images else np.zeros((height, width, 3), np.uint8)
        proposals = generator.generate([image], [record])[0].masks
        proposal_counts.append(int(proposals.shape[0]))
        for _, row in rows.iterrows():
            cls = vocabulary.get(str(row["noun"]))
            if cls is None:
                unscored[NOT_IN_VOCABULARY] = unscored.get(NOT_IN_VOCABULARY, 0) + 1
                continue
            if cls not in by_class:
                unscored[CLASS_ABSENT] = unscored.get(CLASS_ABSENT, 0) + 1
                continue
            chosen = _decode(str(row["mask_rle"]), height, width)
            index = int(row["proposal_index"])
            if index >= proposals.shape[0] or not np.array_equal(proposals[index], chosen):
                mismatches += 1
            ok = bool(_right(chosen[None], by_class[cls], iou)[0])
            right = _right(proposals, by_class[cls], iou)
            chances.append(float(right.mean()) if right.size else 0.0)
            scored += 1
            correct += ok
            stats = per_class.setdefault(cls, [0, 0])
            stats[0] += 1
            stats[1] += ok
    return PairPrecision(
        pairs=int(len(pairs)),
        scored=scored,
        correct=correct,
        precision=correct / scored if scored else 0.0,
        chance=float(np.mean(chances)) if chances else 0.0,
        proposals_per_image=float(np.mean(proposal_counts)) if proposal_counts else 0.0,
        unscored=dict(sorted(unscored.items())),
        per_class={c: {"pairs": n, "correct": k, "precision": round(k / n, 4)} for c, (n, k) in sorted(per_class.items())},
        index_mismatches=mismatches,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pair precision of a sample-set mining run against chance.")
    parser.add_argument("run", help="mining run folder (maskmine mine --out)")
    parser.add_argument("--instances", help="instances file of the mined split (default: from run.json)")
    parser.add_argument("--images", help="images folder (default: from run.json)")
    parser.add_argument("--iou", type=float, default=0.9, help="IoU with a ground-truth instance that counts as right")
    args = parser.parse_args(argv)
    try:
        print(pair_precision(args.run, args.instances, args.images, args.iou).to_json())
    except SettingError as exc:  # this script's flags are its settings' names with dashes
        parser.error(f"argument --{exc.setting.replace('_', '-')}: {exc.problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
