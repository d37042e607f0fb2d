"""HTML for the audit report: static pages, inline CSS, no scripts, no external assets.

Every number of the summary carries its raw value in a ``data-value``
attribute and its source in ``data-stat`` (stats.json) or ``data-parquet``
(the Parquet table), so tools and tests can read the page back exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Iterable, Sequence

CSS = """
:root { --fg:#1d2329; --muted:#5f6b76; --line:#d9dee3; --bg:#f6f7f9; --accent:#1f6fb2; --bad:#b3261e; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2329; color:#fff; padding:10px 24px; display:flex; gap:24px; align-items:baseline; flex-wrap:wrap; }
header .title { font-weight:600; font-size:16px; }
header nav a { color:#cfe3f5; margin-right:16px; text-decoration:none; }
header nav a.here { color:#fff; border-bottom:2px solid #fff; }
main { padding:16px 24px 48px; max-width:1500px; }
h1 { font-size:22px; margin:8px 0 4px; }
h2 { font-size:18px; margin:28px 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h2 small, h3 small { color:var(--muted); font-weight:normal; font-size:13px; }
p.lead { color:var(--muted); margin-top:0; }
.tables { display:flex; gap:24px; flex-wrap:wrap; align-items:flex-start; }
table { border-collapse:collapse; background:#fff; border:1px solid var(--line); min-width:260px; }
caption { text-align:left; font-weight:600; padding:6px 0; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.sub th { padding-left:24px; font-weight:normal; color:var(--muted); }
.ok { color:#1b7f3b; font-weight:600; } .bad { color:var(--bad); font-weight:600; }
.plots { display:grid; grid-template-columns:repeat(auto-fill,minmax(460px,1fr)); gap:16px; }
.plots figure { margin:0; background:#fff; border:1px solid var(--line); padding:8px; }
.plots img { width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:13px; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(330px,1fr)); gap:12px; }
.groups { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; margin-top:12px; }
.group { background:#e9edf1; border-radius:8px; padding:8px; max-width:100%; }
.group h3 { margin:0 0 8px; font-size:15px; }
.group .cards { display:flex; flex-wrap:wrap; gap:12px; }
.group .card { width:330px; }
.card { margin:0; background:#fff; border:1px solid var(--line); border-radius:6px; padding:8px; }
.card .pair { display:flex; gap:6px; align-items:flex-start; height:164px; }
.card .src { flex:1 1 auto; min-width:0; height:160px; object-fit:contain; background:#eef0f2; }
.card .crop { flex:0 0 auto; width:160px; height:160px; image-rendering:pixelated; border:1px solid var(--line); }
.card .missing { flex:1 1 auto; height:160px; display:flex; align-items:center; justify-content:center; text-align:center;
  color:var(--muted); background:#eef0f2; font-size:12px; padding:8px; }
.card figcaption { margin-top:6px; color:var(--fg); }
.card .noun { font-weight:600; font-size:15px; }
.card .num { font-variant-numeric:tabular-nums; }
.card .meta { color:var(--muted); font-size:12px; word-break:break-all; }
.card .badge { display:inline-block; background:var(--accent); color:#fff; border-radius:3px; padding:0 6px; margin-right:6px; font-size:12px; }
.links a { display:inline-block; margin:4px 16px 4px 0; }
.note { background:#fff8e1; border:1px solid #f0d98c; padding:8px 12px; }
code { background:#eef0f2; padding:1px 4px; border-radius:3px; }
"""


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
    badge: str = ""


def fmt_int(n: int) -> str:
    return f"{int(n):,}"


def fmt_float(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def page(title: str, pages: Sequence[tuple[str, str]], current: str, body: str, run_name: str) -> str:
    here = ' class="here"'
    nav = "".join(
        f'<a href="{escape(href)}"{here if href == current else ""}>{escape(label)}</a>' for href, label in pages
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)} · maskmine audit</title>\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><span class=\"title\">maskmine audit · {escape(run_name)}</span><nav>{nav}</nav></header>\n"
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def value_cell(value: float | int, source: str, name: str, digits: int = 3) -> str:
    """A numeric table cell tagged with its source (stats / parquet) and raw value."""
    shown = fmt_int(value) if isinstance(value, int) else f"{value:,.{digits}f}"
    return f'<td class="num" data-{source}="{escape(name)}" data-value="{escape(str(value))}">{shown}</td>'


def table(caption: str, rows: Iterable[str]) -> str:
    return f"<table><caption>{escape(caption)}</caption>{''.join(rows)}</table>"


def row(label: str, cell: str, sub: bool = False) -> str:
    cls = ' class="sub"' if sub else ""
    return f"<tr{cls}><th>{escape(label)}</th>{cell}</tr>"


def card_html(card: Card) -> str:
    if card.image_src:
        size = f' width="{card.image_size[0]}" height="{card.image_size[1]}"' if card.image_size else ""
        src = (
            f'<img class="src" src="{escape(card.image_src)}"{size} '
            f'alt="image {card.image_id} with the mask of {escape(card.noun)} outlined">'
        )
    else:
        src = f'<div class="missing">source image not shown<br>{escape(card.image_note)}</div>'
    crop = (
        f'<img class="crop" src="{escape(card.crop_src)}" width="160" height="160" '
        f'alt="masked crop of {escape(card.noun)} as CLIP saw it">'
    )
    margin = "n/a (one proposal)" if card.margin is None else f"{card.margin:.3f}"
    badge = f'<span class="badge">{escape(card.badge)}</span>' if card.badge else ""
    return (
        f'<figure class="card" id="{escape(card.key)}">'
        f'<div class="pair">{src}{crop}</div>'
        f'<figcaption>{badge}<span class="noun">{escape(card.noun)}</span> '
        f'<span class="num">score {card.score:.3f} · margin {margin}</span><br>'
        f'<span class="meta">{escape(card.key)} · {escape(card.file_name)}</span></figcaption></figure>'
    )


def grid(cards: Iterable[Card]) -> str:
    return '<div class="grid">' + "".join(card_html(c) for c in cards) + "</div>"
