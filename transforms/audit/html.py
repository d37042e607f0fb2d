"""HTML for the audit report: static pages, inline CSS, no scripts, no external assets.

The pages are Jinja2 templates in ``templates/`` (autoescaped: a caption, noun or
path reaches the page as text, never as markup); this module loads them and
holds what they show. Every number of the summary carries its raw value in a
``data-value`` attribute and its source in ``data-stat`` (stats.json) or
``data-parquet`` (the Parquet table), so tools and tests can read the page back exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Card:
    """One pair as a gallery shows it."""

    key: str
    noun: str
    score: float
    margin: float | None
    image_id: int
    file_name: str
    crop_src: str  # relative path of the crop thumbnail
    image_src: str | None  # relative path of the outlined source image, None when unavailable
    image_note: str = ""  # why the source image is missing
    image_size: tuple[int, int] | None = None  # (w, h) of the source thumbnail


@dataclass
class Cell:
    """A numeric summary cell: its raw value, where it comes from (stat, parquet, derived) and its name there."""

    value: float | int
    source: str
    name: str
    digits: int = 3

    @property
    def shown(self) -> str:
        return fmt_int(self.value) if isinstance(self.value, int) else f"{self.value:,.{self.digits}f}"


@dataclass
class Row:
    """A labelled row of a summary table; ``sub`` rows are indented under the row above."""

    label: str
    cell: Cell
    sub: bool = False


def fmt_int(n: int) -> str:
    return f"{int(n):,}"


def fixed(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates' environment: autoescaped, block tags leave no blank lines."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["thousands"] = fmt_int
    env.filters["fixed"] = fixed
    return env


def render(template: str, **context) -> str:
    """One page from ``templates/TEMPLATE``."""
    return environment().get_template(template).render(**context)
