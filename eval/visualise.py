"""Colours for label maps, shared by the eval visualisations and the demo page.

A figure's colours are assigned to the classes it shows, in class-id order,
from Kelly's colours of maximum contrast (white and black left out) (then a hue walk beyond that), so
the classes next to each other in one picture never get look-alike colours;
the ground-truth panel, the prediction panel and the legend share one table.
Pixels with no class (ignore / uncovered) are drawn black.
"""
from __future__ import annotations

import colorsys
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

NO_CLASS_COLOUR = (0, 0, 0)
KELLY = (
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50),
    (194, 178, 128), (132, 132, 130), (0, 136, 86), (230, 143, 172), (0, 103, 165), (249, 147, 121),
    (96, 78, 151), (246, 166, 0), (179, 68, 108), (220, 211, 0), (136, 45, 23), (141, 182, 0),
    (101, 69, 34), (226, 88, 34), (43, 61, 38),
)
_GOLDEN = 0.618033988749895


def nth_colour(k: int) -> tuple[int, int, int]:
    """The k-th colour of a figure's table."""
    if k < len(KELLY):
        return KELLY[k]
    r, g, b = colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.75, 0.9)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def colour_table(class_ids: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """Class id → colour for the classes of one figure (sorted ids get successive colours)."""
    return {c: nth_colour(k) for k, c in enumerate(sorted(set(int(c) for c in class_ids)))}


def hex_colour(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def colourise(labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """(H, W) label map → (H, W, 3) uint8; labels without a colour (ignore) are black."""
    labels = np.asarray(labels)
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    out[:] = NO_CLASS_COLOUR
    for c, rgb in colours.items():
        out[labels == c] = rgb
    return out


def overlay(
    image: np.ndarray, labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]], alpha: float = 0.55
) -> np.ndarray:
    """The image with the coloured labels blended on top; unlabelled pixels left as they are."""
    painted = colourise(labels, colours).astype(np.float32)
    base = np.asarray(image, dtype=np.float32)
    valid = np.isin(labels, list(colours))[..., None]
    blended = np.where(valid, (1 - alpha) * base + alpha * painted, base)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def present_classes(labels: np.ndarray, num_classes: int) -> list[tuple[int, int]]:
    """(class id, pixel count) of the classes in a label map, largest first."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    found = [(int(v), int(n)) for v, n in zip(values, counts) if 0 <= v < num_classes]
    return sorted(found, key=lambda vc: (-vc[1], vc[0]))


def comparison_panel(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    max_legend: int = 24,
) -> Image.Image:
    """image | ground truth | prediction side by side, with a legend of the classes shown."""
    n = len(class_names)
    h, w = gt.shape
    ids = dict(present_classes(gt, n))
    for c, count in present_classes(pred, n):
        ids[c] = ids.get(c, 0) + count
    colours = colour_table(ids)
    panels = [np.asarray(image, dtype=np.uint8), colourise(gt, colours), colourise(pred, colours)]
    strip = np.concatenate(panels, axis=1)
    legend = sorted(ids, key=lambda c: (-ids[c], c))[:max_legend]
    font = ImageFont.load_default()
    title_h, row_h = 16, 14
    columns = max(1, (3 * w) // 180)
    rows = (len(legend) + columns - 1) // columns
    canvas = Image.new("RGB", (3 * w, title_h + h + rows * row_h + 6), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(("image", "ground truth", "prediction")):
        draw.text((i * w + 4, 2), title, fill=(0, 0, 0), font=font)
    canvas.paste(Image.fromarray(strip), (0, title_h))
    for k, c in enumerate(legend):
        x = (k % columns) * 180 + 4
        y = title_h + h + 3 + (k // columns) * row_h
        draw.rectangle((x, y + 1, x + 10, y + 11), fill=colours[c], outline=(0, 0, 0))
        draw.text((x + 14, y), str(class_names[c])[:26], fill=(0, 0, 0), font=font)
    return canvas
