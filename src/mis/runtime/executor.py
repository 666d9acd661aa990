"""A streaming batch executor: read ahead in threads, compute in batches, write in the background.

    reader threads (workers)  ->  compute on the calling thread  ->  one writer thread
    bounded look-ahead            batches of compatible items        bounded queue

Memory stays bounded: at most `prefetch` decoded items wait for compute and at most
`2 * workers` results wait for the writer. One failing item is recorded and skipped; the rest
go on. Results come back in input order.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mis.errors import MisError, UsageError
from mis.runtime.progress import ProgressBar

Status = Literal["done", "skipped", "failed"]

OUTPUT_EXISTS = "output exists (use --overwrite or --skip-existing)"
_MAX_ERROR_CHARS = 500


@dataclass
class WorkItem:
    key: str
    source: Path
    target: Path | None = None  # None: the item produces no file (e.g. a count or a score)
    problem: str | None = None  # known before running (e.g. its output would replace its input): fails at once
    folder_output: bool = False  # the target is a folder the job writes whole (a frame sequence), not a file


@dataclass
class ItemResult:
    key: str
    source: str
    target: str | None
    status: Status
    error: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunSummary:
    results: list[ItemResult]
    seconds: float

    def _count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def done(self) -> int:
        return self._count("done")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed,
                "seconds": self.seconds, "exit_code": self.exit_code,
                "results": [r.to_dict() for r in self.results]}


def error_line(exc: BaseException) -> str:
    """One line for the summary: our own errors already read well; others get their type. Under --debug
    (MIS_DEBUG) an internal error's traceback also goes to stderr, since the item's failure is otherwise
    only this line."""
    if os.environ.get("MIS_DEBUG", "") not in ("", "0") and not isinstance(exc, MisError):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, MisError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{_user_path(exc.filename)}: {exc.strerror.lower()}"   # e.g. "out/a_seg.json: permission denied"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _user_path(name) -> str:
    """The path the user knows: an atomic write's hidden temporary file (.x.tmp-123.json) names its folder."""
    path = Path(str(name))
    return str(path.parent) if path.name.startswith(".") and ".tmp-" in path.name else str(path)


@dataclass
class _Slot:
    """Book-keeping for one item while it moves through the stages."""
    index: int
    item: WorkItem
    seconds: float = 0.0
    result: ItemResult | None = None

    def finish(self, status: Status, error: str | None = None, info: dict | None = None) -> None:
        item = self.item
        self.result = ItemResult(item.key, str(item.source),
                                 None if item.target is None else str(item.target),
                                 status, error, round(self.seconds, 6), dict(info or {}))


def _precheck(slot: _Slot, skip_existing: bool, overwrite: bool) -> bool:
    """Settle items whose target already exists; True when the item still has to run."""
    if slot.item.problem:
        slot.finish("failed", slot.item.problem)
        return False
    target = slot.item.target
    folder = None if target is None else next((p for p in target.parents if p.exists()), None)
    if folder is not None and not os.access(folder, os.W_OK):
        slot.finish("failed", f"{folder}: cannot write in this folder (permission denied)")  # before any computing
        return False
    if target is not None and target.is_dir() and not slot.item.folder_output:
        slot.finish("failed", f"{target}: is a folder, not an output file")
        return False
    if target is None or not target.exists():
        return True
    if skip_existing:
        slot.finish("skipped")
    elif not overwrite:
        slot.finish("failed", f"{target}: {OUTPUT_EXISTS}")
    else:
        return True
    return False


def _timed_read(read: Callable[[WorkItem], Any], item: WorkItem) -> tuple[Any, float]:
    start = time.perf_counter()
    data = read(item)
    return data, time.perf_counter() - start


class _Writer:
    """One background thread that writes results in the order they are handed over."""

    _STOP = object()

    def __init__(self, write: Callable[[WorkItem, Any], dict | None], bar: ProgressBar,
                 maxsize: int):
        self._write = write
        self._bar = bar
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._abort = threading.Event()
        # Daemon: an interrupted run must be able to exit even if a write hangs; writes are
        # atomic, so being cut off leaves at worst a temporary file.
        self._thread = threading.Thread(target=self._loop, name="mis-writer", daemon=True)
        self._thread.start()

    def put(self, slot: _Slot, output: Any) -> None:
        self._queue.put((slot, output))

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is self._STOP:
                return
            if self._abort.is_set():
                continue  # drain without writing: the run was interrupted
            slot, output = entry
            start = time.perf_counter()
            try:
                info = self._write(slot.item, output)
            except Exception as exc:  # noqa: BLE001 - isolate the failure to this item
                slot.seconds += time.perf_counter() - start
                slot.finish("failed", error_line(exc))
            else:
                slot.seconds += time.perf_counter() - start
                slot.finish("done", info=info)
            self._bar.advance()

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()

    def abort(self, timeout: float = 5.0) -> None:
        """Stop after the write in progress; pending results are dropped."""
        self._abort.set()
        while True:  # drop what is queued so that the stop marker fits
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put_nowait(self._STOP)
        self._thread.join(timeout)


