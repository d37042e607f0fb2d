"""``maskmine audit``: look at what a mining run produced before training on it."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from maskmine.pipelines.cli_options import NON_NEGATIVE_INT, POSITIVE_INT, add_progress_argument, number, settings
from maskmine.transforms.errors import UserError

DESCRIPTION = """\
Audit a mining run: maskmine audit RUN_DIR [--out REPORT_DIR]

Writes a report folder that opens from disk (no server, no external assets):
index.html (images read/mined/skipped, pairs, nouns, drops, stage timings,
consistency checks, plots), frequent.html and rare.html (pairs of the most
frequent nouns and of a sample of rare ones: the source image with the mask
outlined, and the masked crop as CLIP saw it), suspicious.html (lowest margin,
lowest score first). Samples are read from the shards by byte offset, never by
scanning them.

Spot check:   maskmine audit RUN --sample 200 --seed 0    -> REPORT/spot-check.csv
              (fill the verdict column with correct/incorrect, then)
              maskmine audit --score-sheet spot-check.csv  -> precision, 95% Wilson interval
Query:        maskmine audit RUN --query --noun dog --max-margin 0.01 -> REPORT/query.html
              (without --query the filters add a query page to the full report)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the --out folder of 'maskmine mine'")
    p.add_argument("--out", help="report folder (default RUN_DIR/report)")
    p.add_argument("--images", help="folder of the source images (default: the one recorded in RUN_DIR/run.json)")
    add_progress_argument(p)

    g = p.add_argument_group("galleries")
    g.add_argument("--top-nouns", type=NON_NEGATIVE_INT, default=20, help="gallery of the N most frequent nouns (default 20)")
    g.add_argument("--rare-nouns", type=NON_NEGATIVE_INT, default=20, help="gallery of N randomly drawn rare nouns (default 20)")
    g.add_argument("--rare-max-pairs", type=POSITIVE_INT, default=5, help="a noun with at most this many pairs is rare (default 5)")
    g.add_argument("--per-noun", type=POSITIVE_INT, default=6, help="pairs shown per noun (default 6)")
    g.add_argument("--suspicious", type=NON_NEGATIVE_INT, default=36, help="pairs in each list of the suspicious page (default 36)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")

    s = p.add_argument_group("spot check")
    s.add_argument("--sample", type=NON_NEGATIVE_INT, default=0, metavar="N", help="write a spot-check sheet of N random pairs")
    s.add_argument("--score-sheet", metavar="CSV", help="a filled spot-check sheet: print the precision with a Wilson interval")
    s.add_argument("--confidence", type=number(float, 0.0, 1.0, lo_open=True, hi_open=True), default=0.95, help="interval confidence for --score-sheet (default 0.95)")
    s.add_argument("--json", metavar="PATH", help="where --score-sheet writes its result (default CSV.precision.json)")

    q = p.add_argument_group("query")
    q.add_argument("--query", dest="query_only", action="store_true", help="write only the filtered gallery (query.html), no full report")
    q.add_argument("--noun", dest="nouns", action="append", default=[], help="only this noun (repeatable)")
    q.add_argument("--min-score", type=number(float), help="only pairs scoring at least this")
    q.add_argument("--max-margin", type=number(float), help="only pairs whose margin is at most this (pairs without a margin excluded)")
    q.add_argument("--image-id", dest="image_ids", type=int, action="append", default=[], help="only pairs of this image (repeatable)")
    q.add_argument("--max-pairs", type=POSITIVE_INT, default=200, help="most pairs the query page shows (default 200)")


def run_score_sheet(args: argparse.Namespace) -> int:
    from maskmine.transforms.audit.access import locate, open_run
    from maskmine.transforms.audit.scoresheet import restore_cell, score_sheet_file

    result = score_sheet_file(args.score_sheet, args.confidence)
    if args.run_dir:  # the sheet must come from this run
        run = open_run(args.run_dir)
        rows = csv.DictReader(io.StringIO(Path(args.score_sheet).read_text(encoding="utf-8").lstrip("\ufeff")))
        keys = [restore_cell(r["key"]) for r in rows if r.get("key")]
        locate(run, keys)
    out = Path(args.json) if args.json else Path(args.score_sheet).with_suffix(".precision.json")
    try:
        out.write_text(json.dumps({"sheet": str(args.score_sheet), **result.to_dict()}, indent=1), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(result.describe())
    print(f"written to {out}")
    return 0


def run(args: argparse.Namespace, extra: list[str]) -> int:
    # the report's modules read Arrow tables: imported to run, not for --help
    from maskmine.transforms.audit.access import open_run
    from maskmine.transforms.audit.report import QUERY, ReportOptions, build_report
    from maskmine.transforms.audit.table import Query

    if args.score_sheet:
        return run_score_sheet(args)
    if not args.run_dir:
        raise UserError("give a run folder (maskmine audit RUN_DIR) or --score-sheet FILLED.csv")
    run_folder = open_run(args.run_dir)
    images = args.images or run_folder.images
    if args.images and not Path(args.images).is_dir():
        raise UserError(f"images folder not found: {args.images}")
    query = settings(Query, args)  # --noun and --image-id are its nouns and image_ids
    opts = settings(ReportOptions, args, out=Path(args.out) if args.out else run_folder.path / "report",
                    images=images, query=query)
    result = build_report(run_folder, opts)
    if result.query_matches is not None:
        print(f"{result.query_matches} pairs match ({query.describe()}): {result.pages[QUERY]}")
    if "index.html" in result.pages:
        print(f"report: {result.pages['index.html']} ({result.pairs_shown} pairs shown)")
    if result.sheet is not None:
        print(f"spot-check sheet: {result.sheet} (fill 'verdict', then: maskmine audit --score-sheet {result.sheet})")
    if not images:
        print("note: no images folder known; pass --images to show the source images with their masks")
    return 0
