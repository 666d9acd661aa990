"""`mis mel` and `mis vocode`: log-mel features in a vocoder's convention, and mel -> waveform."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import report_run, reports_errors, runtime_of


def _mel_config(model: str | None, preset: str | None):
    from mis.checkpoints import read_card
    from mis.errors import UsageError
    from mis.pipelines.vocoder.mel import MEL_16K, MEL_22K, MelConfig
    from mis.registry import resolve_checkpoint

    if preset:
        presets = {"22k": MEL_22K, "16k": MEL_16K}
        if preset not in presets:
            raise UsageError(f"unknown --preset {preset!r}; valid: {', '.join(presets)}")
        return presets[preset]
    return MelConfig.from_dict(read_card(resolve_checkpoint("vocoder", model))["preprocessing"]["mel"])


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
    """Compute natural-log mel spectrograms [n_mels, frames] (.npy, float32) exactly as the vocoder expects:
    its rate (audio is resampled), n_fft/hop/window, Slaney filterbank, log floor and centring."""
    from mis.pipelines.vocoder.run import mel_files, plan

    runtime = runtime_of(ctx)
    config = _mel_config(model, preset)
    items = plan(inputs, output, "audio", ".npy", "_mel")
    summary = mel_files(items, config, workers=runtime.workers, skip_existing=skip_existing, overwrite=overwrite,
                        progress=runtime.chatty)
    report_run(summary, runtime, "mis mel", extra_columns=["frames", "resampled_from", "note"])


@reports_errors
def vocode(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="Mel .npy files [n_mels, frames], folders or globs"),
    output: Path = typer.Option(Path("vocoded"), "--output", "-o", help="Output folder (or a .wav for one input)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Vocoder checkpoint (default: shipped demo)"),
    chunk_frames: int = typer.Option(1024, "--chunk-frames", min=16, help="Frames per chunk (memory is flat in "
                                     "input length; output equals one-pass inference)"),
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
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", model), runtime, chunk_frames)
    items = plan(inputs, output, "mel", ".wav", "")
    summary = vocode_files(pipeline, items, workers=runtime.workers, batch_size=runtime.batch_size or 1,
                           skip_existing=skip_existing, overwrite=overwrite,
                           progress=runtime.chatty)
    report_run(summary, runtime, "mis vocode", extra_columns=["seconds_audio", "clipped_samples"])
