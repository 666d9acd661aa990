"""Battery commands: `mis battery predict` (cycle life from the first N cycles, FPNN beside the Severson
variance model), `mis train battery`, `mis evaluate battery`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, model_option, print_error, print_json, print_table, report_evaluation,
                            reports_errors, runtime_of, single_process, stderr, training_log)


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
    from mis.pipelines.battery.run import plan, predict_files, rows_as_dicts, write_csv

    runtime = runtime_of(ctx)
    if csv_out is not None and csv_out.is_dir():
        raise UsageError(f"--csv {csv_out} is a folder; give a file name")
    if plot is not None and plot.exists() and not plot.is_dir():
        raise UsageError(f"--plot {plot} is a file; give a folder for the PNGs")
    with model_option():
        pipeline = BatteryLifePipeline.from_checkpoint(battery_checkpoint(model, cycles), runtime)
    if cycles is not None and cycles != pipeline.n_cycles:
        raise UsageError(f"the model uses the first {pipeline.n_cycles} cycles, not --cycles {cycles}")
    items = plan(data)
    if csv_out is not None and csv_out.resolve() in {Path(item.source).resolve() for item in items}:
        raise UsageError(f"--csv {csv_out} is one of the inputs; give another file name")  # before any write
    if plot is not None and plot.resolve() in {Path(item.source).resolve() for item in items}:
        raise UsageError(f"--plot {plot} is one of the inputs; give another folder")
    rows = predict_files(pipeline, items, runtime, plot_folder=plot)
    if rows is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    if csv_out:
        write_csv(csv_out, rows)
    _report(rows, runtime, pipeline.n_cycles)
    for row in rows:
        for warning in row.warnings:
            if runtime.chatty:
                stderr.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    failed = [row for row in rows if row.error]
    for row in failed:
        print_error(row.error)
    if runtime.json:
        from mis.runtime.notices import notices

        print_json({"n_cycles": pipeline.n_cycles, **pipeline.run_info(), "notices": notices(),
                    "cells": rows_as_dicts(rows)})
    raise typer.Exit(1 if failed else 0)


def _report(rows, runtime, n_cycles: int) -> None:
    if runtime.json or runtime.quiet:
        return

    def cycles(value) -> str:
        return "-" if value is None else f"{value:.0f}"

    def error(row) -> str:
        return "" if row.observed is None or not row.observed else f"{100 * (row.fpnn - row.observed) / row.observed:+.0f}"

    table = [[r.name, cycles(r.fpnn), cycles(r.variance), cycles(r.observed), error(r), r.split or ""]
             for r in rows if r.error is None]
    if table:
        count = f"{len(table)} cell{'s' if len(table) != 1 else ''}"
        print_table(f"Predicted cycle life from the first {n_cycles} cycles ({count})",
                    ["cell", "FPNN", "variance model", "observed", "FPNN error %", "split"], table)


@reports_errors
def train_battery(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Cells with observed cycle life (MIT .npz/.csv, BEEP .json, ...)"),
    cycles: int = typer.Option(100, "--cycles", "-n", min=4, max=100, help="Use the first N cycles"),
    split: str = typer.Option("train", help="Train on cells with this split label ('all': every cell)"),
    out: Path = typer.Option(Path("runs/battery"), "--output", "-o", "--out", help="Run folder (member checkpoints, "
                             "metrics.jsonl, model.safetensors)"),
    members: int = typer.Option(5, min=1, help="Ensemble size (independently seeded FPNNs, averaged)"),
    steps: int = typer.Option(300, min=1, help="Training steps per member"),
    batch: int = typer.Option(8, "--batch", min=1, help="Cells per step"),
    lr: float = typer.Option(3e-3, help="AdamW learning rate (cosine decay)"),
    inception_blocks: int = typer.Option(2, "--inception-blocks", min=1, max=4,
                                         help="Number of InceptionBlocks (FPNN's NOI)"),
    temperature: bool = typer.Option(False, "--temperature", help="Add the T(V) channel (raw Arbin/Maccor or BEEP "
                                     "data with temperature)"),
    charge_time: bool = typer.Option(False, "--charge-time", help="Add the mean charge time of cycles 2-6"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the members' last checkpoints"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train an FPNN ensemble and the Severson variance model on the same cells (log cycle-life regression);
    writes OUT/model.safetensors with both in its card."""
    from mis.errors import InputError
    from mis.models.fpnn import FPNNConfig
    from mis.pipelines.battery.run import read_all
    from mis.pipelines.battery.train import BatteryTrainOptions
    from mis.pipelines.battery.train import train_battery as run_training

    single_process("mis train battery")
    runtime = runtime_of(ctx)
    cells, failures = read_all(data)
    if failures:
        raise InputError(failures[0].source, failures[0].error.split(": ", 1)[-1])
    options = BatteryTrainOptions(
        out=out, n_cycles=cycles, members=members, steps=steps, batch_size=batch, lr=lr,
        split=None if split == "all" else split, config=FPNNConfig(num_inception_blocks=inception_blocks),
        temperature=temperature, charge_time=charge_time,
        seed=runtime.seed, device=runtime.device, precision=runtime.precision, resume=resume, half=half,
        progress=runtime.chatty)
    log = training_log(runtime)
    result = run_training(cells, options, log=log)
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_battery(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Cells with observed cycle life"),
    cycles: Optional[int] = typer.Option(None, "--cycles", "-n", min=4, max=100,
                                         help="Shipped model for the first N cycles (default 100)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint (from `mis train battery`)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """RMSE (cycles) and MAPE (%) per split for the FPNN and the variance model."""
    from mis.errors import MisError
    from mis.pipelines.battery.pipeline import BatteryLifePipeline
    from mis.pipelines.battery.run import plan, predict_files, rows_as_dicts, split_metrics

    runtime = runtime_of(ctx)
    with model_option():
        pipeline = BatteryLifePipeline.from_checkpoint(battery_checkpoint(model, cycles), runtime)
    rows = predict_files(pipeline, plan(data), runtime)
    if rows is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    errors = [{"file": row.source, "error": row.error} for row in rows if row.error]
    report = {"n_cycles": pipeline.n_cycles, **pipeline.run_info(), "splits": split_metrics(rows),
              "cells": rows_as_dicts(rows), "errors": errors}
    if not report["splits"]:
        for error in errors:
            print_error(error["error"])
        raise MisError("no cell with an observed cycle life could be evaluated")
    report_evaluation(report, runtime, output, f"Cycle life from the first {pipeline.n_cycles} cycles",
                      ["split", "cells", "FPNN RMSE", "FPNN MAPE %", "variance RMSE", "variance MAPE %"],
                      lambda r: [[split, m["cells"], cell(m["fpnn_rmse"], 0), cell(m["fpnn_mape"], 1),
                                  cell(m["variance_rmse"], 0), cell(m["variance_mape"], 1)]
                                 for split, m in r["splits"].items()])
