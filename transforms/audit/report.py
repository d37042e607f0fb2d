"""Build the audit report of a mining run: summary, plots, galleries and a spot-check sheet.

The report is a folder that opens from disk: ``index.html`` plus gallery
pages, ``plots/*.png`` and ``img/*.jpg`` thumbnails, all linked relatively.
Rows are chosen from the in-memory overview first; only the chosen samples
are then read from the shards by byte offset.
"""
from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from markupsafe import Markup

from maskmine.transforms import shard_format
from maskmine.transforms.audit import html as H
from maskmine.transforms.audit.plots import write_plots
from maskmine.transforms.audit.access import RunFolder, read_samples
from maskmine.transforms.audit.scoresheet import write_sheet
from maskmine.transforms.audit.table import (
    Overview,
    Query,
    fetch_details,
    load_overview,
    location_of,
    lowest,
    query_rows,
    rare_nouns,
    rows_of_noun,
    spot_check_rows,
    top_nouns,
)
from maskmine.transforms.audit.thumbs import crop_preview, decode_rle, encode_jpeg, outlined_thumbnail
from maskmine.transforms.errors import SettingError
from maskmine.transforms.image_io import ImageSkip, read_folder_image
from maskmine.transforms.records import Skip

log = logging.getLogger(__name__)

INDEX = "index.html"
FREQUENT = "frequent.html"
RARE = "rare.html"
SUSPICIOUS = "suspicious.html"
SPOT_CHECK = "spot-check.html"
SHEET = "spot-check.csv"
QUERY = "query.html"
SUMMARY_JSON = "report.json"
QUERY_JSON = "query.json"
IMG_DIR = "img"
PLOT_DIR = "plots"


@dataclass
class ReportOptions:
    out: Path
    images: str | None = None  # folder of the source images; None: none shown
    top_nouns: int = 20
    per_noun: int = 6
    rare_nouns: int = 20
    rare_max_pairs: int = 5
    suspicious: int = 36
    sample: int = 0  # spot-check sheet size (0: no sheet)
    seed: int = 0
    query: Query = field(default_factory=Query)
    query_only: bool = False
    max_pairs: int = 200  # most pairs a query page shows
    thumb_side: int = 320
    progress: bool = True


@dataclass
class Section:
    title: str
    rows: list[int]
    anchor: str = ""
    note: str = ""


@dataclass
class GalleryPage:
    file: str
    label: str
    title: str  # text
    lead: str  # text, or Markup where the lead links or marks up
    sections: list[Section]
    numbered: bool = False  # badge each card with its 1-based position (spot-check rows)
    compact: bool = False  # small sections flow side by side (rare nouns have a pair or two each)


@dataclass
class ReportResult:
    out: Path
    pages: dict[str, Path]
    sheet: Path | None
    query_matches: int | None
    pairs_shown: int
    summary: dict


def pairs_label(n: int) -> str:
    return f"{int(n):,} pair" + ("" if n == 1 else "s")


def anchor(text: str) -> str:
    return "n-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x")


# --- choosing what to show --------------------------------------------------------------------


def gallery_pages(ov: Overview, opts: ReportOptions, query_matches: np.ndarray | None) -> list[GalleryPage]:
    pages: list[GalleryPage] = []
    counts = ov.noun_counts()
    if not opts.query_only:
        frequent = top_nouns(ov, opts.top_nouns)
        pages.append(GalleryPage(
            FREQUENT, "Frequent nouns", f"The {len(frequent)} most frequent nouns",
            f"Up to {opts.per_noun} randomly drawn pairs (seed {opts.seed}) of each noun; "
            "left: the source image with the chosen mask outlined, right: the masked crop as CLIP saw it.",
            [Section(f"{ov.nouns[c]}", list(rows_of_noun(ov, c, opts.per_noun, opts.seed)), anchor(ov.nouns[c]),
                     pairs_label(counts[c])) for c in frequent],
        ))
        rare = rare_nouns(ov, opts.rare_nouns, opts.seed, opts.rare_max_pairs, exclude=frequent)
        pages.append(GalleryPage(
            RARE, "Rare nouns", f"A random sample of {len(rare)} rare nouns",
            f"Nouns from the long tail (at most {opts.rare_max_pairs} pairs each where the run has such nouns), "
            f"drawn with seed {opts.seed}.",
            [Section(f"{ov.nouns[c]}", list(rows_of_noun(ov, c, opts.per_noun, opts.seed)), anchor(ov.nouns[c]),
                     pairs_label(counts[c])) for c in rare],
            compact=True,
        ))
        no_margin = int(np.isnan(ov.margin).sum())
        pages.append(GalleryPage(
            SUSPICIOUS, "Suspicious first", "Suspicious pairs first",
            "Pairs where CLIP hesitated: the lowest margins (the chosen mask barely beat the runner-up), "
            f"then the lowest scores. {no_margin:,} pairs from images with a single proposal have no margin.",
            [Section("Lowest margin", list(lowest(ov, ov.margin, opts.suspicious)), "lowest-margin"),
             Section("Lowest score", list(lowest(ov, ov.score, opts.suspicious)), "lowest-score")],
        ))
        if opts.sample > 0:
            sample = list(spot_check_rows(ov, opts.sample, opts.seed))
            pages.append(GalleryPage(
                SPOT_CHECK, "Spot check", f"Spot-check sample: {len(sample)} pairs (seed {opts.seed})",
                Markup('Mark each pair in <a href="{sheet}">{sheet}</a> (verdict: correct / incorrect), '
                       "then run <code>maskmine audit --score-sheet FILLED.csv</code> for the precision. "
                       "The badge is the pair's row in the sheet.").format(sheet=SHEET),
                [Section("Sample", sample, "sample")], numbered=True,
            ))
    if query_matches is not None:
        shown = query_matches[np.lexsort((query_matches, ov.score[query_matches]))][: opts.max_pairs]
        pages.append(GalleryPage(
            QUERY, "Query", f"Query: {opts.query.describe()}",
            f"{len(query_matches):,} pairs match; showing {len(shown):,}, lowest score first.",
            [Section("Matches", list(shown), "matches")],
        ))
    return pages


