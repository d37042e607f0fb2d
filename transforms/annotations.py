"""Checks of COCO instance annotations, so one malformed annotation is a counted skip, not a crash.

pycocotools trusts its input: a polygon with fewer than three points is taken
for a box or rejected with ``TypeError: Argument 'bb' has incorrect type``; an
RLE whose counts do not add up to ``h * w`` is decoded from uninitialised
memory or rejected with ``Invalid RLE mask representation``; a missing
``size`` is a ``KeyError``; a coordinate of 1e9 overflows its int32 arithmetic
and a long outline makes it allocate memory in proportion to the outline's
length (22 GB for one polygon at 1e9). ``check_segmentation`` finds each of
these before pycocotools sees the annotation, and names it: coordinates must
lie within ``COORDINATE_MARGIN`` image sizes of the image (when its size is
known), and the outline of an annotation's polygons is capped at
``MAX_OUTLINE`` pixels whatever the coordinates, which bounds pycocotools'
memory (measured: 51 MB of peak RSS for 1,024,000 outline pixels, about 50 bytes each).

A rejected annotation is recorded on its ``ImageRecord`` as a dict
``{"annotation_id", "reason": "bad-annotation", "problem", "detail"}``; the
rest of the image is still mined, and the mining job counts the rejects in
stats.json (``annotations_skipped``) and lists them in rejects.jsonl.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

REJECT_BAD_ANNOTATION = "bad-annotation"

# The kinds of problem (``problem`` of a reject), in the order they are checked.
PROBLEM_BAD_FIELDS = "bad-fields"  # id / category_id / bbox / iscrowd not numbers
PROBLEM_UNKNOWN_CATEGORY = "unknown-category"
PROBLEM_EMPTY_SEGMENTATION = "empty-segmentation"
PROBLEM_DEGENERATE_POLYGON = "degenerate-polygon"  # under 3 points, odd coordinate count
PROBLEM_BAD_POLYGON = "bad-polygon"  # a coordinate that is not a finite number
PROBLEM_BAD_RLE = "bad-rle"  # no or malformed size, counts that do not decode to h*w pixels
PROBLEM_SIZE_MISMATCH = "rle-size-mismatch"  # RLE size differs from the image
PROBLEM_OUT_OF_RANGE = "coordinates-out-of-range"  # a polygon or bbox coordinate far outside the image
PROBLEM_OUTLINE_TOO_LONG = "outline-too-long"  # polygons longer than MAX_OUTLINE pixels in all
PROBLEM_EMPTY_MASK = "empty-mask"  # decodes to no pixel of the image (outside it, or thinner than a pixel)
PROBLEMS = (
    PROBLEM_BAD_FIELDS, PROBLEM_UNKNOWN_CATEGORY, PROBLEM_EMPTY_SEGMENTATION,
    PROBLEM_DEGENERATE_POLYGON, PROBLEM_BAD_POLYGON, PROBLEM_BAD_RLE, PROBLEM_SIZE_MISMATCH,
    PROBLEM_OUT_OF_RANGE, PROBLEM_OUTLINE_TOO_LONG, PROBLEM_EMPTY_MASK,
)
# A coordinate may lie up to this many image widths (heights) left of (above) the image or right of
# (below) it: generous for annotation tools that let points stray, far short of pycocotools' int32 limits.
COORDINATE_MARGIN = 4
# Pixels of outline (sum over the edges of max(|dx|, |dy|), closing edges included) of one annotation's
# polygons: 40x the border of a 40 MP image, and about 52 MB of pycocotools memory at most.
MAX_OUTLINE = 1 << 20


class AnnotationProblem(Exception):
    """One annotation cannot be used: ``problem`` is one of ``PROBLEMS``."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


def reject(annotation_id: Any, problem: str, detail: str) -> dict:
    """The reject entry of one annotation, as it goes to rejects.jsonl."""
    return {"annotation_id": annotation_id, "reason": REJECT_BAD_ANNOTATION, "problem": problem, "detail": detail}


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def compressed_rle_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, checked).

    Raises ValueError on characters outside the alphabet, a truncated run or a negative run.
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data):
                raise ValueError("truncated run length")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(data[p])!r} outside the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"negative run length {x} at run {len(runs)}")
        runs.append(x)
    return runs


