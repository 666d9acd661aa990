"""Vocoder commands: `mis mel` (log-mels in a vocoder's convention), `mis vocode` (mel -> waveform),
`mis train vocoder`, `mis evaluate vocoder`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors,
                            runtime_of, single_process, training_log)


@reports_errors
def mel(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="WAV/FLAC files, folders or globs"),
    output: Path = typer.Option(Path("mels"), "--output", "-o", help="Output folder (or a .npy name for one input)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Use this vocoder checkpoint's mel convention "
                                        "(default: the shipped vocoder's)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="A named convention instead: 22k (HiFi-GAN/APNet2: "
                                         "1024/256/1024) or 16k (APNet paper: 1024/80/320)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Compute natural-log mel spectrograms \\[n_mels, frames] (.npy, float32) exactly as the vocoder expects:
    its rate (audio is resampled), n_fft/hop/window, Slaney filterbank, log floor and centring."""
    from mis.pipelines.vocoder.mel import MelPipeline
    from mis.pipelines.vocoder.run import mel_files, plan
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    with model_option():
        pipeline = (MelPipeline.from_preset(preset, runtime) if preset
                    else MelPipeline.from_checkpoint(resolve_checkpoint("vocoder", model), runtime))
    items = plan(inputs, output, "audio", ".npy", "_mel")
    summary = mel_files(pipeline, items, runtime, skip_existing=skip_existing, overwrite=overwrite)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    report_run(summary, runtime, "mis mel", extra_columns=["frames", "resampled_from", "note"],
               run_info=pipeline.run_info())


