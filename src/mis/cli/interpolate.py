"""Frame interpolation commands: `mis interpolate`, `mis train interpolate`, `mis evaluate interpolate`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors,
                            runtime_of, single_process, training_log)


def parse_times(text: Optional[str]) -> Optional[tuple[float, ...]]:
    from mis.errors import UsageError

    if text is None:
        return None
    try:
        times = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--times {text!r}: give timesteps between 0 and 1 separated by commas, e.g. 0.25,0.5") \
            from None
    if not times or not all(0.0 < t < 1.0 for t in times):
        raise UsageError(f"--times {text!r}: every timestep must lie strictly between 0 and 1")
    if len({round(t, 3) for t in times}) < len(times):
        raise UsageError(f"--times {text!r}: a timestep repeats (to 3 decimals, as output names give them)")
    return times


def frames_per_gap(n_frames, factor, times, fps, exp) -> dict:
    """The one way the user said how many frames to insert (RIFE's --exp E means factor 2^E)."""
    from mis.errors import UsageError

    given = {k: v for k, v in {"-n": n_frames, "--factor": factor, "--times": times, "--fps": fps,
                               "--exp": exp}.items() if v is not None}
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(given)}: they all say how many frames to insert")
    if exp is not None:
        factor = 2 ** exp
    if n_frames is not None:
        factor = n_frames + 1
    return {"factor": factor, "times": times, "fps": fps}


def is_image_pair(inputs: list[str]) -> bool:
    from mis.io.image import is_image_name

    return len(inputs) == 2 and all(Path(p).is_file() and is_image_name(Path(p)) for p in inputs)


