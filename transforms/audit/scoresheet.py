"""The spot-check sheet: write a sample for human review, read the verdicts back as precision.

A reviewer marks each sampled pair correct or incorrect; the precision of the
mined pairs is then the share marked correct, reported with a Wilson score
interval (95% by default) because samples are small and precision is often
near 1, where the normal-approximation interval misbehaves.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Iterable

from maskmine.transforms.errors import UserError

SHEET_COLUMNS = ("key", "noun", "image", "score", "verdict")

_CORRECT = {"correct", "c", "y", "yes", "1", "true", "t", "ok", "✓", "✔", "☑"}
_INCORRECT = {"incorrect", "i", "n", "no", "0", "false", "f", "wrong", "✗", "✘", "☒"}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """A text cell a spreadsheet would run as a formula (starting with = + - @, tab or CR) gets a leading '."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def restore_cell(value: str) -> str:
    """Undo ``neutralise_cell`` when reading a sheet back."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_STARTS) else value


def write_sheet(path: str | Path, rows: Iterable[dict]) -> int:
    """CSV with SHEET_COLUMNS and an empty verdict column; returns the number of rows.

    Text cells (key, noun, image) are neutralised against spreadsheet formula
    injection (``neutralise_cell``); ``score_sheet`` undoes it.
    """
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SHEET_COLUMNS)
        for row in rows:
            writer.writerow([neutralise_cell(str(row["key"])), neutralise_cell(str(row["noun"])),
                             neutralise_cell(str(row["image"])), f"{row['score']:.6f}", ""])
            n += 1
    return n


def parse_verdict(value: str) -> bool | None:
    """True (correct), False (incorrect) or None (blank); anything else is an error."""
    text = value.strip().lower()
    if not text:
        return None
    if text in _CORRECT:
        return True
    if text in _INCORRECT:
        return False
    raise ValueError(value)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        raise ValueError("no trials")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding noise
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass
class Precision:
    correct: int
    judged: int
    blank: int
    precision: float
    low: float
    high: float
    confidence: float
    method: str = "wilson"
    by_noun: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        pct = int(round(self.confidence * 100))
        text = (
            f"precision {self.precision:.3f} ({self.correct}/{self.judged} correct), "
            f"{pct}% Wilson interval [{self.low:.3f}, {self.high:.3f}]"
        )
        if self.blank:
            text += f"; {self.blank} row{'s' if self.blank != 1 else ''} without a verdict ignored"
        return text


def score_sheet(text: str, confidence: float = 0.95, source: str = "score sheet") -> Precision:
    """Precision of a filled sheet (CSV text with a 'verdict' column)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields = {(f or "").strip().lower(): f for f in (reader.fieldnames or [])}
    if "verdict" not in fields:
        raise UserError(f"{source} has no 'verdict' column (columns: {', '.join(reader.fieldnames or []) or 'none'})")
    verdict_col = fields["verdict"]
    noun_col = fields.get("noun")
    correct = judged = blank = 0
    per_noun: dict[str, list[int]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            verdict = parse_verdict(row.get(verdict_col) or "")
        except ValueError:
            raise UserError(
                f"{source} line {line}: verdict {row[verdict_col]!r} is not one of "
                "correct/incorrect, y/n, yes/no, 1/0, ✓/✗ (or blank)"
            ) from None
        if verdict is None:
            blank += 1
            continue
        judged += 1
        correct += verdict
        if noun_col and row.get(noun_col):
            tally = per_noun.setdefault(restore_cell(row[noun_col]), [0, 0])
            tally[0] += verdict
            tally[1] += 1
    if judged == 0:
        raise UserError(f"{source} has no verdicts yet: fill the 'verdict' column with correct/incorrect")
    low, high = wilson_interval(correct, judged, confidence)
    by_noun = {
        noun: {"correct": c, "judged": n, "precision": c / n}
        for noun, (c, n) in sorted(per_noun.items(), key=lambda kv: (-kv[1][1], kv[0]))
    }
    return Precision(correct, judged, blank, correct / judged, low, high, confidence, by_noun=by_noun)


def score_sheet_file(path: str | Path, confidence: float = 0.95) -> Precision:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"score sheet not found: {path}")
    return score_sheet(path.read_text(encoding="utf-8"), confidence, source=str(path))
