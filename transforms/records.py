"""Records that cross pipeline stages.

Every stage of the mining job is a plain function over these dataclasses, so it
can be tested without Beam; ``transforms/shard_mining.py`` runs them on a
shard and ``pipelines/mine_dofn.py`` only wires that into Beam. Images and masks are numpy arrays: images ``(H, W, 3)``
uint8 RGB, masks ``(H, W)`` or ``(K, H, W)`` bool.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np

# Why an image ends without pairs. Every image read ends as "mined" or as
# skipped with exactly one of these reasons, so the counts in stats.json add up.
class Skip:
    """The image skip reasons, each declared once. Plain ``str`` values, not an Enum:
    reasons read back from rejects.jsonl or stats.json are plain strings, and they
    must be equal to (and hash like) these in counters and sets."""

    MISSING_IMAGE = "missing-image"
    CORRUPT_IMAGE = "corrupt-image"
    PERMISSION_DENIED = "permission-denied"  # the file exists but cannot be read
    TOO_LARGE = "too-large"  # over --max-megapixels, or a decompression bomb
    SIZE_MISMATCH = "size-mismatch"  # decoded size differs from the annotation file's width/height
    OUTSIDE_IMAGES = "outside-images"  # file_name is absolute, a URL or climbs out of --images with ".."
    BAD_FILE_NAME = "bad-file-name"  # file_name is not text, empty, or holds a NUL byte or a lone surrogate
    NOT_A_FILE = "not-a-file"  # the path is a folder, FIFO, device or socket (never opened for reading)
    UNSUPPORTED_MODE = "unsupported-mode"  # pixels without a defined white level (32-bit integer, float outside 0..1)
    DUPLICATE_IMAGE_ID = "duplicate-image-id"  # two image entries share the id with another file or size: both refused
    NO_NOUNS = "no-nouns"
    NO_PROPOSALS = "no-proposals"
    NO_PAIRS = "no-pairs-kept"  # every pair was dropped (e.g. by --min-score)


SkipReason = str  # one of SKIP_REASONS (a Skip attribute)
# Every reason, in declaration order.
SKIP_REASONS: tuple[SkipReason, ...] = tuple(
    value for name, value in vars(Skip).items() if not name.startswith("_")
)
# mine --retry-skipped: reasons that depend on the image file, so restoring the file can change the outcome.
RETRYABLE_REASONS: tuple[SkipReason, ...] = (Skip.MISSING_IMAGE, Skip.CORRUPT_IMAGE)

# mine --labels: what a pair's label comes from: caption nouns or COCO categories (transforms/pairing.py)
Labels = Literal["nouns", "categories"]
LABELS_NOUNS: Labels = "nouns"
LABELS_CATEGORIES: Labels = "categories"
LABELS: tuple[Labels, ...] = get_args(Labels)

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
    # Set by the reader when the image entry itself cannot be used (e.g. duplicate-image-id):
    # the image is then skipped with this reason before any work, and ``skip_detail`` says why.
    skip_reason: str | None = None
    skip_detail: str = ""


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


def column(parquet_type: str) -> Any:
    """A :class:`PairSample` field that is a column of the pair schema, with its Parquet type.

    Types are names (``string``, ``int32``, ``int64``, ``float32``,
    ``list<int32>``, ``list<int64>``, ``list<string>``) so this module needs no pyarrow;
    :mod:`maskmine.transforms.shards` turns them into its Parquet schema.
    """
    return field(metadata={"parquet": parquet_type})


@dataclass
class PairSample:
    """One mined (masked crop, noun) pair, ready to be written.

    The one definition of the pair schema: every field declared with
    :func:`column` is a key of the sample's ``json`` member and a Parquet column,
    with the same name and value, in this order. A new metadata column is a new
    field here, nothing else.
    """

    key: str = column("string")
    image_id: int = column("int64")
    file_name: str = column("string")
    noun: str = column("string")
    caption_ids: list[int] = column("list<int64>")
    captions: list[str] = column("list<string>")  # the texts of caption_ids, in that order (empty for categories)
    proposal_index: int = column("int32")
    box: list[int] = column("list<int32>")  # tight box of the mask in image pixels: x, y, w, h
    # the full-image mask as COCO RLE: its compressed counts and its size (the image's height and width)
    mask_rle: str = column("string")
    height: int = column("int32")
    width: int = column("int32")
    score: float = column("float32")
    probability: float = column("float32")
    margin: float | None = column("float32")
    proposal_backend: str = column("string")
    proposal_checkpoint: str = column("string")
    clip_model: str = column("string")
    clip_pretrained: str = column("string")
    label_source: str = column("string")  # "caption" (nouns) or "category" (ground-truth labels)
    crop_jpg: bytes  # tar members, not metadata
    crop_mask_png: bytes

    def metadata(self) -> dict:
        """What goes into the sample's ``json`` member and, key for key, its Parquet row."""
        meta = {name: getattr(self, name) for name in METADATA_FIELDS}
        meta["caption_ids"] = list(self.caption_ids)
        meta["captions"] = list(self.captions)
        meta["box"] = list(self.box)
        return meta


METADATA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PairSample) if "parquet" in f.metadata)


def pair_columns() -> list[tuple[str, str]]:
    """(name, Parquet type name) of each pair-metadata column of the Parquet table, in order."""
    return [(f.name, f.metadata["parquet"]) for f in fields(PairSample) if "parquet" in f.metadata]


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
    detail: str = ""  # a skipped image: what was wrong, when the reason alone does not say


@dataclass
class MiningItem:
    """The element that flows through the mining pipeline, one per image."""

    record: ImageRecord
    shard: int
    nouns: list[NounOccurrence] = field(default_factory=list)
    image: np.ndarray | None = None
    proposals: ProposalSet | None = None
    skip_reason: SkipReason | None = None
    skip_detail: str = ""  # what was wrong, for rejects.jsonl ("" when the reason says it all)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    def skip(self, reason: SkipReason, detail: str = "") -> "MiningItem":
        self.skip_reason = reason
        self.skip_detail = detail
        self.image = None
        self.proposals = None
        return self
