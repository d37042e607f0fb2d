"""Ground-truth masks plus plausible wrong ones: a benchmark for the matching step.

With ``coco-gt`` alone every proposal is a whole object, so picking the right
one for a noun only needs the right class. Real proposal models also offer
two objects merged, half an object and bits of background; this backend adds
such distractors (unions of two instances, parts cut from one, blobs over the
background) so pair precision measures whether CLIP prefers the whole, right
object. Distractors are drawn from a generator seeded by the image id, and the
proposal order is shuffled the same way, so a rerun gives the same proposals
and the index says nothing about which ones are ground truth.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from maskmine.transforms.proposals.base import ProposalGenerator, mask_iou_matrix
from maskmine.transforms.proposals.coco_gt import instance_masks
from maskmine.transforms.records import ImageRecord, ProposalSet

NAME = "coco-gt+distractors"
SALT = 7919  # mixes into the per-image seed so distractors differ from other per-id draws


class CocoGtDistractorProposals(ProposalGenerator):
    """Every non-crowd instance plus unions, parts and background blobs.

    ``unions``/``parts`` are per ground-truth instance (rounded up, at least
    one each when there are instances to use); ``blobs`` is per image. A
    distractor that is nearly a copy of a kept mask (IoU >= ``max_iou``) or
    smaller than ``min_area_fraction`` of the image is dropped.
    """

    name = NAME

    def __init__(
        self, unions: float = 0.5, parts: float = 0.5, blobs: int = 2,
        max_iou: float = 0.8, min_area_fraction: float = 0.002, seed: int = 0,
    ) -> None:
        self.unions, self.parts, self.blobs = unions, parts, blobs
        self.max_iou = max_iou
        self.min_area_fraction = min_area_fraction
        self.seed = seed
        self.checkpoint = ""

    def propose(self, images: Sequence[np.ndarray], records: Sequence[ImageRecord]) -> list[ProposalSet]:
        out = []
        for image, record in zip(images, records):
            height, width = image.shape[:2]
            gt = instance_masks(record, height, width)[1]
            gt = [m for m in gt if m.any()]
            masks, is_gt = self.proposals_for(record.image_id, gt, height, width)
            out.append(
                ProposalSet(
                    masks=masks,
                    scores=np.ones(masks.shape[0], np.float32),
                    backend=self.name,
                    checkpoint=self.checkpoint,
                )
            )
        return out

    def proposals_for(
        self, image_id: int, gt: list[np.ndarray], height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(K, H, W)`` masks in shuffled order and which of them are ground truth."""
        rng = np.random.default_rng([int(image_id) & 0xFFFFFFFFFFFF, SALT, self.seed])
        candidates = self._unions(rng, gt) + self._parts(rng, gt) + self._blobs(rng, gt, height, width)
        kept = list(gt)
        min_area = max(16.0, self.min_area_fraction * height * width)
        for cand in candidates:
            if cand.sum() < min_area:
                continue
            if kept and mask_iou_matrix(np.stack(kept + [cand]))[-1, :-1].max() >= self.max_iou:
                continue
            kept.append(cand)
        flags = np.array([True] * len(gt) + [False] * (len(kept) - len(gt)), bool)
        if not kept:
            return np.zeros((0, height, width), bool), flags
        order = rng.permutation(len(kept))
        return np.stack([kept[i] for i in order]), flags[order]

    def _unions(self, rng: np.random.Generator, gt: list[np.ndarray]) -> list[np.ndarray]:
        if len(gt) < 2:
            return []
        pairs = [(a, b) for a in range(len(gt)) for b in range(a + 1, len(gt))]
        touching = [p for p in pairs if _touch(gt[p[0]], gt[p[1]])]
        others = [p for p in pairs if p not in touching]
        rng.shuffle(touching)
        rng.shuffle(others)
        n = max(1, math.ceil(self.unions * len(gt)))
        return [gt[a] | gt[b] for a, b in (touching + others)[:n]]

    def _parts(self, rng: np.random.Generator, gt: list[np.ndarray]) -> list[np.ndarray]:
        if not gt:
            return []
        n = max(1, math.ceil(self.parts * len(gt)))
        out = []
        for k in rng.permutation(len(gt))[:n]:
            mask = gt[int(k)]
            ys, xs = np.nonzero(mask)
            angle = rng.uniform(0, math.pi)
            offset = rng.uniform(-0.3, 0.3)
            proj = (xs - xs.mean()) * math.cos(angle) + (ys - ys.mean()) * math.sin(angle)
            cut = offset * (proj.std() + 1e-6)
            side = proj > cut if rng.random() < 0.5 else proj <= cut
            part = np.zeros_like(mask)
            part[ys[side], xs[side]] = True
            out.append(part)
        return out

    def _blobs(self, rng: np.random.Generator, gt: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
        covered = np.logical_or.reduce(gt) if gt else np.zeros((height, width), bool)
        out = []
        for _ in range(self.blobs):
            blob = _random_blob(rng, height, width)
            free = blob & ~covered
            out.append(free if free.sum() >= 0.5 * blob.sum() else blob)
        return out


def _touch(a: np.ndarray, b: np.ndarray, gap: int = 3) -> bool:
    """The masks come within ``gap`` pixels of each other (box test, then a dilation)."""
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    if xa.min() > xb.max() + gap or xb.min() > xa.max() + gap or ya.min() > yb.max() + gap or yb.min() > ya.max() + gap:
        return False
    grown = a.copy()
    for dy in range(-gap, gap + 1, gap):
        for dx in range(-gap, gap + 1, gap):
            grown |= np.roll(np.roll(a, dy, 0), dx, 1)
    return bool((grown & b).any())


def _random_blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A rough polygon ("blob") of 5-30% of the image side, anywhere."""
    side = min(height, width)
    r = rng.uniform(0.05, 0.3) * side
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    n = int(rng.integers(6, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.6, 1.3, n)
    pts = [(float(cx + q * math.cos(a)), float(cy + q * math.sin(a))) for a, q in zip(angles, radii)]
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon(pts, fill=255)
    return np.asarray(img) > 0
