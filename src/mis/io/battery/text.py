"""The first lines of a text export and its field separator: what format sniffing and the CSV readers share."""
from __future__ import annotations

from pathlib import Path

from mis.errors import InputError


def head_lines(path: Path, count: int) -> list[str]:
    """The first `count` lines ('' past the end); utf-8-sig: spreadsheets often save a byte-order mark."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            return [handle.readline() for _ in range(count)]
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None


def delimiter(header_line: str) -> str:
    """The field separator of a CSV, from its first line: ';' or TAB when it has one, else ','.

    Not the most frequent character: a European line of numbers (`-0,5;-0,3`) has more commas than
    semicolons, and neither ';' nor TAB is ever a decimal mark.
    """
    return next((mark for mark in (";", "\t") if mark in header_line), ",")