def check_in_range(xs: list, ys: list, height: int | None, width: int | None, what: str) -> None:
    """AnnotationProblem ``coordinates-out-of-range`` when a coordinate lies more than
    ``COORDINATE_MARGIN`` image sizes outside the image (no check while the size is unknown)."""
    for values, size, axis in ((xs, width, "x"), (ys, height, "y")):
        if size and size > 0 and values:
            low, high = -COORDINATE_MARGIN * size, (1 + COORDINATE_MARGIN) * size
            worst = min(values) if min(values) < low else max(values)
            if not low <= worst <= high:
                raise AnnotationProblem(
                    PROBLEM_OUT_OF_RANGE,
                    f"{what} has {axis} = {worst!r}, outside {low}..{high} ({COORDINATE_MARGIN} image sizes around the image)"[:200],
                )


def _outline(poly: list) -> float:
    """Pixels of the closed outline as pycocotools walks it: sum of max(|dx|, |dy|) + 1 per edge."""
    xs, ys = poly[0::2], poly[1::2]
    total = 0.0
    for j in range(len(xs)):
        k = (j + 1) % len(xs)
        total += max(abs(float(xs[k]) - float(xs[j])), abs(float(ys[k]) - float(ys[j]))) + 1
    return total


def check_segmentation(seg: Any, height: int | None = None, width: int | None = None) -> None:
    """Raise AnnotationProblem when pycocotools could not decode ``seg`` correctly.

    ``height``/``width`` (when known and positive) are the image's size: an RLE
    of another size is a ``rle-size-mismatch``, a polygon point far outside it
    ``coordinates-out-of-range``.
    """
    if isinstance(seg, list):
        if not seg:
            raise AnnotationProblem(PROBLEM_EMPTY_SEGMENTATION, "empty polygon list")
        outline = 0.0
        for i, poly in enumerate(seg):
            if not isinstance(poly, list):
                raise AnnotationProblem(PROBLEM_BAD_POLYGON, f"polygon {i} is a {type(poly).__name__}, not a list of coordinates")
            bad = [v for v in poly if not _is_number(v)]
            if bad:
                raise AnnotationProblem(PROBLEM_BAD_POLYGON, f"polygon {i} has a coordinate that is not a finite number: {bad[0]!r}"[:200])
            if len(poly) % 2:
                raise AnnotationProblem(PROBLEM_DEGENERATE_POLYGON, f"polygon {i} has an odd number of coordinates ({len(poly)})")
            if len(poly) < 6:
                raise AnnotationProblem(PROBLEM_DEGENERATE_POLYGON, f"polygon {i} has {len(poly) // 2} point(s), needs at least 3")
            if len(set(zip(poly[0::2], poly[1::2]))) == 1:
                raise AnnotationProblem(PROBLEM_DEGENERATE_POLYGON, f"polygon {i}: all {len(poly) // 2} points are the same point ({poly[0]!r}, {poly[1]!r})"[:200])
            check_in_range(poly[0::2], poly[1::2], height, width, f"polygon {i}")
            outline += _outline(poly)
            if outline > MAX_OUTLINE:
                raise AnnotationProblem(PROBLEM_OUTLINE_TOO_LONG, f"the polygons' outline exceeds {MAX_OUTLINE} pixels at polygon {i}")
        return
    if not isinstance(seg, dict):
        raise AnnotationProblem(PROBLEM_EMPTY_SEGMENTATION if seg in (None, "", {}) else PROBLEM_BAD_RLE,
                                f"segmentation is a {type(seg).__name__}, neither polygons nor RLE")
    size = seg.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_count(v) and v > 0 for v in size)):
        raise AnnotationProblem(PROBLEM_BAD_RLE, f"RLE size must be [height, width] of positive integers, got {size!r}"[:200])
    h, w = int(size[0]), int(size[1])
    counts = seg.get("counts")
    if isinstance(counts, list):
        if not all(_is_count(v) and v >= 0 for v in counts):
            raise AnnotationProblem(PROBLEM_BAD_RLE, "RLE counts must be non-negative integers")
        runs = counts
    elif isinstance(counts, (str, bytes)):
        try:
            runs = compressed_rle_counts(counts)
        except (ValueError, UnicodeEncodeError) as exc:
            raise AnnotationProblem(PROBLEM_BAD_RLE, f"RLE counts do not decode: {exc}") from exc
    else:
        raise AnnotationProblem(PROBLEM_BAD_RLE, f"RLE counts is a {type(counts).__name__}, not a list or string")
    if sum(runs) != h * w:
        raise AnnotationProblem(PROBLEM_BAD_RLE, f"RLE counts cover {sum(runs)} pixels, its size {h}x{w} has {h * w}")
    if height and width and (h, w) != (int(height), int(width)):
        raise AnnotationProblem(PROBLEM_SIZE_MISMATCH, f"RLE size {h}x{w} differs from the image's {int(height)}x{int(width)}")
