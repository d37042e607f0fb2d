"""Prompt templates for CLIP text embeddings of class names.

``VILD_TEMPLATES`` are the 14 prompts ViLD introduced and OVSeg uses for
evaluation (``TEXT_TEMPLATES: "vild"``); the text embedding of a class is the
normalised mean of its normalised per-template embeddings. Their punctuation
is kept exactly as in ViLD/OVSeg (some end without a period), because the
tokens change the embeddings and so the reported numbers.
"""
from __future__ import annotations

from typing import Literal

VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

TemplateSet = Literal["vild", "simple"]
TEMPLATE_SETS: dict[TemplateSet, tuple[str, ...]] = {"vild": VILD_TEMPLATES, "simple": SIMPLE_TEMPLATES}
