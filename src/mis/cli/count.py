"""Crowd-counting commands: `mis count`, `mis train count`, `mis evaluate count`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors,
                            runtime_of, single_process, training_log)

# `--model m-sfanet | m-segnet` name the shipped demo of that network
MODEL_ALIASES = {"m-sfanet": "count_msfanet_demo", "m-segnet": "count_msegnet_demo"}


def load_pipeline(model: Optional[str], runtime, **options):
    from mis.pipelines.count.pipeline import CountPipeline
    from mis.registry import resolve_checkpoint

    with model_option():
        return CountPipeline.from_checkpoint(resolve_checkpoint("count", MODEL_ALIASES.get(model, model)), runtime,
                                             **options)


@reports_errors
def count(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="Images (PNG, JPEG, TIFF, BMP; 8/16-bit, gray or RGB), folders "
                                       "(e.g. a video's frames) or globs"),
    output: Path = typer.Option(Path("counts"), "--output", "-o", help="Folder for <name>_density.npy and "
                                "<name>_overlay.png"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="m-sfanet (default), m-segnet (faster), or a "
                                        "checkpoint path"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Also write the counts as CSV (image,count,...)"),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write the heat-map overlay PNG per image"),
    tile: Optional[int] = typer.Option(None, "--tile", min=64, help="Images larger than this (pixels) go through "
                                       "in tiles; counts are blended across tile borders (default: the checkpoint's "
                                       "tile if its card has one, else 1024)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip images whose outputs exist"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Count people with M-SFANet / M-SegNet: per image the count (the density map's sum), the density map as .npy
    on the image's pixels and a heat-map overlay with the count on it. Large images are tiled; EXIF orientation
    is applied; grayscale and 16-bit images are read as they are."""
    from mis.errors import UsageError
    from mis.pipelines.count.run import CountOptions, count_files, write_counts_csv

    if csv_out is not None and csv_out.is_dir():
        raise UsageError(f"--csv {csv_out} is a folder; give a file name")
    runtime = runtime_of(ctx)
    pipeline = load_pipeline(model, runtime, tile=tile)
    summary = count_files(pipeline, inputs, output, CountOptions(overlay=overlay, overwrite=overwrite), runtime,
                          skip_existing=skip_existing)
    if summary is None:
        raise typer.Exit(0)
    if csv_out is not None:
        write_counts_csv(csv_out, summary)
    report_run(summary, runtime, "mis count", extra_columns=["count", "size"], run_info=pipeline.run_info())