# --- thumbnails ---------------------------------------------------------------------------------

MAX_NAME = 80  # longest sample key used as it is in a file name


def bounded_name(key: str) -> str:
    """``key`` as a file name: unchanged up to MAX_NAME safe characters, else a prefix plus a hash of the whole key."""
    import hashlib

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    if safe == key and len(key) <= MAX_NAME:
        return key
    return f"{safe[:MAX_NAME - 17]}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:16]}"


def damaged_placeholder(size: int = 160) -> np.ndarray:
    """A grey square with a red cross: the crop of a sample that cannot be decoded."""
    img = np.full((size, size, 3), 200, np.uint8)
    idx = np.arange(size)
    for offset in (-1, 0, 1):
        i = np.clip(idx + offset, 0, size - 1)
        img[idx, i] = (200, 30, 30)
        img[idx, size - 1 - i] = (200, 30, 30)
    return img



class ImageCache:
    """A few decoded source images (cards are rendered grouped by image)."""

    def __init__(self, folder: Path | None, size: int = 4) -> None:
        self.folder = folder
        self.size = size
        self.cache: OrderedDict[str, np.ndarray | str] = OrderedDict()

    def get(self, file_name: str, frame: tuple[int, int] | None = None) -> np.ndarray | str:
        """The image in the frame of its masks (``frame``: their height and width; see
        ``decode_image``), or a string saying why it is not available."""
        if self.folder is None:
            return "no images folder known"
        if file_name in self.cache:
            self.cache.move_to_end(file_name)
            return self.cache[file_name]
        try:  # confined to the folder: a run's metadata names files only inside --images
            value: np.ndarray | str = read_folder_image(self.folder, file_name, frame=frame)
        except ImageSkip as exc:
            value = (f"{file_name} not found in {self.folder}" if exc.reason == Skip.MISSING_IMAGE
                     else f"{file_name} cannot be used ({exc.reason}: {exc.detail})"[:300])
        self.cache[file_name] = value
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return value


def render_cards(
    run: RunFolder, ov: Overview, rows: Sequence[int], out: Path, images: ImageCache, thumb_side: int, progress: bool,
    damaged: list[dict] | None = None,
) -> dict[int, H.Card]:
    """Read the chosen samples by offset and write their thumbnails; row -> card.

    A sample whose crop cannot be decoded gets a grey placeholder and an entry in ``damaged``.
    """
    from tqdm import tqdm

    rows = sorted(set(int(r) for r in rows))
    details = dict(zip(rows, fetch_details(run, ov, rows)))
    samples = read_samples(run, [location_of(d) for d in details.values()])
    img_dir = out / IMG_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    cards: dict[int, H.Card] = {}
    damaged = [] if damaged is None else damaged
    order = sorted(rows, key=lambda r: (details[r]["file_name"], details[r]["key"]))
    for r in tqdm(order, desc="gallery", unit="pair", disable=not progress):
        d = details[r]
        key = d["key"]
        crop_name = f"{IMG_DIR}/{bounded_name(key)}.crop.jpg"
        try:  # a damaged sample gets a placeholder and is counted, the report goes on
            preview = crop_preview(samples[key].members[shard_format.IMAGE])
        except (OSError, SyntaxError, ValueError, KeyError) as exc:  # PIL.UnidentifiedImageError is an OSError
            preview = damaged_placeholder()
            damaged.append({"key": key, "shard": int(d.get("shard", -1)), "error": f"{type(exc).__name__}: {exc}"[:200]})
        (out / crop_name).write_bytes(encode_jpeg(preview, quality=90))
        image = images.get(d["file_name"], (d["height"], d["width"]))
        image_src = None
        note = ""
        size = None
        if isinstance(image, str):
            note = image
        elif image.shape[:2] != (d["height"], d["width"]):
            note = f"{d['file_name']} is {image.shape[1]}x{image.shape[0]}, the mask {d['width']}x{d['height']}"
        else:
            thumb = outlined_thumbnail(image, decode_rle(d["mask_rle"], d["height"], d["width"]), thumb_side)
            image_src = f"{IMG_DIR}/{bounded_name(key)}.src.jpg"
            (out / image_src).write_bytes(encode_jpeg(thumb))
            size = (thumb.shape[1], thumb.shape[0])
        cards[r] = H.Card(
            key=key, noun=d["noun"], score=float(d["score"]), margin=d["margin"], image_id=int(d["image_id"]),
            file_name=d["file_name"], crop_src=crop_name, image_src=image_src, image_note=note, image_size=size,
        )
    return cards


