"""Records that cross pipeline stages.

Every stage of the mining job is a plain function over these dataclasses, so it
can be tested without Beam; the Beam wrappers in ``pipelines/stages.py`` only
move them around. Images and masks are numpy arrays: images ``(H, W, 3)``
uint8 RGB, masks ``(H, W)`` or ``(K, H, W)`` bool.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Why an image ends without pairs. Every image read ends as "mined" or as
# skipped with exactly one of these reasons, so the counts in stats.json add up.
SKIP_MISSING_IMAGE = "missing-image"
SKIP_CORRUPT_IMAGE = "corrupt-image"
SKIP_NO_NOUNS = "no-nouns"
SKIP_NO_PROPOSALS = "no-proposals"
SKIP_NO_PAIRS = "no-pairs-kept"  # every pair was dropped (e.g. by --min-score)
SKIP_PERMISSION_DENIED = "permission-denied"  # the file exists but cannot be read
SKIP_TOO_LARGE = "too-large"  # over --max-megapixels, or a decompression bomb
SKIP_SIZE_MISMATCH = "size-mismatch"  # decoded size differs from the annotation file's width/height
SKIP_REASONS = (
    SKIP_MISSING_IMAGE,
    SKIP_CORRUPT_IMAGE,
    SKIP_PERMISSION_DENIED,
    SKIP_TOO_LARGE,
    SKIP_SIZE_MISMATCH,
    SKIP_NO_NOUNS,
    SKIP_NO_PROPOSALS,
    SKIP_NO_PAIRS,
)

# Why a single pair is dropped while its image may still be mined.
DROP_BELOW_MIN_SCORE = "below-min-score"


@dataclass(frozen=True)
class Caption:
    caption_id: int
    text: str


@dataclass(frozen=True)
class Instance:
    """One COCO instance annotation (used by the coco-gt proposals and label mode)."""

    annotation_id: int
    category_id: int
    category: str
    segmentation: Any  # COCO polygons (list) or RLE (dict), as in the file
    bbox: tuple[float, float, float, float]  # x, y, w, h
    iscrowd: bool = False


@dataclass
class ImageRecord:
    """One image of the captions file with its first N captions."""

    image_id: int
    file_name: str
    width: int
    height: int
    captions: list[Caption]
    instances: list[Instance] = field(default_factory=list)
    # Annotations and captions of this image left out as unusable, one dict each
    # ({"annotation_id" or "caption_id", "reason", "problem", "detail"}); see transforms/annotations.py.
    rejects: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class NounOccurrence:
    """A unique noun of an image and the captions it came from."""

    noun: str
    caption_ids: tuple[int, ...]


@dataclass
class ProposalSet:
    """Class-agnostic mask proposals for one image."""

    masks: np.ndarray  # (K, H, W) bool, at the image's resolution
    scores: np.ndarray  # (K,) float32 objectness / confidence
    backend: str
    checkpoint: str = ""
    labels: list[str] | None = None  # category names, where the backend knows them
    # eval only: (K, H, W) float32 mask probabilities (MaskFormer's sigmoid) behind ``masks``;
    # OVSeg's semantic inference sums these, and ``masks`` is then ``soft_masks > threshold``.
    soft_masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True)
class Match:
    """The proposal chosen for one noun, with how sure CLIP was."""

    noun: str
    proposal_index: int
    score: float  # cosine similarity of crop and text embeddings
    probability: float  # softmax over the image's proposals (CLIP logit scale)
    margin: float | None  # score minus the runner-up's score; None with one proposal


@dataclass
class PairSample:
    """One mined (masked crop, noun) pair, ready to be written."""

    key: str
    image_id: int
    file_name: str
    noun: str
    caption_ids: list[int]
    proposal_index: int
    box: list[int]  # tight box of the mask in image pixels: x, y, w, h
    rle: dict  # full-image mask as COCO RLE: {"size": [h, w], "counts": str}
    score: float
    probability: float
    margin: float | None
    proposal_backend: str
    proposal_checkpoint: str
    clip_model: str
    clip_pretrained: str
    label_source: str  # "caption" (nouns) or "category" (ground-truth labels)
    crop_jpg: bytes
    crop_mask_png: bytes

    def metadata(self) -> dict:
        """What goes into the sample's ``json`` member and the Parquet row."""
        return {
            "key": self.key,
            "image_id": self.image_id,
            "file_name": self.file_name,
            "noun": self.noun,
            "caption_ids": list(self.caption_ids),
            "proposal_index": self.proposal_index,
            "box": list(self.box),
            "rle": self.rle,
            "score": self.score,
            "probability": self.probability,
            "margin": self.margin,
            "proposal_backend": self.proposal_backend,
            "proposal_checkpoint": self.proposal_checkpoint,
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "label_source": self.label_source,
        }


@dataclass
class ImageResult:
    """How one image ended: mined with pairs, or skipped with a reason."""

    image_id: int
    file_name: str
    shard: int
    status: str  # "mined" or "skipped"
    reason: str | None = None
    pairs: list[PairSample] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)  # the record's rejected annotations/captions


@dataclass
class MiningItem:
    """The element that flows through the mining pipeline, one per image."""

    record: ImageRecord
    shard: int
    nouns: list[NounOccurrence] = field(default_factory=list)
    image: np.ndarray | None = None
    proposals: ProposalSet | None = None
    skip_reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    def skip(self, reason: str) -> "MiningItem":
        self.skip_reason = reason
        self.image = None
        self.proposals = None
        return self
