"""`mis train <task>`: train or fine-tune a pipeline's network; writes a checkpoint with its card."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import print_json, reports_errors, runtime_of, stdout

app = typer.Typer(help="Train or fine-tune a pipeline's network (one sub-command per task).", no_args_is_help=True)


@app.command("segment")
@reports_errors
def train_segment(
    ctx: typer.Context,
    images: Optional[List[str]] = typer.Option(None, "--images", help="CT volumes (files, folders, DICOM series)"),
    labels: Optional[List[str]] = typer.Option(None, "--labels", help="Label maps, matched to images by case name"),
    labels_map: Optional[Path] = typer.Option(None, "--labels-map", help='JSON {"liver": [5], ...}: source label '
                                              "ids per class; key order = class ids 1..N"),
    phantoms: int = typer.Option(0, min=0, help="Add N seeded synthetic labelled phantoms"),
    out: Path = typer.Option(Path("runs/segment"), "--out", "-o", help="Run folder (checkpoints, metrics.jsonl, "
                             "model.safetensors)"),
    init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False,
                                        help="Start from a checkpoint (e.g. `mis pretrain ct`): tensors with "
                                        "matching name and shape are loaded, the rest re-initialised"),
    steps: int = typer.Option(2000, min=1, help="Training iterations"),
    batch: int = typer.Option(2, "--batch", min=1, help="Patches per iteration"),
    lr: float = typer.Option(1e-3, help="Adam learning rate (poly decay, power 0.9)"),
    full: bool = typer.Option(False, "--full", help="Paper-size PCT-Net (64x128x128 patches, 24..512 channels; "
                              "GPU) instead of the fast CPU configuration"),
    spacing: Optional[float] = typer.Option(None, help="Isotropic model spacing in mm (default 4 fast, 1.5 full)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train PCT-Net: foreground-oversampled patches, flips and intensity augmentation, Dice + CE with deep
    supervision, poly LR, validation Dice on held-out phantoms, periodic checkpoints and exact resume.
    Under `torchrun` it trains with DDP."""
    from mis.pipelines.ct_segmentation.labels import read_labels_map
    from mis.pipelines.ct_segmentation.train import SegTrainOptions, train_segmentation

    runtime = runtime_of(ctx)
    options = SegTrainOptions(
        out=out, images=list(images or []), labels=list(labels or []),
        labels_map=read_labels_map(labels_map) if labels_map else None, phantoms=phantoms, steps=steps,
        batch_size=batch, lr=lr, fast=not full, spacing=(spacing,) * 3 if spacing else None, init=init,
        device=runtime.device, precision=runtime.precision, seed=runtime.seed, resume=resume, half=half,
        progress=runtime.chatty)
    log = (lambda text: stdout.print(text, highlight=False)) if runtime.chatty else (lambda *_: None)
    result = train_segmentation(options, log=log)
    if runtime.json:
        print_json(result)


@app.command("battery")
@reports_errors
def train_battery(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="Cells with observed cycle life (MIT .npz/.csv, BEEP .json, ...)"),
    cycles: int = typer.Option(100, "--cycles", "-n", min=4, max=100, help="Use the first N cycles"),
    split: str = typer.Option("train", help="Train on cells with this split label ('all': every cell)"),
    out: Path = typer.Option(Path("runs/battery"), "--out", "-o", help="Run folder (member checkpoints, "
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
        seed=runtime.seed, device=runtime.device if runtime.device != "auto" else "cpu",
        precision="fp32" if runtime.precision in ("auto", "fp32") else runtime.precision, resume=resume, half=half,
        progress=runtime.chatty)
    log = (lambda text: stdout.print(text, highlight=False)) if runtime.chatty else (lambda *_: None)
    result = run_training(cells, options, log=log)
    if runtime.json:
        print_json(result)


@app.command("vocoder")
@reports_errors
def train_vocoder(
    ctx: typer.Context,
    data: List[str] = typer.Argument(..., help="WAV files or folders (resampled to the model's rate)"),
    out: Path = typer.Option(Path("runs/vocoder"), "--out", "-o", help="Run folder"),
    preset: str = typer.Option("demo22k", help="demo22k (128 channels, 22.05 kHz), 22k (paper size, HiFi-GAN "
                               "convention) or 16k (APNet paper: 16 kHz, hop 80)"),
    steps: int = typer.Option(2000, min=1, help="Training steps"),
    gan_start: int = typer.Option(0, "--gan-start", min=0, help="Steps before the discriminators join"),
    batch: int = typer.Option(4, "--batch", min=1, help="Segments per step"),
    segment: int = typer.Option(8192, min=256, help="Samples per segment (a multiple of the hop)"),
    lr: float = typer.Option(2e-4, help="AdamW learning rate"),
    val_files: int = typer.Option(4, "--val-files", min=0, help="Hold out the last N files (sorted) for validation"),
    disc_channels: int = typer.Option(32, "--disc-channels", min=4, help="MPD width (HiFi-GAN: 32); MSD uses 4x"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train APNet: amplitude, anti-wrapping phase (IP/GD/PTD), STFT consistency, real/imag, mel and
    LSGAN + feature-matching losses with MPD + MSD; validation LSD on the held-out files."""
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
    single_process("mis train vocoder")
    runtime = runtime_of(ctx)
    options = VocoderTrainOptions(
        out=out, mel=mel, network=network, steps=steps, gan_start=gan_start, batch_size=batch, segment=segment,
        lr=lr, val_files=val_files, seed=runtime.seed,
        discriminator=DiscriminatorConfig(channels=disc_channels, scale_channels=4 * disc_channels),
        device=runtime.device if runtime.device != "auto" else "cpu",
        precision="fp32" if runtime.precision in ("auto", "fp32") else runtime.precision, resume=resume, half=half,
        progress=runtime.chatty)
    log = (lambda text: stdout.print(text, highlight=False)) if runtime.chatty else (lambda *_: None)
    result = run_training(resolve_inputs(data, kinds=("audio",)), options, log=log)
    if runtime.json:
        print_json(result)


def single_process(command: str) -> None:
    """Under torchrun every rank would train the whole run and write the same files: say so instead."""
    from mis.errors import UsageError
    from mis.runtime.distributed import dist_info

    if dist_info()[1] > 1:
        raise UsageError(f"{command} trains in one process (DDP: `mis train segment` and `mis pretrain ct`); "
                         "start it without torchrun")