# --- summary -----------------------------------------------------------------------------------------


def parquet_summary(ov: Overview) -> dict:
    counts = ov.noun_counts()
    return {
        "rows": len(ov),
        "unique_nouns": int((counts > 0).sum()),
        "images": int(len(np.unique(ov.image_id))),
        "pairs_without_margin": int(np.isnan(ov.margin).sum()),
    }


QUANTILES = ("min", "p10", "median", "p90", "max")


def _quantiles(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return {}
    q = np.quantile(values, [0, 0.1, 0.5, 0.9, 1.0])
    return dict(zip(QUANTILES, (float(round(v, 6)) for v in q)))


def summary_context(
    run: RunFolder, ov: Overview, plots: dict[str, str], pages: list[GalleryPage], opts: ReportOptions,
    damaged: Sequence[dict] = (),
) -> tuple[dict, dict]:
    """What the summary page (``templates/summary.html``) shows, and the report.json summary."""
    st = run.stats
    pq_sum = parquet_summary(ov)
    skipped = {k: int(v) for k, v in (st.get("images_skipped") or {}).items()}
    dropped = {k: int(v) for k, v in (st.get("pairs_dropped") or {}).items()}
    seconds = {k: float(v) for k, v in (st.get("seconds_per_stage") or {}).items()}
    S = lambda name, value: H.Cell(value, "stat", name)  # noqa: E731
    P = lambda name, value: H.Cell(value, "parquet", name)  # noqa: E731
    D = lambda name, value: H.Cell(value, "derived", name)  # noqa: E731
    R = H.Row

    images_rows = [R("images read", S("images_read", int(st.get("images_read", 0)))),
                   R("mined", S("images_mined", int(st.get("images_mined", 0)))),
                   R("skipped", D("images_skipped_total", sum(skipped.values())))]
    images_rows += [R(reason, S(f"images_skipped.{reason}", n), sub=True) for reason, n in sorted(skipped.items())]
    images_rows.append(R("with pairs in Parquet", P("images", pq_sum["images"])))
    left_out = {k: int(v) for k, v in (st.get("annotations_skipped") or {}).items()}
    images_rows += [R(f"{reason} (annotations/captions left out)", S(f"annotations_skipped.{reason}", n))
                    for reason, n in sorted(left_out.items())]

    pair_rows = [R("pairs (stats.json)", S("pairs", int(st.get("pairs", 0)))),
                 R("rows in Parquet", P("rows", pq_sum["rows"])),
                 R("unique nouns (stats.json)", S("unique_nouns", int(st.get("unique_nouns", 0)))),
                 R("unique nouns in Parquet", P("unique_nouns", pq_sum["unique_nouns"])),
                 R("pairs dropped", D("pairs_dropped_total", sum(dropped.values())))]
    pair_rows += [R(reason, S(f"pairs_dropped.{reason}", n), sub=True) for reason, n in sorted(dropped.items())]
    pair_rows.append(R("shown but undecodable (placeholder)", D("damaged_samples", len(damaged))))
    pair_rows += [R("shards", S("shards", int(st.get("shards", 0)))),
                  R("shards resumed", S("shards_resumed", int(st.get("shards_resumed", 0))))]

    time_rows = [R(stage, S(f"seconds_per_stage.{stage}", sec)) for stage, sec in seconds.items()]
    time_rows.append(R("wall clock", S("wall_seconds", float(st.get("wall_seconds", 0.0)))))

    checks = [
        ("pairs in stats.json = rows in Parquet", int(st.get("pairs", -1)) == pq_sum["rows"]),
        ("unique nouns in stats.json = in Parquet", int(st.get("unique_nouns", -1)) == pq_sum["unique_nouns"]),
        ("images read = mined + skipped", int(st.get("images_read", -1)) == int(st.get("images_mined", 0)) + sum(skipped.values())),
        ("images with pairs = images mined", pq_sum["images"] == int(st.get("images_mined", -1))),
        ("every sample shown decodes", not damaged),
    ]
    quant = {"score": _quantiles(ov.score), "margin": _quantiles(ov.margin)}

    ident = run.identity
    settings = [
        ("proposals", (ident.get("proposals") or {}).get("backend", "?")),
        ("proposal checkpoint", (ident.get("proposals") or {}).get("checkpoint") or "-"),
        ("CLIP", f"{(ident.get('clip') or {}).get('model', '?')} / {(ident.get('clip') or {}).get('pretrained', '?')}"),
        ("labels", ident.get("labels", "?")),
        ("min score", ident.get("min_score") if ident.get("min_score") is not None else "-"),
        ("captions", ident.get("captions", "?")),
        ("images", opts.images or "(not given)"),
    ]

    counts = ov.noun_counts()
    gallery_nouns = {s.anchor for p in pages if p.file == FREQUENT for s in p.sections}
    top = [
        {"noun": ov.nouns[c], "pairs": int(counts[c]),
         "link": f"{FREQUENT}#{anchor(ov.nouns[c])}" if anchor(ov.nouns[c]) in gallery_nouns else None}
        for c in top_nouns(ov, 25)
    ]
    context = {
        "run_name": run.path.name,
        "run_path": str(run.path),
        "pages": pages,
        "sheet": SHEET if opts.sample > 0 else None,
        "images_rows": images_rows,
        "pair_rows": pair_rows,
        "time_rows": time_rows,
        "checks": checks,
        "quantile_names": QUANTILES,
        "quantiles": quant,
        "settings": [(k, str(v)) for k, v in settings],
        "top": top,
        "plot_dir": PLOT_DIR,
        "plots": plots,
    }
    summary = {
        "stats": st,
        "parquet": pq_sum,
        "checks": {label: good for label, good in checks},
        "quantiles": quant,
        "damaged_samples": list(damaged),  # shown with a placeholder: key, shard, error
    }
    return context, summary


# --- writing ---------------------------------------------------------------------------------------


def resolve_images(opts: ReportOptions) -> Path | None:
    if not opts.images:
        return None
    folder = Path(opts.images)
    if not folder.is_dir():
        log.warning("images folder %s not found: galleries show crops only", folder)
        return None
    return folder


def build_report(run: RunFolder, opts: ReportOptions) -> ReportResult:
    """Write the report folder and return where its pages are."""
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ov = load_overview(run)
    matches = None if opts.query.is_empty() else query_rows(ov, opts.query)
    if opts.query_only and matches is None:
        raise SettingError("query_only", "needs at least one filter: `nouns`, `min_score`, `max_margin` or `image_ids`")
    pages = gallery_pages(ov, opts, matches)
    wanted = [r for p in pages for s in p.sections for r in s.rows]
    damaged: list[dict] = []
    cards = render_cards(run, ov, wanted, out, ImageCache(resolve_images(opts)), opts.thumb_side, opts.progress, damaged)

    nav = ([] if opts.query_only else [(INDEX, "Summary")]) + [(p.file, p.label) for p in pages]
    written: dict[str, Path] = {}
    summary: dict = {}
    if not opts.query_only:
        plots = write_plots(ov, out / PLOT_DIR)
        context, summary = summary_context(run, ov, plots, pages, opts, damaged)
        written[INDEX] = out / INDEX
        html = H.render("summary.html", title="Summary", nav=nav, current=INDEX, **context)
        written[INDEX].write_text(html, encoding="utf-8")
    for p in pages:
        written[p.file] = out / p.file
        html = H.render("gallery.html", title=p.label, nav=nav, current=p.file, run_name=run.path.name, page=p, cards=cards)
        written[p.file].write_text(html, encoding="utf-8")

    sheet = None
    spot = next((p for p in pages if p.file == SPOT_CHECK), None)
    if spot is not None:
        sheet = out / SHEET
        details = fetch_details(run, ov, spot.sections[0].rows)
        write_sheet(sheet, ({"key": d["key"], "noun": d["noun"], "image": d["file_name"], "score": d["score"]} for d in details))

    summary.update({
        "run": str(run.path),
        "pages": sorted(written),
        "pairs_shown": len(cards),
        "query": None if matches is None else {"filters": opts.query.describe(), "matches": int(len(matches))},
        "spot_check": None if sheet is None else {"sheet": SHEET, "rows": len(spot.sections[0].rows), "seed": opts.seed},
    })
    # a query-only run must not replace the full report's summary
    (out / (QUERY_JSON if opts.query_only else SUMMARY_JSON)).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return ReportResult(out, written, sheet, None if matches is None else int(len(matches)), len(cards), summary)
