"""`mis evaluate <task>`: score predictions against references."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import print_error, print_json, print_table, reports_errors, runtime_of

app = typer.Typer(help="Score predictions against references (one sub-command per task).", no_args_is_help=True)


@app.command("segment")
@reports_errors
def evaluate_segment(
    ctx: typer.Context,
    pred: List[str] = typer.Option(..., "--pred", help="Predicted label maps (folder, files or globs)"),
    ref: List[str] = typer.Option(..., "--ref", help="Reference label maps, matched by case name"),
    labels_map: Optional[Path] = typer.Option(None, "--labels-map", help='JSON {"liver": [5], ...} mapping '
                                              "reference ids to the prediction's classes"),
    hd95: bool = typer.Option(True, "--hd95/--no-hd95", help="Also compute HD95 (mm)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Dice and HD95 (MONAI metrics) per label and case, with the mean per label."""
    from mis.io.atomic import atomic_write_json
    from mis.pipelines.ct_segmentation.evaluate import evaluate_segmentations
    from mis.pipelines.ct_segmentation.labels import read_labels_map

    runtime = runtime_of(ctx)
    mapping = read_labels_map(labels_map) if labels_map else None
    report = evaluate_segmentations(pred, ref, mapping, hd95=hd95)
    if output:
        atomic_write_json(output, report)
    for failure in report["errors"]:
        print_error(failure["error"])
    if runtime.json:
        print_json(report)
    else:
        rows = [[name, f"{m['dice']:.4f}", "-" if m["hd95_mm"] is None else f"{m['hd95_mm']:.2f}", m["cases"]]
                for name, m in report["mean"].items()]
        print_table(f"Dice / HD95 over {len(report['cases'])} case(s)", ["label", "Dice", "HD95 mm", "cases"], rows)
    raise typer.Exit(1 if report["errors"] else 0)


@app.command("battery")
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
    from mis.cli.battery import battery_checkpoint
    from mis.errors import MisError
    from mis.io.atomic import atomic_write_json
    from mis.pipelines.battery.pipeline import BatteryLifePipeline
    from mis.pipelines.battery.run import predict_inputs, rows_as_dicts, split_metrics

    runtime = runtime_of(ctx)
    pipeline = BatteryLifePipeline.from_checkpoint(battery_checkpoint(model, cycles), runtime)
    _, rows = predict_inputs(pipeline, data)
    failed = [row for row in rows if row.error]
    report = {"n_cycles": pipeline.n_cycles, "splits": split_metrics(rows), "cells": rows_as_dicts(rows)}
    if not report["splits"]:
        for row in failed:
            print_error(row.error)
        raise MisError("no cell with an observed cycle life could be evaluated")
    if output:
        atomic_write_json(output, report)
    if runtime.json:
        print_json(report)
    else:
        table = [[split, m["cells"], f"{m['fpnn_rmse']:.0f}", f"{m['fpnn_mape']:.1f}", f"{m['variance_rmse']:.0f}",
                  f"{m['variance_mape']:.1f}"] for split, m in report["splits"].items()]
        print_table(f"Cycle life from the first {pipeline.n_cycles} cycles",
                    ["split", "cells", "FPNN RMSE", "FPNN MAPE %", "variance RMSE", "variance MAPE %"], table)
    for row in failed:
        print_error(row.error)
    raise typer.Exit(1 if failed else 0)


@app.command("vocoder")
@reports_errors
def evaluate_vocoder(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Reference WAV files, folders or globs"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Vocoder checkpoint (default: shipped demo)"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Score only the first N seconds of each file"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Copy-synthesis from each file's mel with the vocoder and with Griffin-Lim (32 iterations) on the same
    mel: LSD, MCD, F0 RMSE, PESQ (wide band) and STOI, per file and mean."""
    from mis.io.atomic import atomic_write_json
    from mis.io.files import resolve_each
    from mis.pipelines.vocoder.evaluate import evaluate_vocoder as run_evaluation
    from mis.pipelines.vocoder.pipeline import VocoderPipeline
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", model), runtime)
    report = run_evaluation(pipeline, resolve_each(data, kinds=("audio",)), seconds)
    if output:
        atomic_write_json(output, report)
    for failure in report["errors"]:
        print_error(failure["error"])
    if runtime.json:
        print_json(report)
        raise typer.Exit(1 if report["errors"] else 0)

    def cell(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [[system, cell(m["lsd_db"]), cell(m["lsd_mel_band_db"]), cell(m["mcd_db"]), cell(m["f0_rmse_cents"], 0),
             cell(m["pesq_wb"]), cell(m["stoi"], 3)] for system, m in report["mean"].items()]
    print_table(f"Copy synthesis of {len(report['cases'])} file(s), mean", ["system", "LSD dB", "LSD 0-fmax dB",
                "MCD dB", "F0 RMSE cents", "PESQ wb", "STOI"], rows)
    raise typer.Exit(1 if report["errors"] else 0)
