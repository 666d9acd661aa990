"""Small checks for the values a pipeline reads from its checkpoint card (each returns problems, never raises)."""
from __future__ import annotations

import math
from typing import Any


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_numbers(name: str, value: Any, count: int | None = None) -> list[str]:
    """`value` is a list of `count` finite numbers > 0."""
    if not isinstance(value, list) or (count is not None and len(value) != count) or not value:
        return [f"{name} must be a list of {count or 'some'} numbers, not {value!r}"]
    if not all(number(v) and v > 0 for v in value):
        return [f"{name} must be finite and > 0, not {value!r}"]
    return []


def positive_int(name: str, value: Any, minimum: int = 1) -> list[str]:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        return [f"{name} must be an integer >= {minimum}, not {value!r}"]
    return []


def increasing_pair(name: str, value: Any) -> list[str]:
    """[low, high] with low < high."""
    if not isinstance(value, list) or len(value) != 2 or not all(number(v) for v in value):
        return [f"{name} must be [low, high], not {value!r}"]
    if value[0] >= value[1]:
        return [f"{name} {value!r} is reversed or empty (low must be below high)"]
    return []
