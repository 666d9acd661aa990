"""Bandwidth extension commands: `mis bwe`, `mis train bwe`, `mis evaluate bwe`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors,
                            runtime_of, single_process, training_log)

# the shipped demo for each target rate
DEMO_FOR_TARGET = {48000: "bwe_apbwe_demo_16k_48k", 16000: "bwe_apbwe_demo_8k_16k"}


def load_pipeline(model: Optional[str], target_sr: Optional[int], runtime, **options):
    """The checkpoint named by --model, else the shipped demo for --target-sr; the two must agree."""
    from mis.errors import UsageError
    from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
    from mis.registry import resolve_checkpoint

    if model is None and target_sr is not None and target_sr not in DEMO_FOR_TARGET:
        raise UsageError(f"no shipped model extends to {target_sr} Hz (shipped: "
                         f"{', '.join(map(str, DEMO_FOR_TARGET))}); train one with `mis train bwe` and pass --model")
    name = model or DEMO_FOR_TARGET.get(target_sr or 48000)
    with model_option():
        pipeline = BandwidthExtensionPipeline.from_checkpoint(resolve_checkpoint("bwe", name), runtime, **options)
    if target_sr is not None and target_sr != pipeline.sample_rate:
        raise UsageError(f"--target-sr {target_sr}: the model {name} extends {pipeline.input_rate} Hz audio to "
                         f"{pipeline.sample_rate} Hz")
    return pipeline


@reports_errors
def bwe(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="Audio files (WAV/FLAC/MP3/OGG), folders or globs"),
    output: Path = typer.Option(Path("bwe"), "--output", "-o", help="Output folder (or a .wav for one input)"),
    target_sr: Optional[int] = typer.Option(None, "--target-sr", help="Output rate: 48000 (from 16 kHz) or 16000 "
                                            "(from 8 kHz) with the shipped demos; default: the model's, else 48000"),
    input_sr: Optional[int] = typer.Option(None, "--input-sr", help="Treat the input as band-limited to this rate "
                                           "(audio recorded at a higher rate is low-passed to it first); default: "
                                           "the file's rate, which must be the model's input rate"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="AP-BWE checkpoint (default: the shipped demo "
                                        "for --target-sr)"),
    keep_low_band: bool = typer.Option(False, "--keep-low-band", help="Keep the input's own spectrum below its "
                                       "Nyquist frequency (crossfaded into the model's output above 85% of it)"),
    chunk_seconds: float = typer.Option(8.0, "--chunk-seconds", min=0.1, help="Seconds per chunk (memory is flat "
                                        "in input length; output equals one-pass inference)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Widen narrowband speech (telephone 8 kHz, 16 kHz recordings) to 16 or 48 kHz with AP-BWE: the input is
    resampled to the target rate and the network predicts the full-band amplitude and phase spectra. Stereo is
    extended per channel; 16/24-bit and float WAVs keep their sample format (others become 16-bit WAV)."""
    from mis.pipelines.bwe.run import bwe_files, plan

    runtime = runtime_of(ctx)
    pipeline = load_pipeline(model, target_sr, runtime, keep_low_band=keep_low_band, chunk_seconds=chunk_seconds)
    items = plan(inputs, output)
    summary = bwe_files(pipeline, items, runtime, input_rate=input_sr, skip_existing=skip_existing,
                        overwrite=overwrite)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    report_run(summary, runtime, "mis bwe", extra_columns=["from_hz", "channels", "seconds_audio", "clipped_samples"],
               run_info=pipeline.run_info())


