"""Progress bars for long loops, drawn with rich on stderr.

A bar is shown only when somebody can see it: stderr is a terminal, `MIS_QUIET` is not set,
the caller did not turn it off, and (under torchrun) this is rank 0. Otherwise every call is a
cheap no-op, so library code can always use a bar without checking anything itself.
stdout is never drawn on, so `--json` output stays clean.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _is_rank_zero() -> bool:
    # torchrun sets RANK; without it this is a single process.
    return os.environ.get("RANK", "0") in ("", "0")


def _stream_is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar is drawn: only on a terminal, on rank 0, without MIS_QUIET; `False` turns it off.

    `True` means "allowed", not "forced": a bar piped into a log file is noise."""
    if enabled is False or not _is_rank_zero():
        return False
    if os.environ.get("MIS_QUIET", "") not in ("", "0"):
        return False
    return _stream_is_tty(sys.stderr) and _stream_is_tty(sys.stdout)


class ProgressBar:
    """A single rich progress bar; a context manager with `advance()`.

    When iterated (built from an iterable), it yields the items and advances by one each.
    """

    def __init__(self, total: int | None = None, description: str = "", enabled: bool | None = None,
                 iterable: Iterable[Any] | None = None):
        self.total = total
        self.description = description
        self.enabled = progress_enabled(enabled)
        self._iterable = iterable
        self._progress = None
        self._task = None

    def __enter__(self) -> "ProgressBar":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if not self.enabled or self._progress is not None:
            return
        # Imported lazily: rich is cheap, but nothing should be paid for a disabled bar.
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_description(self, description: str) -> None:
        self.description = description
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("this ProgressBar was built from a total, not an iterable")
        with self:
            for item in self._iterable:
                yield item
                self.advance()


def _length_or_none(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def track(iterable: Iterable[T], total: int | None = None, description: str = "",
          enabled: bool | None = None) -> Iterator[T]:
    """Yield from `iterable`, advancing a bar by one per item."""
    if total is None:
        total = _length_or_none(iterable)
    yield from ProgressBar(total, description, enabled, iterable=iterable)


def progress_bar(iterable_or_total: Iterable[Any] | int | None, description: str = "",
                 enabled: bool | None = None) -> ProgressBar:
    """A bar over an iterable (iterate it) or over a count (use it as a context manager)."""
    if iterable_or_total is None or isinstance(iterable_or_total, int):
        return ProgressBar(iterable_or_total, description, enabled)
    return ProgressBar(_length_or_none(iterable_or_total), description, enabled,
                       iterable=iterable_or_total)
