"""The value syntax of a plot axis, as AUTOMATIC1111's X/Y/Z plot reads it.

A line of comma-separated values (CSV: a value holding a comma is quoted, `"a, b", c`); for numbers, each value may
be a range instead: `1-5` (1, 2, 3, 4, 5), `1-5 (+2)` (1, 3, 5), `10-1 (-3)` (10, 7, 4, 1), `1-10 [5]` (five values
evenly spread from 1 to 10), and the same with decimals (`0.5-1.5 (+0.25)`, `0-1 [3]`). A value that is not a
number on a number axis is a ValueError naming it.
"""
from __future__ import annotations

import csv
import io
import re

_NUMBER = r"[+-]?\s*\d+(?:\.\d*)?"
# start - end, then an optional (step) or [count]
_RANGE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*({_NUMBER})\s*\)|\[\s*(\d+)\s*\])?$")

MAX_VALUES = 1000  # one axis; the plot's own image limit is checked on the whole job


def split_values(text: str) -> list[str]:
    """The stripped, non-empty values of one CSV line (newlines count as separators too)."""
    line = " ".join(str(text or "").splitlines())
    if not line.strip():
        return []
    row = next(csv.reader(io.StringIO(line), skipinitialspace=True), [])
    return [value.strip() for value in row if value.strip()]


def _number(text: str) -> float:
    return float(text.replace(" ", ""))


def _expand(value: str, whole: bool) -> list[float]:
    match = _RANGE.match(value)
    if match is None:
        try:
            return [_number(value)]
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise ValueError(f"{value!r} is not {kind} or a range like 1-5, 1-5 (+2) or 1-10 [5]") from None
    start, end = _number(match.group(1)), _number(match.group(2))
    if whole and not (start.is_integer() and end.is_integer()):
        raise ValueError(f"{value!r}: a range of whole numbers needs whole ends")
    if match.group(4) is not None:  # [count]: evenly spread, both ends included
        count = int(match.group(4))
        if count < 1 or count > MAX_VALUES:
            raise ValueError(f"{value!r}: the count must be between 1 and {MAX_VALUES}")
        if count == 1:
            return [start]
        return [start + (end - start) * i / (count - 1) for i in range(count)]
    step = _number(match.group(3)) if match.group(3) is not None else (1.0 if end >= start else -1.0)
    if step == 0 or (end - start) * step < 0:
        raise ValueError(f"{value!r}: a step of {step:g} never goes from {start:g} to {end:g}")
    count = int((end - start) / step + 1e-9) + 1
    if count > MAX_VALUES:
        raise ValueError(f"{value!r} makes {count} values; the limit is {MAX_VALUES}")
    return [start + step * i for i in range(count)]


def int_values(text: str) -> list[int]:
    """Whole numbers and ranges of them; a `[count]` range is rounded down to whole numbers."""
    return [int(v) for item in split_values(text) for v in _expand(item, whole=True)]


def float_values(text: str) -> list[float]:
    """Numbers and ranges of numbers (rounded to 8 places, so 0.1 steps stay 0.1, 0.2, 0.3, ...)."""
    return [round(v, 8) for item in split_values(text) for v in _expand(item, whole=False)]