@reports_errors
def train_bwe(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Wideband audio files or folders (at or above --target-sr)"),
    input_sr: int = typer.Option(16000, "--input-sr", help="Rate of the narrowband input (its bandwidth is half)"),
    target_sr: int = typer.Option(48000, "--target-sr", help="Rate of the wideband output"),
    out: Path = typer.Option(Path("runs/bwe"), "--output", "-o", "--out", help="Run folder"),
    preset: str = typer.Option("demo", help="demo (4 blocks of 128 channels) or paper (8 blocks of 512, 29.8 M)"),
    steps: int = typer.Option(2000, min=1, help="Training steps"),
    gan_start: int = typer.Option(0, "--gan-start", min=0, help="Steps before the discriminators join "
                                  "(more than --steps: never)"),
    batch: int = typer.Option(16, "--batch", min=1, help="Windows per step (upstream 16)"),
    segment: int = typer.Option(8000, min=800, help="Samples per window at the target rate (a multiple of 80)"),
    lr: float = typer.Option(2e-4, help="AdamW learning rate"),
    val_files: int = typer.Option(4, "--val-files", min=0, help="Hold out the last N files (sorted) for validation"),
    disc_channels: int = typer.Option(32, "--disc-channels", min=4, help="MPD width (upstream 32)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train AP-BWE: narrowband inputs made on the fly (resampled down to --input-sr and back), amplitude,
    anti-wrapping phase, complex and consistency losses, hinge GAN with MPD + MRAD + MRPD; validation LSD on
    the held-out files; the best validation's weights are kept."""
    from mis.errors import UsageError
    from mis.io.files import resolve_inputs
    from mis.models.apbwe import apbwe_demo, apbwe_paper
    from mis.pipelines.bwe.train import BweTrainOptions
    from mis.pipelines.bwe.train import train_bwe as run_training

    presets = {"demo": apbwe_demo(), "paper": apbwe_paper()}
    if preset not in presets:
        raise UsageError(f"unknown --preset {preset!r}; valid: {', '.join(presets)}")
    single_process("mis train bwe")
    runtime = runtime_of(ctx)
    options = BweTrainOptions(
        out=out, input_rate=input_sr, target_rate=target_sr, network=presets[preset], steps=steps,
        gan_start=gan_start, batch_size=batch, segment=segment, lr=lr, val_files=val_files,
        disc_channels=disc_channels, seed=runtime.seed, device=runtime.device, precision=runtime.precision,
        resume=resume, half=half, progress=runtime.chatty, command=command_line())
    result = run_training(resolve_inputs(data, kinds=("audio",)), options, log=training_log(runtime))
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_bwe(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Wideband reference audio files, folders or globs"),
    input_sr: Optional[int] = typer.Option(None, "--input-sr", help="Narrowband rate (must be the model's)"),
    target_sr: Optional[int] = typer.Option(None, "--target-sr", help="Wideband rate (picks the shipped demo)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="AP-BWE checkpoint (default: the shipped demo "
                                        "for --target-sr)"),
    keep_low_band: bool = typer.Option(False, "--keep-low-band", help="Score the output with the input's own low "
                                       "band kept (as `mis bwe --keep-low-band`)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Each reference is resampled down to the input rate and extended back; LSD, SNR and APD-IP/GD/IAF of the
    model and, in the same table, of sinc upsampling of the same narrowband signal; per file and mean."""
    from mis.errors import UsageError
    from mis.io.files import resolve_each
    from mis.pipelines.bwe.evaluate import evaluate_files

    runtime = runtime_of(ctx)
    pipeline = load_pipeline(model, target_sr, runtime, keep_low_band=keep_low_band)
    if input_sr is not None and input_sr != pipeline.input_rate:
        raise UsageError(f"--input-sr {input_sr}: the model extends {pipeline.input_rate} Hz audio to "
                         f"{pipeline.sample_rate} Hz")
    report = {**pipeline.run_info(), **evaluate_files(pipeline, resolve_each(data, kinds=("audio",)))}

    def rows(r: dict) -> list[list[str]]:
        table = [[c["file"], cell(c["lsd"]), cell(c["sinc_lsd"]), cell(c["snr"]), cell(c["sinc_snr"]),
                  cell(c["apd_ip"]), cell(c["apd_gd"]), cell(c["apd_iaf"])] for c in r["cases"]]
        m = r["mean"]
        return table + [["mean", cell(m["lsd"]), cell(m["sinc_lsd"]), cell(m["snr"]), cell(m["sinc_snr"]),
                         cell(m["apd_ip"]), cell(m["apd_gd"]), cell(m["apd_iaf"])]]

    report_evaluation(report, runtime, output,
                      f"Bandwidth extension {pipeline.input_rate} -> {pipeline.sample_rate} Hz vs sinc upsampling",
                      ["file", "LSD", "sinc LSD", "SNR dB", "sinc SNR dB", "APD-IP", "APD-GD", "APD-IAF"], rows)
