"""File-level glue for `mis battery predict` and `mis evaluate battery`: inputs -> cells -> rows.

A file that cannot be read and a cell that cannot be used each become one row with an error;
the others are still predicted (batch runs continue past bad items).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.atomic import atomic_write_bytes
from mis.io.battery import Cell, read_cells
from mis.io.files import resolve_each
from mis.pipelines.battery.pipeline import BatteryLifePipeline, CellPrediction

CSV_COLUMNS = ("cell", "source", "split", "fpnn_cycle_life", "variance_model_cycle_life", "observed_cycle_life",
               "error")


def read_all(inputs: list[str]) -> tuple[list[Cell], list[CellPrediction]]:
    """(cells read, one failed row per unreadable file)."""
    cells, failures = [], []
    for path in resolve_each(inputs, kinds=("battery",)):
        if isinstance(path, InputError):  # a missing path or an empty folder: its row, and the others go on
            failures.append(CellPrediction(name=Path(path.path).stem, source=str(path.path), error=str(path)))
            continue
        try:
            cells.extend(read_cells(path))
        except InputError as exc:
            failures.append(CellPrediction(name=Path(path).stem, source=str(path), error=str(exc)))
        except Exception as exc:  # a reader bug or an exotic file must not lose the other files' rows
            failures.append(CellPrediction(name=Path(path).stem, source=str(path),
                                           error=f"{path}: could not be read ({type(exc).__name__}: {exc})"))
    return cells, failures


def predict_inputs(pipeline: BatteryLifePipeline, inputs: list[str]) -> tuple[list[Cell], list[CellPrediction]]:
    cells, failures = read_all(inputs)
    return cells, pipeline.predict_cells(cells) + failures


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
