"""The one range of each numeric setting: what the library checks and what the command line's ``type=`` checks.

A :class:`Range` is declared once, next to the setting's owner (``MASK_THRESHOLD``
in :mod:`maskmine.transforms.crop_config`), and used twice: the library's settings
objects call :meth:`Range.check` (a :class:`~maskmine.transforms.errors.SettingError`
naming the setting), and ``pipelines/cli_options.py`` turns it into an argparse
``type=`` with the same words, so a value is refused the same way however it arrives.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from maskmine.transforms.errors import SettingError


@dataclass(frozen=True)
class Range:
    """Finite numbers of ``kind`` (int or float) between ``lo`` and ``hi`` (None: unbounded), ends open or closed."""

    kind: type = float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        """``>= 0 and < 1``; empty for an unbounded range."""
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts)

    def problem(self, value: float, shown: str | None = None) -> str | None:
        """Why ``value`` is refused (``must be >= 0 and < 1, got 1.0``), or None when it is in the range."""
        shown = str(value) if shown is None else shown
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's numbers are Real too
            return f"must be {'an integer' if self.kind is int else 'a number'}, got {shown}"
        if not math.isfinite(value):
            return f"must be a finite number, got {shown}"
        if self.kind is int and not float(value).is_integer():
            return f"must be an integer, got {shown}"
        too_low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        too_high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if too_low or too_high:
            return f"must be {self.describe()}, got {shown}"
        return None

    def check(self, setting: str, value: float | None) -> None:
        """Raise SettingError(setting, ...) unless ``value`` is in the range (None passes: "not set")."""
        if value is None:
            return
        problem = self.problem(value)
        if problem is not None:
            raise SettingError(setting, problem)


def check_choice(setting: str, value: object, choices: tuple) -> None:
    """Raise SettingError(setting, ...) unless ``value`` is one of ``choices`` (a Literal's ``get_args``)."""
    if value not in choices:
        raise SettingError(setting, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


POSITIVE_INT = Range(int, lo=1)
NON_NEGATIVE_INT = Range(int, lo=0)
FRACTION = Range(float, lo=0.0, hi=1.0)
POSITIVE_FLOAT = Range(float, lo=0.0, lo_open=True)
NON_NEGATIVE_FLOAT = Range(float, lo=0.0)
