"""File-level glue for `mis battery predict` and `mis evaluate battery`: files -> cells -> rows, as a job for
the shared batch runner (one item per file; torchrun shards the files; plots are written per file).

A file that cannot be read and a cell that cannot be used each become one row with an error;
the others are still predicted (batch runs continue past bad items).
"""
from __future__ import annotations

import csv
import io
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.atomic import atomic_write_bytes
from mis.io.battery import Cell, read_cells
from mis.io.files import resolve_each
from mis.pipelines.battery.pipeline import BatteryLifePipeline, CellPrediction
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem

CSV_COLUMNS = ("cell", "source", "split", "fpnn_cycle_life", "variance_model_cycle_life", "observed_cycle_life",
               "error")
FILES_PER_BATCH = 16   # the cells of several files share one forward pass


def plan(inputs: list[str]) -> list[WorkItem]:
    """One item per file; an argument that does not resolve is an item that fails with its reason."""
    items = []
    for path in resolve_each(inputs, kinds=("battery",)):
        if isinstance(path, InputError):  # a missing path or an empty folder: its row, and the others go on
            items.append(WorkItem(str(path.path), Path(path.path), None, problem=str(path)))
        else:
            items.append(WorkItem(str(path), path, None))
    return items


class PlotNames:
    """One PNG per cell, named after it; a cell name seen again in this run gets its file's name appended."""

    def __init__(self):
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, cell: Cell) -> str:
        with self._lock:
            name = cell.name if cell.name not in self._used else f"{cell.name}_{Path(cell.source).stem}"
            count = 2
            while name in self._used:
                name, count = f"{cell.name}_{count}", count + 1
            self._used.add(name)
            return name


def read_file_cells(path: Path) -> list[Cell]:
    try:
        return read_cells(path)
    except InputError:
        raise
    except Exception as exc:  # a reader bug or an exotic file must not lose the other files' rows
        raise InputError(path, f"could not be read ({type(exc).__name__}: {exc})") from None


def predict_job(pipeline: BatteryLifePipeline, plot_folder: Path | None = None) -> BatchJob:
    names = PlotNames()

    def read(item: WorkItem) -> list[Cell]:
        return read_file_cells(item.source)

    def compute(batch: list[list[Cell]]) -> list[tuple[list[Cell], list[CellPrediction]]]:
        rows = pipeline.predict_cells([cell for cells in batch for cell in cells])
        outputs, start = [], 0
        for cells in batch:
            outputs.append((cells, rows[start:start + len(cells)]))
            start += len(cells)
        return outputs

    def write(item: WorkItem, output) -> dict:
        cells, rows = output
        if plot_folder is not None:
            from mis.pipelines.battery.plot import plot_cell

            plot_folder.mkdir(parents=True, exist_ok=True)
            for cell, row in zip(cells, rows):
                if row.error is None:
                    plot_cell(cell, row, pipeline.n_cycles, plot_folder / f"{names.claim(cell)}.png")
        return {"cells": [asdict(row) for row in rows]}

    return BatchJob(read=read, compute=compute, write=write, batch_size=FILES_PER_BATCH,
                    description="battery")


def predict_files(pipeline: BatteryLifePipeline, items: list[WorkItem], runtime: RuntimeConfig | None = None, *,
                  plot_folder: Path | None = None) -> list[CellPrediction] | None:
    """Every cell's row (in file order, then cell order); one failed row per unreadable file. None on the
    non-zero torchrun ranks."""
    summary = run_batch(items, lambda device: predict_job(pipeline.on_device(device) if device else pipeline,
                                                          plot_folder),
                        runtime or RuntimeConfig(quiet=True), overwrite=True)
    return None if summary is None else rows_of(summary)


def rows_of(summary: RunSummary) -> list[CellPrediction]:
    rows: list[CellPrediction] = []
    for result in summary.results:
        if result.status == "done":
            rows.extend(CellPrediction(**row) for row in result.info["cells"])
        else:
            rows.append(CellPrediction(name=Path(result.source).stem, source=result.source, error=result.error))
    return rows


def predict_inputs(pipeline: BatteryLifePipeline, inputs: list[str],
                   runtime: RuntimeConfig | None = None) -> list[CellPrediction]:
    """Every cell's row for command-line inputs (files, folders, globs), in one process."""
    return predict_files(pipeline, plan(inputs), runtime) or []


def read_all(inputs: list[str]) -> tuple[list[Cell], list[CellPrediction]]:
    """(cells read, one failed row per unreadable file) — for training, which needs the cells themselves."""
    cells, failures = [], []
    for item in plan(inputs):
        try:
            if item.problem:
                raise InputError(item.source, item.problem.split(": ", 1)[-1])
            cells.extend(read_file_cells(item.source))
        except InputError as exc:
            failures.append(CellPrediction(name=Path(item.source).stem, source=str(item.source), error=str(exc)))
    return cells, failures


def rows_as_dicts(rows: list[CellPrediction]) -> list[dict]:
    def rounded(value):
        return None if value is None else round(float(value), 1)

    return [{"cell": r.name, "source": r.source, "split": r.split, "fpnn_cycle_life": rounded(r.fpnn),
             "variance_model_cycle_life": rounded(r.variance), "observed_cycle_life": r.observed,
             "error": r.error, "warnings": r.warnings} for r in rows]


def write_csv(path: Path, rows: list[CellPrediction]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows_as_dicts(rows):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_bytes(Path(path), buffer.getvalue().encode())


def split_metrics(rows: list[CellPrediction]) -> dict[str, dict]:
    """RMSE (cycles) and MAPE (%) per split for the FPNN and the variance model (labelled cells only)."""
    from mis.pipelines.battery.baseline import rmse_mape

    scored = [r for r in rows if r.error is None and r.observed is not None]
    groups: dict[str, list[CellPrediction]] = {}
    for row in scored:
        groups.setdefault(row.split or "all", []).append(row)
    if len(groups) > 1:
        groups["all"] = scored
    report = {}
    for split, group in groups.items():
        observed = np.array([r.observed for r in group], dtype=np.float64)
        fpnn = rmse_mape(np.array([r.fpnn for r in group]), observed)
        variance = rmse_mape(np.array([r.variance for r in group]), observed)
        report[split] = {"cells": len(group), "fpnn_rmse": fpnn[0], "fpnn_mape": fpnn[1],
                         "variance_rmse": variance[0], "variance_mape": variance[1]}
    return report
