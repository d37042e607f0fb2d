"""``maskmine verify``: check a finished mining run (exit 0 when sound, 1 when not)."""
from __future__ import annotations

import argparse
import json
import sys

from maskmine.transforms import storage
from maskmine.transforms.errors import UserError

DESCRIPTION = """\
Check a finished mining run: maskmine verify RUN_DIR

Every shard of run.json has a manifest entry; each tar reads to its end with
the byte count, sha256 and sample count of its manifest; each Parquet part
lists exactly its shard's samples, in order, with their byte spans; keys are
unique across shards; stats.json, vocabulary.json and rejects.jsonl add up.
Prints one line per problem. Exit status: 0 sound, 1 problems found, 2 not a run folder.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'maskmine mine'")
    p.add_argument("--deep", action="store_true", help="also decode every crop and mask image and flag all-zero masks (slower)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.transforms.verify_run import verify_run  # Arrow: imported to run, not for --help

    if not storage.exists(args.run_dir):
        raise UserError(f"run folder not found: {args.run_dir}")
    report = verify_run(args.run_dir, deep=args.deep)
    if any(p.what == "not-a-run" for p in report.problems):
        raise UserError(str(report.problems[0]))
    if args.json:
        result = {
            "run_dir": report.run_dir, "ok": report.ok, "shards": report.shards,
            "shards_checked": report.shards_checked, "samples": report.samples,
            "problems": [{"where": p.where, "what": p.what, "detail": p.detail} for p in report.problems],
        }
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
        except OSError as exc:
            raise UserError(f"--json {args.json}: cannot write it: {exc.strerror or exc}") from exc
    if report.ok:
        print(f"OK: {report.run_dir}: {report.shards} shards, {report.samples} samples, no problems")
        return 0
    print(f"FAILED: {report.run_dir}: {len(report.problems)} problem(s) in {report.shards} shards", file=sys.stdout)
    for problem in report.problems:
        print(f"  {problem}")
    return 1
