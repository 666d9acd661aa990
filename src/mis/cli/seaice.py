"""Sea-ice commands: `mis seaice`, `mis train seaice`, `mis evaluate seaice`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors,
                            runtime_of, single_process, training_log)


def load_pipeline(model: Optional[str], runtime, **options):
    from mis.pipelines.seaice.pipeline import SeaIcePipeline
    from mis.registry import resolve_checkpoint

    with model_option():
        return SeaIcePipeline.from_checkpoint(resolve_checkpoint("seaice", model), runtime, **options)


def scene_options(grid: str, sar_bands, msi_bands, sar_units: str, msi_offset, probability: bool = False,
                  edge: bool = False):
    from mis.errors import UsageError
    from mis.pipelines.seaice.run import SceneOptions

    if sar_units not in ("auto", "db", "linear"):
        raise UsageError(f"--sar-units {sar_units!r}: auto, db or linear")
    return SceneOptions(grid=grid, sar_bands=sar_bands, msi_bands=msi_bands, sar_units=sar_units,
                        msi_offset=msi_offset, probability=probability, edge=edge)


def pairs_of(sar: Optional[Path], msi: Optional[Path], pairs: Optional[Path]):
    from mis.errors import UsageError
    from mis.pipelines.seaice.run import Pair, read_pairs_csv

    if pairs is not None:
        if sar is not None or msi is not None:
            raise UsageError("give --sar and --msi, or --pairs, not both")
        return read_pairs_csv(pairs)
    if sar is None or msi is None:
        raise UsageError("give --sar and --msi (one scene), or --pairs CSV (columns sar,msi)")
    return [Pair(sar, msi)]


@reports_errors
def seaice(
    ctx: typer.Context,
    sar: Optional[Path] = typer.Option(None, "--sar", help="SAR GeoTIFF (Sentinel-1 HH/HV sigma0, dB or linear)"),
    msi: Optional[Path] = typer.Option(None, "--msi", help="Multispectral GeoTIFF (Sentinel-2 L2A B02/B03/B04/B08)"),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV with columns sar,msi (paths relative to it)"),
    output: Path = typer.Option(Path("seaice"), "--output", "-o", help="Output folder (or a .tif for one pair)"),
    grid: str = typer.Option("sar", "--grid", help="Output grid: sar, msi or a raster's path"),
    sar_bands: Optional[str] = typer.Option(None, "--sar-bands", help="By description or index, e.g. HH,HV or 1,2"),
    msi_bands: Optional[str] = typer.Option(None, "--msi-bands", help="E.g. B02,B03,B04,B08 or 1,2,3,4"),
    sar_units: str = typer.Option("auto", "--sar-units", help="auto (decided once per scene), db or linear"),
    msi_offset: Optional[int] = typer.Option(None, "--msi-offset", help="S2 L2A BOA_ADD_OFFSET of integer MSI "
                                             "(default: the file's tag, else 1000: processing baseline >= 04.00)"),
    probability: bool = typer.Option(False, "--probability", help="Write float32 ice probability, not 0/1 classes"),
    edge: bool = typer.Option(False, "--edge", help="Also write the ice edge as GeoJSON polygons in the grid's CRS "
                              "(<output>_edge.geojson)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ViSual_IceD checkpoint (default: the demo)"),
    patch: int = typer.Option(128, "--patch", min=16, help="Patch side on the output grid (pixels)"),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Overlap of neighbouring patches (blended)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip pairs whose output exists"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Map sea ice from concurrent SAR and multispectral GeoTIFFs with ViSual_IceD: both rasters are aligned onto the
    reference grid (any CRS, resolution and extent), processed window by window (memory flat in scene size) and
    written as a COG (0 water, 1 ice, 255 nodata where either input has none) with the grid's CRS and transform."""
    from mis.pipelines.seaice.run import seaice_files

    runtime = runtime_of(ctx)
    options = scene_options(grid, sar_bands, msi_bands, sar_units, msi_offset, probability, edge)
    pipeline = load_pipeline(model, runtime, patch=patch, overlap=overlap)
    summary = seaice_files(pipeline, pairs_of(sar, msi, pairs), output, options, runtime,
                           skip_existing=skip_existing, overwrite=overwrite)
    if summary is None:
        raise typer.Exit(0)
    report_run(summary, runtime, "mis seaice", extra_columns=["size", "valid_fraction", "ice_fraction"],
               run_info=pipeline.run_info())