@reports_errors
def interpolate(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="Two frames (A.png B.png), or sequences: folders of numbered "
                                       "frames, multi-frame DICOM (XA/XRF), NIfTI 2D+t, or globs"),
    n_frames: Optional[int] = typer.Option(None, "-n", "--n-frames", min=1, max=63, help="Frames to insert "
                                           "between each pair, evenly spaced (t = k / (N + 1)); default 1"),
    factor: Optional[int] = typer.Option(None, "--factor", "--multi", min=2, max=64, help="Frame-rate factor k: "
                                         "k - 1 new frames per gap"),
    times: Optional[str] = typer.Option(None, "--times", help="Timesteps to insert in every gap, e.g. 0.25,0.5"),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.01, help="Resample a sequence to this frame rate "
                                        "(needs the frame time in the file: DICOM, NIfTI); acquired frames are kept "
                                        "where the new time grid meets them"),
    exp: Optional[int] = typer.Option(None, "--exp", min=1, max=6, help="RIFE's convention: factor 2^E"),
    output: Path = typer.Option(Path("interpolated"), "--output", "-o", help="Output folder (or, for one DICOM or "
                                "NIfTI sequence, a .dcm / .nii.gz file of the same format)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="GaraMoSt checkpoint (default: the shipped demo)"),
    flow_scale: float = typer.Option(1.0, "--flow-scale", min=0.0625, max=1.0, help="Estimate motion on frames "
                                     "resized by this factor (0.5 for 2048 px frames): memory and time / 4"),
    preview: bool = typer.Option(False, "--preview", help="Also write an animated GIF beside each output "
                                 "sequence (sequences only)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Insert frames between acquired ones with GaraMoSt: one encoder pass per pair, one decoder pass per new
    frame, any timestep. Sequences come back in their own format with the new frames in place (a new DICOM
    series with new UIDs and frame time; numbered frames; NIfTI); 8- and 16-bit frames stay so."""
    from mis.errors import UsageError
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline, even_times
    from mis.pipelines.interpolate.run import SequenceOptions, interpolate_files, plan_pair, plan_sequences
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    how = frames_per_gap(n_frames, factor, parse_times(times), fps, exp)
    with model_option():
        pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", model), runtime,
                                                         flow_scale=flow_scale)
    if is_image_pair(inputs):
        if preview:
            raise UsageError("--preview is for sequences; two images give their new frames as PNGs")
        if how["fps"] is not None:
            raise UsageError("--fps needs a sequence with a frame time; for two images give -n or --times")
        pair_times = how["times"] or even_times((how["factor"] or 2) - 1)
        first, second = (Path(p) for p in inputs)
        items = plan_pair(first, second, output, pair_times, skip_existing=skip_existing, overwrite=overwrite)
        summary = interpolate_files(pipeline, items, pair_times, runtime, second=second,
                                    skip_existing=skip_existing, overwrite=overwrite)
        columns = ["frames", "size"]
    else:
        items = plan_sequences(inputs, output)
        options = SequenceOptions(factor=how["factor"], times=how["times"], fps=how["fps"], preview=preview,
                                  overwrite=overwrite)
        summary = interpolate_files(pipeline, items, options, runtime, skip_existing=skip_existing,
                                    overwrite=overwrite)
        columns = ["format", "frames_in", "frames_out", "frame_time_ms"]
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    report_run(summary, runtime, "mis interpolate", extra_columns=columns, run_info=pipeline.run_info())


@reports_errors
def train_interpolate(
    ctx: typer.Context,
    data: List[str] = typer.Argument(None, help="Real sequences to train on besides the synthetic ones (folders of "
                                     "numbered frames, DICOM, NIfTI)"),
    val_data: List[str] = typer.Option([], "--val-data", help="Sequences to validate on ((i, i+2) -> i+1)"),
    out: Path = typer.Option(Path("runs/interpolate"), "--output", "-o", "--out", help="Run folder"),
    preset: str = typer.Option("demo", help="demo (grayscale, narrow) or paper (upstream's 62.3 M, 3 channels)"),
    steps: int = typer.Option(3000, min=1, help="Training steps"),
    batch: int = typer.Option(4, "--batch", min=1, help="Clips per step (upstream 8 per GPU)"),
    crop: int = typer.Option(160, min=32, help="Training crop in pixels (a multiple of 32; upstream 320)"),
    lr: float = typer.Option(2e-4, help="AdamW learning rate (upstream 2e-4)"),
    synthetic: int = typer.Option(240, min=0, help="Synthetic sequences rendered for training (0: real only)"),
    census_weight: float = typer.Option(0.5, "--census-weight", min=0.0, help="Weight of the census loss"),
    validate_every: int = typer.Option(250, "--validate-every", min=1, help="Steps between validations"),
    bit_depth: int = typer.Option(8, "--bit-depth", help="Bit depth of the frames the model is for (8 or 16)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train GaraMoSt on synthetic angiography sequences (exact ground truth at every frame) and any real ones:
    clips of N + 2 frames, N = 1..3, one target at t = k / (N + 1); Laplacian-pyramid L1 + census loss; the
    best validation PSNR's weights are kept."""
    from mis.errors import UsageError
    from mis.io.files import resolve_inputs
    from mis.io.frames import SEQUENCE
    from mis.models.garamost import GaraMoStConfig
    from mis.pipelines.interpolate.train import InterpolateTrainOptions
    from mis.pipelines.interpolate.train import train_interpolate as run_training

    presets = {"demo": GaraMoStConfig.demo, "paper": GaraMoStConfig.paper}
    if preset not in presets:
        raise UsageError(f"unknown --preset {preset!r}; valid: {', '.join(presets)}")
    if bit_depth not in (8, 16):
        raise UsageError(f"--bit-depth {bit_depth}: 8 or 16")
    single_process("mis train interpolate")
    runtime = runtime_of(ctx)
    options = InterpolateTrainOptions(
        out=out, network=presets[preset](), steps=steps, batch_size=batch, crop=crop, lr=lr, synthetic=synthetic,
        census_weight=census_weight, validate_every=validate_every, bit_depth=bit_depth, seed=runtime.seed,
        device=runtime.device, precision=runtime.precision, resume=resume, half=half, progress=runtime.chatty,
        command=command_line())
    paths = resolve_inputs(data or [], kinds=(SEQUENCE,)) if data else []
    val_paths = resolve_inputs(val_data, kinds=(SEQUENCE,)) if val_data else []
    result = run_training(paths, options, val_paths, log=training_log(runtime))
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_interpolate(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Sequences (folders of numbered frames, DICOM, NIfTI) or globs"),
    drop: int = typer.Option(1, "--drop", min=1, max=7, help="Frames dropped between inputs and interpolated back"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="GaraMoSt checkpoint (default: the shipped demo)"),
    flow_scale: float = typer.Option(1.0, "--flow-scale", min=0.0625, max=1.0, help="As for `mis interpolate`"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Drop N frames between every kept pair, interpolate them back and score PSNR and SSIM per inserted index,
    with linear blending and the nearest frame scored on the same frames in the same table."""
    from mis.io.files import resolve_each
    from mis.io.frames import SEQUENCE
    from mis.pipelines.interpolate.evaluate import evaluate_files
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    with model_option():
        pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", model), runtime,
                                                         flow_scale=flow_scale)
    report = {**pipeline.run_info(), **evaluate_files(pipeline, resolve_each(data, kinds=(SEQUENCE,)), drop)}

    def rows(r: dict) -> list[list[str]]:
        table = []
        for case in r["cases"]:
            for index in case["per_index"]:
                table.append([case["file"], str(index["index"]), cell(index["model_psnr"]),
                              cell(index["linear_psnr"]), cell(index["nearest_psnr"]), cell(index["model_ssim"], 4),
                              cell(index["linear_ssim"], 4), cell(index["nearest_ssim"], 4)])
        m = r["mean"]
        return table + [["mean", "all", cell(m["model_psnr"]), cell(m["linear_psnr"]), cell(m["nearest_psnr"]),
                         cell(m["model_ssim"], 4), cell(m["linear_ssim"], 4), cell(m["nearest_ssim"], 4)]]

    report_evaluation(report, runtime, output,
                      f"Frame interpolation, {drop} dropped per gap: model vs linear blending vs nearest frame",
                      ["sequence", "index", "PSNR", "linear PSNR", "nearest PSNR", "SSIM", "linear SSIM",
                       "nearest SSIM"], rows)