@reports_errors
def train_count(
    ctx: typer.Context,
    images: List[str] = typer.Argument(None, help="Annotated images to train on besides the synthetic scenes (head "
                                       "points beside each: ShanghaiTech GT_<name>.mat, <name>.json/.csv/.txt)"),
    val_images: List[str] = typer.Option([], "--val-images", help="Annotated images to validate on"),
    out: Path = typer.Option(Path("runs/count"), "--output", "-o", "--out", help="Run folder"),
    variant: str = typer.Option("m-sfanet", help="m-sfanet or m-segnet"),
    preset: str = typer.Option("demo", help="demo (a quarter of every width) or paper (upstream's widths)"),
    steps: int = typer.Option(3000, min=1, help="Training steps"),
    batch: int = typer.Option(8, "--batch", min=1, help="Crops per step (upstream 8)"),
    crop: int = typer.Option(128, min=32, help="Crop side in pixels (a multiple of 16; upstream 400)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate (upstream 1e-4 with its pretrained encoder)"),
    sigma: str = typer.Option("fixed:5", help="Density kernel: fixed:S (SHA: 5, SHB: 15) or adaptive:k=3,beta=0.1 "
                              "(CSRNet's geometry-adaptive)"),
    density_scale: float = typer.Option(100.0, "--density-scale", min=1e-3, help="Training targets are the density "
                                        "times this (the card keeps it; inference divides by it)"),
    count_weight: float = typer.Option(0.0, "--count-weight", min=0.0, help="Weight of a loss on each crop's total "
                                       "(--count-loss; beyond upstream's MSE + 0.1 BCE; removes a background offset)"),
    count_loss: str = typer.Option("l1", "--count-loss", help="l1 (|error| of each crop's total: calibrates the "
                                   "median crop), l2 (squared error per output pixel: the mean, dense crops too) "
                                   "or l1+l2 (both)"),
    synthetic: int = typer.Option(400, min=0, help="Synthetic scenes rendered for training (0: your images only)"),
    density_activation: str = typer.Option("none", "--density-activation", help="none (upstream's linear density "
                                           "head) or relu (background exactly zero; for training from scratch)"),
    val_scenes: int = typer.Option(16, "--val-scenes", min=0, help="Fresh synthetic scenes to validate on"),
    ema_decay: float = typer.Option(0.0, "--ema-decay", min=0.0, max=0.9999, help="Validate and ship a moving "
                                    "average of the weights with this decay per step (0: off; e.g. 0.999)"),
    zoom: float = typer.Option(1.0, "--zoom", min=1.0, max=8.0, help="Enlarge half the crops by a random factor "
                               "up to this (1: off; 2: heads up to twice their size, where the scenes have few)"),
    validate_every: int = typer.Option(250, "--validate-every", min=1, help="Steps between validations"),
    keep: str = typer.Option("best", "--keep", help="The weights to write: best (the best validation check's) or "
                             "last (the last step's; with --resume on a finished run, writes them without training)"),
    width: Optional[float] = typer.Option(None, "--width", min=0.05, max=1.0, help="Channel width as a fraction of "
                                          "upstream's (the preset's: demo 0.25, paper 1)"),
    dropout: Optional[float] = typer.Option(None, "--dropout", min=0.0, max=0.95, help="Dropout after the ASPP "
                                            "projection (m-sfanet; upstream and default 0.5)"),
    init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False, help="Start from this count "
                                        "checkpoint: all of it (e.g. imported upstream weights to fine-tune), or the "
                                        "layers it shares with --variant (M-SegNet's VGG convs for M-SFANet)"),
    weight_init: str = typer.Option("upstream", "--weight-init", help="The fresh network's conv weights: upstream "
                                    "(N(0, 0.01), made to be overwritten by ImageNet weights) or kaiming (torchvision's "
                                    "draw for training VGG from scratch)"),
    count_tile: int = typer.Option(0, "--count-tile", min=0, help="Validate in tiles of this size (half overlapping) "
                                   "and record them on the card, so `mis count` counts in them (0: whole images)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train M-SFANet / M-SegNet from scratch on seeded synthetic crowd scenes and any annotated images: random
    crops, flips, gamma and grayscale; MSE on the density + 0.1 BCE on the attention map (upstream's loss); the best
    validation MAE's weights are kept (--keep last: the last step's)."""
    from mis.errors import UsageError
    from mis.io.files import resolve_inputs
    from mis.io.image import IMAGE
    from mis.models.sfanet import DENSITY_ACTIVATIONS, SFANetConfig
    from mis.pipelines.count.density import parse_sigma
    from mis.pipelines.count.train import CountTrainOptions
    from mis.pipelines.count.train import train_count as run_training
    from mis.runtime.training import KEEP

    presets = {"demo": SFANetConfig.demo, "paper": SFANetConfig.paper}
    if preset not in presets:
        raise UsageError(f"unknown --preset {preset!r}; valid: {', '.join(presets)}")
    if variant not in ("m-sfanet", "m-segnet"):
        raise UsageError(f"--variant {variant!r}: m-sfanet or m-segnet")
    if density_activation not in DENSITY_ACTIVATIONS:
        raise UsageError(f"--density-activation {density_activation!r}: {' or '.join(DENSITY_ACTIVATIONS)}")
    if keep not in KEEP:
        raise UsageError(f"--keep {keep!r}: {' or '.join(KEEP)}")
    if dropout is not None and variant != "m-sfanet":
        raise UsageError("--dropout: only M-SFANet has a dropout layer (after its ASPP)")
    try:
        parse_sigma(sigma)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    single_process("mis train count")
    runtime = runtime_of(ctx)
    extra = {name: value for name, value in (("dropout", dropout), ("width", width)) if value is not None}
    network = presets[preset](variant, density_activation=density_activation, **extra)
    options = CountTrainOptions(out=out, network=network, steps=steps, batch_size=batch, crop=crop, lr=lr, sigma=sigma,
                                density_scale=density_scale, count_weight=count_weight, count_loss=count_loss,
                                synthetic=synthetic, val_scenes=val_scenes, ema_decay=ema_decay, keep=keep, zoom=zoom,
                                validate_every=validate_every, init=init, weight_init=weight_init, count_tile=count_tile,
                                seed=runtime.seed, device=runtime.device, precision=runtime.precision, resume=resume,
                                half=half, progress=runtime.chatty, command=command_line())
    paths = resolve_inputs(images or [], kinds=(IMAGE,)) if images else []
    val_paths = resolve_inputs(val_images, kinds=(IMAGE,)) if val_images else []
    result = run_training(paths, options, val_paths, log=training_log(runtime))
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_count(
    ctx: typer.Context,
    images: List[str] = typer.Argument(..., help="Annotated images (head points beside each, or in --points)"),
    points: Optional[Path] = typer.Option(None, "--points", help="Folder of the point files (<name>.mat / "
                                          "GT_<name>.mat / .json / .csv / .txt)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="m-sfanet (default), m-segnet, or a path"),
    tile: Optional[int] = typer.Option(None, "--tile", min=64, help="As for `mis count`"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """MAE, "MSE" (which crowd-counting papers compute as RMSE, and is named so here) and GAME(0-3) of the counts
    against head-point annotations."""
    from mis.io.files import resolve_each
    from mis.io.image import IMAGE
    from mis.pipelines.count.evaluate import GAME_LEVELS, evaluate_files

    runtime = runtime_of(ctx)
    pipeline = load_pipeline(model, runtime, tile=tile)
    report = {**pipeline.run_info(), **evaluate_files(pipeline, resolve_each(images, kinds=(IMAGE,)), points)}

    def rows(r: dict) -> list[list[str]]:
        table = [[c["file"], cell(c["true_count"], 0), cell(c["count"], 1), cell(c["error"], 1),
                  *[cell(c[f"game{level}"], 1) for level in GAME_LEVELS[1:]]] for c in r["cases"]]
        m = r["mean"]
        return table + [[f"MAE {m['mae']:.2f}, MSE (RMSE) {m['rmse']:.2f}", cell(m["mean_true_count"], 1), "", "",
                         *[cell(m[f"game{level}"], 1) for level in GAME_LEVELS[1:]]]]

    report_evaluation(report, runtime, output, "Crowd counts vs annotations",
                      ["image", "true", "count", "error", "GAME(1)", "GAME(2)", "GAME(3)"], rows)
