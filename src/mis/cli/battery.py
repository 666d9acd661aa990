"""`mis battery predict`: cycle life from the first N cycles (FPNN beside the Severson variance model)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import print_error, print_json, print_table, reports_errors, runtime_of, stderr

app = typer.Typer(help="Battery cycle-life prediction from early cycles.", no_args_is_help=True)


def battery_checkpoint(model: str | None, cycles: int | None) -> Path:
    """--model wins; otherwise the shipped model for --cycles (default N = 100)."""
    from mis.errors import UsageError
    from mis.registry import WEIGHTS_DIR, resolve_checkpoint

    if model:
        return resolve_checkpoint("battery_life", model)
    n = cycles or 100
    path = WEIGHTS_DIR / f"battery_fpnn_n{n}.safetensors"
    if not path.exists():
        shipped = sorted(p.stem.split("_n")[-1] for p in WEIGHTS_DIR.glob("battery_fpnn_n*.safetensors"))
        raise UsageError(f"no shipped battery model for --cycles {n} (shipped: N = {', '.join(shipped) or 'none'}); "
                         "train one with `mis train battery DATA --cycles N`")
    return path


@app.command("predict")
@reports_errors
def predict(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="MIT Q(V) .npz/.csv, BEEP structured .json, Arbin .csv, Maccor "
                                     "exports, folders or globs"),
    cycles: Optional[int] = typer.Option(None, "--cycles", "-n", min=4, max=100,
                                         help="Use the first N cycles (selects the shipped model; default 100)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint (from `mis train battery`)"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Folder for one capacity-fade PNG per cell"),
) -> None:
    """Predict cycle life per cell. Every row shows the FPNN ensemble and the Severson variance model
    (and the observed life when the data has it). Unusable cells are reported and skipped."""
    from mis.errors import UsageError
    from mis.pipelines.battery.pipeline import BatteryLifePipeline
    from mis.pipelines.battery.run import predict_inputs, rows_as_dicts, write_csv

    runtime = runtime_of(ctx)
    if csv_out is not None and csv_out.is_dir():
        raise UsageError(f"--csv {csv_out} is a folder; give a file name")
    if plot is not None and plot.exists() and not plot.is_dir():
        raise UsageError(f"--plot {plot} is a file; give a folder for the PNGs")
    pipeline = BatteryLifePipeline.from_checkpoint(battery_checkpoint(model, cycles), runtime)
    if cycles is not None and cycles != pipeline.n_cycles:
        raise UsageError(f"the model uses the first {pipeline.n_cycles} cycles, not --cycles {cycles}")
    cells, rows = predict_inputs(pipeline, data)
    if csv_out is not None and csv_out.resolve() in {Path(row.source).resolve() for row in rows}:
        raise UsageError(f"--csv {csv_out} is one of the inputs; give another file name")  # before any write
    if csv_out:
        write_csv(csv_out, rows)
    if plot:
        _plot_all(cells, rows, pipeline.n_cycles, plot)
    _report(rows, runtime, pipeline.n_cycles)
    for row in rows:
        for warning in row.warnings:
            if runtime.chatty:
                stderr.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    failed = [row for row in rows if row.error]
    for row in failed:
        print_error(row.error)
    if runtime.json:
        print_json({"n_cycles": pipeline.n_cycles, "cells": rows_as_dicts(rows)})
    raise typer.Exit(1 if failed else 0)


def _plot_all(cells, rows, n_cycles: int, folder: Path) -> None:
    from mis.pipelines.battery.plot import plot_cell

    folder.mkdir(parents=True, exist_ok=True)
    used: dict[str, int] = {}
    for cell, row in zip(cells, rows):  # predict_inputs: one row per cell, in order, then the unreadable files
        if row.error is None:
            count = used.get(cell.name, 0)
            used[cell.name] = count + 1
            name = cell.name if count == 0 else f"{cell.name}_{count + 1}"  # same cell name in two files
            plot_cell(cell, row, n_cycles, folder / f"{name}.png")


def _report(rows, runtime, n_cycles: int) -> None:
    if runtime.json or runtime.quiet:
        return

    def cycles(value) -> str:
        return "-" if value is None else f"{value:.0f}"

    table = [[r.name, cycles(r.fpnn), cycles(r.variance), cycles(r.observed), r.split or ""]
             for r in rows if r.error is None]
    if table:
        print_table(f"Predicted cycle life from the first {n_cycles} cycles ({len(table)} cells)",
                    ["cell", "FPNN", "variance model", "observed", "split"], table)