@reports_errors
def vocode(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="Mel .npy files \\[n_mels, frames], folders or globs"),
    output: Path = typer.Option(Path("vocoded"), "--output", "-o", help="Output folder (or a .wav for one input)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Vocoder checkpoint (default: shipped demo)"),
    chunk_frames: int = typer.Option(1024, "--chunk-frames", min=16, help="Frames per chunk (memory is flat in "
                                     "input length; output equals one-pass inference)"),
    phase_refine: Optional[int] = typer.Option(None, "--phase-refine", min=0, help="Griffin-Lim iterations started "
                                               "from the network's phase on its amplitude (0: pure APNet; default: "
                                               "the model card's)"),
    refine_prior: Optional[int] = typer.Option(None, "--refine-prior", min=0, help="How many of those iterations "
                                               "run first on the mel's pseudo-inverse amplitude (steadier pitch; "
                                               "default: the model card's)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Vocode mel spectrograms to 16-bit WAV with APNet. Each mel is checked against the checkpoint's
    convention (band count, orientation, natural-log range) before anything is written. Many short files:
    `mis --batch-size 8 vocode DIR` runs them in padded batches (faster on a CPU; equal to single runs to
    float rounding, i.e. at most 1 LSB in the WAV)."""
    from mis.pipelines.vocoder.pipeline import VocoderPipeline
    from mis.pipelines.vocoder.run import plan, vocode_files
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    with model_option():
        pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", model), runtime,
                                                   chunk_frames=chunk_frames, phase_refine=phase_refine,
                                                   refine_prior=refine_prior)
    items = plan(inputs, output, "mel", ".wav", "")
    summary = vocode_files(pipeline, items, runtime, skip_existing=skip_existing, overwrite=overwrite)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    report_run(summary, runtime, "mis vocode", extra_columns=["seconds_audio", "clipped_samples"],
               run_info=pipeline.run_info())


@reports_errors
def train_vocoder(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="WAV files or folders (resampled to the model's rate)"),
    out: Path = typer.Option(Path("runs/vocoder"), "--output", "-o", "--out", help="Run folder"),
    preset: str = typer.Option("demo22k", help="demo22k (128 channels, 22.05 kHz), 22k (paper size, HiFi-GAN "
                               "convention) or 16k (APNet paper: 16 kHz, hop 80)"),
    steps: int = typer.Option(2000, min=1, help="Training steps"),
    gan_start: int = typer.Option(0, "--gan-start", min=0, help="Steps before the discriminators join"),
    batch: int = typer.Option(4, "--batch", min=1, help="Segments per step"),
    segment: int = typer.Option(8192, min=256, help="Samples per segment (a multiple of the hop)"),
    lr: float = typer.Option(2e-4, help="AdamW learning rate"),
    val_files: int = typer.Option(4, "--val-files", min=0, help="Hold out the last N files (sorted) for validation"),
    disc_channels: int = typer.Option(32, "--disc-channels", min=4, help="MPD width (HiFi-GAN: 32); MSD uses 4x"),
    amplitude_prior: bool = typer.Option(True, "--amplitude-prior/--no-amplitude-prior",
                                         help="Predict the log-amplitude as a residual on the mel's pseudo-inverse "
                                         "(not in upstream APNet; keeps the pitch harmonics from the first step)"),
    phase_refine: int = typer.Option(0, "--phase-refine", min=0, help="The model's default Griffin-Lim iterations "
                                     "from its phase at inference, recorded in its card"),
    refine_prior: int = typer.Option(0, "--refine-prior", min=0, help="How many of those run first on the mel's "
                                     "pseudo-inverse amplitude (card default; validation uses it too)"),
    convergence: float = typer.Option(45.0, "--convergence-weight", min=0.0,
                                      help="Weight of the linear-amplitude spectral convergence loss (not in the "
                                      "paper, 0 = APNet's losses; keeps the pitch harmonics' peaks)"),
    frame_convergence: float = typer.Option(0.0, "--frame-convergence-weight", min=0.0, help="Weight of the "
                                            "spectral convergence taken frame by frame and averaged (quiet frames "
                                            "at voicing onsets and offsets count too; 0 = off)"),
    amplitude_weight: float = typer.Option(45.0, "--amplitude-weight", min=0.0, help="Weight of the log-amplitude "
                                           "MSE (the paper: 45)"),
    refined_weight: float = typer.Option(0.0, "--refined-weight", min=0.0, help="Weight of a multi-resolution "
                                         "STFT loss on the refined output (the amplitude trained through the "
                                         "--phase-refine iterations; 0 = off); its pitch then picks the weights"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", min=0.0, help="Clip the generator's "
                                              "gradient norm (default: off; see --refined-weight in the README)"),
    validate_every: int = typer.Option(250, "--validate-every", min=1, help="Steps between validations (the "
                                       "shipped weights are the best validation's)"),
    init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False, help="Start from this "
                                        "checkpoint's weights (same --preset and --amplitude-prior) instead of the "
                                        "pseudo-inverse prior"),
    joint_losses: bool = typer.Option(False, "--joint-losses", help="Let the phase-dependent losses (real/imag, "
                                      "consistency, mel) train the amplitude too, as upstream (default: they train "
                                      "the phase only; see the README)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train APNet: amplitude, anti-wrapping phase (IP/GD/PTD), STFT consistency, real/imag, mel and
    LSGAN + feature-matching losses with MPD + MSD; validation LSD on the held-out files."""
    import dataclasses

    from mis.errors import UsageError
    from mis.io.files import resolve_inputs
    from mis.models.apnet import apnet_22k, apnet_demo_22k, apnet_paper_16k
    from mis.models.discriminators import DiscriminatorConfig
    from mis.pipelines.vocoder.mel import MEL_16K, MEL_22K
    from mis.pipelines.vocoder.train import VocoderTrainOptions
    from mis.pipelines.vocoder.train import train_vocoder as run_training

    presets = {"demo22k": (apnet_demo_22k(), MEL_22K), "22k": (apnet_22k(), MEL_22K), "16k": (apnet_paper_16k(), MEL_16K)}
    if preset not in presets:
        raise UsageError(f"unknown --preset {preset!r}; valid: {', '.join(presets)}")
    network, mel = presets[preset]
    network = dataclasses.replace(network, amplitude_prior=amplitude_prior, sample_rate=mel.sample_rate,
                                  fmin=mel.fmin, fmax=mel.fmax)
    single_process("mis train vocoder")
    runtime = runtime_of(ctx)
    options = VocoderTrainOptions(
        out=out, mel=mel, network=network, steps=steps, gan_start=gan_start, batch_size=batch, segment=segment,
        lr=lr, val_files=val_files, seed=runtime.seed,
        discriminator=DiscriminatorConfig(channels=disc_channels, scale_channels=4 * disc_channels),
        device=runtime.device, precision=runtime.precision, resume=resume, half=half,
        progress=runtime.chatty, phase_refine=phase_refine, refine_prior=refine_prior, convergence_weight=convergence,
        separate_amplitude=not joint_losses, amplitude_weight=amplitude_weight, validate_every=validate_every,
        init=init, refined_weight=refined_weight, grad_clip=grad_clip, frame_convergence_weight=frame_convergence,
        command=command_line())
    log = training_log(runtime)
    result = run_training(resolve_inputs(data, kinds=("audio",)), options, log=log)
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_vocoder(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Reference WAV files, folders or globs"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Vocoder checkpoint (default: shipped demo)"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Score only the first N seconds of each file"),
    phase_refine: Optional[int] = typer.Option(None, "--phase-refine", min=0, help="Griffin-Lim iterations from the "
                                               "network's phase (default: the model card's)"),
    refine_prior: Optional[int] = typer.Option(None, "--refine-prior", min=0, help="How many of those run first on "
                                               "the mel's pseudo-inverse amplitude (default: the model card's)"),
    diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics", help="Also score the vocoder's parts "
                                     "against the baselines that need no training (pure network, refined, pinv "
                                     "amplitude + network phase, true amplitude + network phase)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Copy-synthesis from each file's mel with the vocoder and with Griffin-Lim (32 iterations) on the same
    mel: LSD, MCD, F0 RMSE, PESQ (wide band) and STOI, per file and mean; with the vocoder's parts beside them."""
    from mis.io.files import resolve_each
    from mis.pipelines.vocoder.evaluate import evaluate_vocoder as run_evaluation
    from mis.pipelines.vocoder.pipeline import VocoderPipeline
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    with model_option():
        pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", model), runtime,
                                                   phase_refine=phase_refine, refine_prior=refine_prior)
    report = {**pipeline.run_info(), **run_evaluation(pipeline, resolve_each(data, kinds=("audio",)), seconds,
                                                      diagnostics)}
    report_evaluation(report, runtime, output, f"Copy synthesis of {len(report['cases'])} file(s), mean",
                      ["system", "LSD dB", "LSD 0-fmax dB", "MCD dB", "F0 RMSE cents (pYIN)", "F0 frame error %",
                       "PESQ wb", "STOI"],
                      lambda r: [[system, cell(m["lsd_db"]), cell(m["lsd_mel_band_db"]), cell(m["mcd_db"]),
                                  cell(m["f0_rmse_cents"], 0), cell(m["f0_frame_error_pct"], 1), cell(m["pesq_wb"]),
                                  cell(m["stoi"], 3)]
                                 for system, m in r["mean"].items()])