class _Reader:
    """Submits reads in input order, keeping at most `prefetch` of them in flight."""

    def __init__(self, read: Callable[[WorkItem], Any], slots: Sequence[_Slot], workers: int,
                 prefetch: int):
        self._read = read
        self._pending = iter(slots)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mis-read")
        self._inflight: deque[tuple[_Slot, Future]] = deque()
        self._prefetch = max(1, prefetch)
        self._fill()

    def _fill(self) -> None:
        while len(self._inflight) < self._prefetch:
            slot = next(self._pending, None)
            if slot is None:
                return
            self._inflight.append((slot, self._pool.submit(_timed_read, self._read, slot.item)))

    def peek(self) -> tuple[_Slot, Future] | None:
        return self._inflight[0] if self._inflight else None

    def pop(self) -> tuple[_Slot, Future]:
        entry = self._inflight.popleft()
        self._fill()
        return entry

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _next_batch(reader: _Reader, batch_size: int, batchable: Callable[[Any, Any], bool] | None,
                bar: ProgressBar) -> list[tuple[_Slot, Any]]:
    """Up to batch_size consecutive readable items compatible with the first one.

    Failed reads are settled here and never enter a batch. An incompatible item is left
    at the head of the look-ahead for the next batch, so input order is kept.
    """
    batch: list[tuple[_Slot, Any]] = []
    while len(batch) < batch_size and reader.peek() is not None:
        slot, future = reader.peek()
        try:
            data, seconds = future.result()
        except Exception as exc:  # noqa: BLE001 - a bad input fails only itself
            reader.pop()
            slot.finish("failed", error_line(exc))
            bar.advance()
            continue
        if batch and batchable is not None and not batchable(batch[0][1], data):
            break
        reader.pop()
        slot.seconds += seconds
        batch.append((slot, data))
    return batch


def _compute_one_by_one(compute: Callable[[list[Any]], list[Any]], batch: list[tuple[_Slot, Any]],
                        bar: ProgressBar) -> list[tuple[_Slot, Any]]:
    """Retry a failed batch item by item so that only the items that fail are lost."""
    ok = []
    for slot, data in batch:
        start = time.perf_counter()
        try:
            outputs = _checked_compute(compute, [data])
        except Exception as exc:  # noqa: BLE001
            slot.seconds += time.perf_counter() - start
            slot.finish("failed", error_line(exc))
            bar.advance()
            continue
        slot.seconds += time.perf_counter() - start
        ok.append((slot, outputs[0]))
    return ok


def _checked_compute(compute: Callable[[list[Any]], list[Any]], inputs: list[Any]) -> list[Any]:
    outputs = list(compute(inputs))
    if len(outputs) != len(inputs):
        raise RuntimeError(f"compute returned {len(outputs)} outputs for {len(inputs)} inputs")
    return outputs


def _compute_batch(compute: Callable[[list[Any]], list[Any]], batch: list[tuple[_Slot, Any]],
                   bar: ProgressBar) -> list[tuple[_Slot, Any]]:
    if not batch:
        return []
    if len(batch) == 1:
        return _compute_one_by_one(compute, batch, bar)
    start = time.perf_counter()
    try:
        outputs = _checked_compute(compute, [data for _, data in batch])
    except Exception:  # noqa: BLE001 - find the culprit(s) one by one
        # The failed attempt's time is not charged: it is unclear which item caused it.
        return _compute_one_by_one(compute, batch, bar)
    share = (time.perf_counter() - start) / len(batch)
    for slot, _ in batch:
        slot.seconds += share
    return [(slot, out) for (slot, _), out in zip(batch, outputs)]


def _run_stages(slots: list[_Slot], read, compute, writer: _Writer, bar: ProgressBar,
                workers: int, batch_size: int, batchable) -> None:
    # Enough look-ahead to fill a batch while the readers already work on the next one.
    reader = _Reader(read, slots, workers, prefetch=max(2 * workers, batch_size + workers))
    try:
        while reader.peek() is not None:
            batch = _next_batch(reader, batch_size, batchable, bar)
            for slot, output in _compute_batch(compute, batch, bar):
                writer.put(slot, output)
    except BaseException:
        # Interrupted (or a bug): queued reads are cancelled; a read in progress finishes.
        reader.shutdown(cancel=True)
        raise
    reader.shutdown()


def run_items(items: Sequence[WorkItem], *, read: Callable[[WorkItem], Any],
              compute: Callable[[list[Any]], list[Any]],
              write: Callable[[WorkItem, Any], dict | None], workers: int = 2, batch_size: int = 1,
              batchable: Callable[[Any, Any], bool] | None = None, skip_existing: bool = False,
              overwrite: bool = False, progress: bool | None = True,
              description: str = "") -> RunSummary:
    """Run read -> compute -> write over `items`; see the module docstring.

    `compute` gets a list of decoded inputs and returns one output per input. `write` gets the
    item and its output, writes atomically, and may return a dict of extra info for the summary.
    A `KeyboardInterrupt` stops the run (the write in progress finishes) and is re-raised.
    """
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite contradict each other; choose one")
    start = time.perf_counter()
    slots = [_Slot(i, item) for i, item in enumerate(items)]
    todo = [s for s in slots if _precheck(s, skip_existing, overwrite)]
    with ProgressBar(len(slots), description, None if progress else False) as bar:
        bar.advance(len(slots) - len(todo))
        writer = _Writer(write, bar, maxsize=max(2, 2 * workers))
        try:
            _run_stages(todo, read, compute, writer, bar, workers, max(1, batch_size), batchable)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    results = [s.result for s in slots]
    assert all(r is not None for r in results), "every item must end with a result"
    return RunSummary(results, time.perf_counter() - start)  # type: ignore[arg-type]