@reports_errors
def train_seaice(
    ctx: typer.Context,
    out: Path = typer.Option(Path("runs/seaice"), "--output", "-o", "--out", help="Run folder"),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Your scenes: CSV with columns sar,msi,mask and an "
                                         "optional split (train/val); without it, synthetic scenes"),
    mode: str = typer.Option("dual", help="dual (ViSual_IceD), stacked, sar or msi (the paper's baselines)"),
    preset: str = typer.Option("demo", help="demo (widths 16-128) or paper (upstream's 64-512, for a GPU)"),
    ratio: int = typer.Option(4, min=1, help="Pixel-size ratio between the two sensors' grids"),
    finer: str = typer.Option("msi", help="The sensor on the finer grid: msi (Sentinel-2 10 m) or sar"),
    grid: str = typer.Option("sar", "--grid", help="Reference (coarse) grid of --pairs scenes: sar, msi or a path"),
    sar_bands: Optional[str] = typer.Option(None, "--sar-bands", help="By description or index, e.g. HH,HV or 1,2"),
    msi_bands: Optional[str] = typer.Option(None, "--msi-bands", help="E.g. B02,B03,B04,B08 or 1,2,3,4"),
    sar_units: str = typer.Option("auto", "--sar-units", help="auto (decided once per scene), db or linear"),
    msi_offset: Optional[int] = typer.Option(None, "--msi-offset", help="S2 L2A BOA_ADD_OFFSET of integer MSI"),
    steps: int = typer.Option(1500, min=1, help="Training steps"),
    batch: int = typer.Option(8, "--batch", min=1, help="Patches per step"),
    crop: int = typer.Option(64, min=16, help="Patch side on the coarse grid (a multiple of 8)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    scenes: int = typer.Option(60, min=1, help="Synthetic paired scenes rendered for training"),
    validate_every: int = typer.Option(250, "--validate-every", min=1, help="Steps between validations"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train a ViSual_IceD-family network on your paired scenes with masks (--pairs: each read onto its grids as
    `mis seaice` reads it, mask pixels 0 water / 1 ice, anything else or nodata left out of the loss) or on seeded
    synthetic paired scenes (clouds over the MSI, wind-roughened water in the SAR); class-balanced BCE; the best
    validation F1's weights are kept. Each --pairs scene is held in memory: tile very large scenes first."""
    from mis.errors import UsageError
    from mis.pipelines.seaice.train import SeaIceTrainOptions, demo_network
    from mis.pipelines.seaice.train import train_seaice as run_training

    if mode not in ("dual", "stacked", "sar", "msi"):
        raise UsageError(f"--mode {mode!r}: dual, stacked, sar or msi")
    if finer not in ("sar", "msi"):
        raise UsageError(f"--finer {finer!r}: sar or msi")
    if preset not in ("demo", "paper"):
        raise UsageError(f"--preset {preset!r}: demo or paper")
    if crop % 8:
        raise UsageError(f"--crop {crop} must be a multiple of 8 (the network's depth)")
    if pairs is None and (sar_bands or msi_bands or grid != "sar" or msi_offset is not None or sar_units != "auto"):
        raise UsageError("--grid, --sar-bands, --msi-bands, --sar-units and --msi-offset apply to --pairs scenes")
    single_process("mis train seaice")
    runtime = runtime_of(ctx)
    options = SeaIceTrainOptions(out=out, network=demo_network(mode, ratio, finer, preset), steps=steps, batch_size=batch,
                                 crop=crop, lr=lr, scenes=scenes, validate_every=validate_every, seed=runtime.seed,
                                 device=runtime.device, precision=runtime.precision, resume=resume, half=half,
                                 progress=runtime.chatty, command=command_line(), pairs=pairs,
                                 scene_options=scene_options(grid, sar_bands, msi_bands, sar_units, msi_offset)
                                 if pairs else None)
    result = run_training(options, log=training_log(runtime))
    result.pop("model")
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_seaice(
    ctx: typer.Context,
    sar: Path = typer.Option(..., "--sar", help="SAR GeoTIFF"),
    msi: Path = typer.Option(..., "--msi", help="Multispectral GeoTIFF"),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Reference mask GeoTIFF (0 water, 1 ice, its nodata "
                                        "ignored)"),
    sic: Optional[Path] = typer.Option(None, "--sic", help="Sea-ice concentration raster (0-1 or 0-100), "
                                       "thresholded at 15 %"),
    grid: str = typer.Option("sar", "--grid", help="Grid to compare on: sar, msi or a raster's path"),
    sar_units: str = typer.Option("auto", "--sar-units", help="auto, db or linear"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ViSual_IceD checkpoint (default: the demo)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """F1, IoU and accuracy of the ice map against a reference mask and/or a sea-ice-concentration raster (as the
    paper compares with AMSR2), pixels without data in any of them ignored."""
    from mis.errors import UsageError
    from mis.pipelines.seaice.evaluate import evaluate_files
    from mis.pipelines.seaice.run import Pair

    if mask is None and sic is None:
        raise UsageError("give --mask and/or --sic to compare with")
    runtime = runtime_of(ctx)
    pipeline = load_pipeline(model, runtime)
    options = scene_options(grid, None, None, sar_units, None)
    report = {**pipeline.run_info(), **evaluate_files(pipeline, [(Pair(sar, msi), mask, sic)], options)}

    def rows(r: dict) -> list[list[str]]:
        table = []
        for case in r["cases"]:
            for name in ("mask", "sic"):
                if name in case:
                    s = case[name]
                    table.append([case["file"], name, cell(s["f1"], 4), cell(s["iou"], 4), cell(s["accuracy"], 4),
                                  str(s["pixels"])])
        return table

    report_evaluation(report, runtime, output, "Sea-ice map vs reference", ["scene", "reference", "F1", "IoU",
                                                                            "accuracy", "pixels"], rows)
