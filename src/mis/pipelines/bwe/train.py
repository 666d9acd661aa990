"""`mis train bwe`: AP-BWE with its published losses and (from `gan_start`) MPD + MRAD + MRPD hinge GAN.

Narrowband inputs are made on the fly exactly as upstream: a wideband window resampled down to the input
rate and back up to the target rate (torchaudio's windowed sinc), cut to the window's length. The losses
(`losses.py`): log-amplitude MSE x 45, anti-wrapping IP + GD + IAF x 100, complex-spectrum MSE x 90, STFT
consistency MSE x 90, hinge GAN and feature matching with MRAD / MRPD weighted 0.1. Gradients are clipped
at 10, AdamW 2e-4 (0.8, 0.99), exponential decay. As for the vocoder, each window carries the network's
receptive field of real audio on both sides, which the network sees and the losses do not (otherwise every
training window's edge frames see zero padding, which inference on real context never does).

Clips are read once at the target rate; the last `val_files` (sorted by name) are held out and scored (LSD,
as `mis evaluate bwe`) at every validation; the shipped weights are the best validation's.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchaudio

from mis.checkpoints import build_card, save_checkpoint
from mis.errors import InputError, UsageError
from mis.models.apbwe import APBWE, APBWEConfig, apbwe_demo, input_band_bins, quiet_above
from mis.models.discriminators import DiscriminatorConfig, MultiPeriodDiscriminator, MultiResolutionDiscriminator
from mis.pipelines.bwe import losses as L
from mis.pipelines.bwe.evaluate import narrowband_pair, scores
from mis.pipelines.bwe.pipeline import TASK
from mis.runtime.training import (RunOptions, StepSeededBatches, TrainConfig, Trainer, hold_out_last,
                                  resume_settings)
from mis.transforms.audio import read_audio_at


@dataclass(kw_only=True)
class BweTrainOptions(RunOptions):
    out: Path
    input_rate: int = 16000
    target_rate: int = 48000
    network: APBWEConfig = field(default_factory=apbwe_demo)
    steps: int = 2000
    gan_start: int = 0            # steps before the discriminators join (0: from the start; > steps: never)
    disc_channels: int = 32       # MPD first width (upstream 32); MRAD / MRPD use 64 as upstream
    batch_size: int = 16
    segment: int = 8000           # samples per training window at the target rate (upstream 8000)
    lr: float = 2e-4
    lr_decay: float = 0.999       # per 100 steps (upstream: 0.999 per epoch)
    val_files: int = 4
    validate_every: int = 250
    context_frames: int | None = None   # None: the network's receptive field (see the module docstring)


class BweDiscriminators(torch.nn.Module):
    """MPD + MRAD + MRPD with one optimizer; returns their (score, features) lists separately."""

    def __init__(self, channels: int):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(DiscriminatorConfig(channels=channels))
        self.mrad = MultiResolutionDiscriminator("amplitude")
        self.mrpd = MultiResolutionDiscriminator("phase")

    def forward(self, wave: torch.Tensor):
        return self.mpd(wave), self.mrad(wave), self.mrpd(wave)


def context_of(options: BweTrainOptions) -> int:
    return options.network.receptive_frames if options.context_frames is None else options.context_frames


def load_clips(paths: list[Path], rate: int, input_rate: int, minimum: int) -> list[np.ndarray]:
    """Clips resampled to the target rate; a clip recorded a little below it (44.1 kHz for 48 kHz) still teaches
    most of the missing band, one at or below the input rate teaches nothing and is refused."""
    clips = []
    for path in paths:
        samples, meta = read_audio_at(path, rate)
        if meta.sample_rate <= input_rate:
            raise InputError(path, f"audio is at {meta.sample_rate} Hz, not above the input rate {input_rate} Hz: it "
                             "has no wideband content to learn from")
        if len(samples) < minimum:
            raise InputError(path, f"clip too short for training ({len(samples) / rate:.2f} s; need "
                             f"{minimum / rate:.2f} s)")
        clips.append(samples.astype(np.float32))
    return clips


def window_sampler(clips: list[np.ndarray], batch_size: int, window: int) -> Callable:
    lengths = np.array([len(c) for c in clips], dtype=np.float64)
    weights = lengths / lengths.sum()

    def sample(rng: np.random.Generator, step: int) -> torch.Tensor:
        rows = []
        for _ in range(batch_size):
            clip = clips[int(rng.choice(len(clips), p=weights))]
            if len(clip) <= window:
                rows.append(np.pad(clip, (0, window - len(clip))))
            else:
                start = int(rng.integers(0, len(clip) - window))
                rows.append(clip[start:start + window])
        return torch.from_numpy(np.stack(rows))

    return sample


def make_step(options: BweTrainOptions) -> Callable:
    hop = options.network.hop_length
    context = context_of(options)
    frames = options.segment // hop + 1
    edge = context * hop
    band = input_band_bins(options.input_rate, options.target_rate, options.network.n_fft)

    def step(trainer: Trainer, wideband: torch.Tensor) -> dict:
        generator, discriminator = trainer.models["generator"], trainer.models["discriminator"]
        narrow = torchaudio.functional.resample(wideband, options.target_rate, options.input_rate)
        narrow = torchaudio.functional.resample(narrow, options.input_rate, options.target_rate)
        narrow = narrow[:, :wideband.shape[-1]]
        model = trainer.module("generator")
        logamp_nb, phase_nb = model.analyse(narrow)
        # as the pipeline does: silence above the input band (leakage and rounding noise there)
        logamp_nb, phase_nb = quiet_above(logamp_nb, phase_nb, band, options.network.log_floor)
        with trainer.autocast():
            logamp, phase = generator(logamp_nb, phase_nb)
        inside = slice(context, context + frames)            # the losses see the segment's frames only
        logamp, phase = logamp.float()[..., inside], phase.float()[..., inside]
        target = wideband[:, edge:edge + options.segment]
        generated = model.synthesize(logamp, phase, length=options.segment)
        metrics = {}
        use_gan = trainer.step >= options.gan_start
        # The discriminators run in fp32 whatever the precision: under bf16 autocast, MRPD's weight-normed
        # convolutions gave NaN gradients on a window that is half silence (a tiny run in tests/test_bwe.py).
        if use_gan:
            real, fake = discriminator(target[:, None]), discriminator(generated.detach()[:, None])
            loss_d = L.discriminator_loss(real, fake)
            trainer.backward_step(loss_d, trainer.optimizers["discriminator"])
            metrics["loss_d"] = loss_d.detach()
        spectral = L.spectral_losses(logamp, phase, target, generated, model.config)
        loss_g = spectral["total"]
        if use_gan:
            real, fake = discriminator(target[:, None]), discriminator(generated[:, None])
            loss_g = loss_g + L.generator_loss(real, fake)
        trainer.backward_step(loss_g, trainer.optimizers["generator"])
        metrics.update({"loss_g": loss_g.detach(), **{k: v.detach() for k, v in spectral.items() if k != "total"}})
        return metrics

    return step


def validation_pairs(val_clips: list[np.ndarray], options: BweTrainOptions) -> list[tuple[np.ndarray, np.ndarray]]:
    """(wideband reference, its sinc-upsampled narrowband copy: the network's input) for the first 4 s of each
    held-out clip, made once for every validation and for the card's sinc score."""
    references = [clip[:4 * options.target_rate] for clip in val_clips]
    return [(r, narrowband_pair(r, options.target_rate, options.input_rate)[1]) for r in references]


def make_validate(pairs: list[tuple[np.ndarray, np.ndarray]], options: BweTrainOptions) -> Callable:
    band = input_band_bins(options.input_rate, options.target_rate, options.network.n_fft)

    @torch.no_grad()
    def validate(trainer: Trainer) -> dict:
        model = trainer.module("generator")
        lsd = []
        for reference, upsampled in pairs:
            generated = model.extend(torch.from_numpy(upsampled)[None].to(trainer.device), band)[0].cpu().numpy()
            lsd.append(scores(generated, reference)["lsd"])
        return {"val_lsd": float(np.mean(lsd))} if lsd else {}

    return validate


def sinc_lsd(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """The sinc baseline's LSD on the held-out clips (what the card compares the model with)."""
    return float(np.mean([scores(upsampled, reference)["lsd"] for reference, upsampled in pairs])) if pairs else None


def check_options(options: BweTrainOptions) -> None:
    if options.input_rate >= options.target_rate:
        raise UsageError(f"--input-sr {options.input_rate} must be below --target-sr {options.target_rate}")
    if options.segment % options.network.hop_length:
        raise UsageError(f"--segment must be a multiple of the hop ({options.network.hop_length})")


def bwe_card(options: BweTrainOptions, train_files: list[Path], val_files: list[Path], metrics: dict) -> dict:
    training = {"steps": options.steps, "gan_start": options.gan_start, "batch_size": options.batch_size,
                "segment": options.segment, "lr": options.lr, "seed": options.seed,
                "context_frames": context_of(options), "disc_channels": options.disc_channels,
                "train_files": [p.name for p in train_files], "held_out_files": [p.name for p in val_files],
                "command": options.command}
    return build_card("apbwe", options.network.to_dict(), task=TASK,
                      preprocessing={"input_sample_rate": options.input_rate, "sample_rate": options.target_rate},
                      training=training, metrics=metrics)


def train_bwe(paths: list[Path], options: BweTrainOptions, log: Callable[[str], None] = lambda _: None) -> dict:
    check_options(options)
    train_files, val_files = hold_out_last(paths, options.val_files)
    window = options.segment + 2 * context_of(options) * options.network.hop_length
    clips = load_clips(train_files, options.target_rate, options.input_rate, options.network.n_fft)
    val_clips = load_clips(val_files, options.target_rate, options.input_rate, options.network.n_fft)
    pairs = validation_pairs(val_clips, options)
    log(f"training {options.input_rate} -> {options.target_rate} Hz on {len(clips)} clips "
        f"({sum(map(len, clips)) / options.target_rate:.0f} s), {len(val_clips)} held out: "
        f"{', '.join(p.name for p in val_files)}")
    torch.manual_seed(options.seed)
    generator, discriminator = APBWE(options.network), BweDiscriminators(options.disc_channels)
    betas = (0.8, 0.99)
    optimizers = {"generator": torch.optim.AdamW(generator.parameters(), options.lr, betas=betas),
                  "discriminator": torch.optim.AdamW(discriminator.parameters(), options.lr, betas=betas)}
    gamma = options.lr_decay ** (1 / 100)
    schedulers = {name: torch.optim.lr_scheduler.ExponentialLR(opt, gamma) for name, opt in optimizers.items()}
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr, grad_clip=10.0,
                         precision=options.precision, checkpoint_every=max(options.validate_every, 1),
                         log_every=50, validate_every=options.validate_every if val_clips else 0,
                         best_metric="val_lsd" if val_clips else None, best_mode="min", seed=options.seed,
                         device=options.device, resume=options.resume, progress=options.progress,
                         description="AP-BWE", settings=resume_settings(options))
    trainer = Trainer({"generator": generator, "discriminator": discriminator}, optimizers, schedulers, config,
                      step_fn=make_step(options), validate_fn=make_validate(pairs, options) if pairs else None)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # before gan_start the discriminators' optimizer does not step, but the loop steps every scheduler
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        result = trainer.fit(StepSeededBatches(window_sampler(clips, options.batch_size, window), options.seed))
    # the run's whole training time (a resumed run's earlier invocations included), as its log records it
    seconds = max(time.perf_counter() - start, float(trainer.logged(trainer.step).get("seconds") or 0.0))
    best = trainer.restore_best() if val_clips else None
    model = trainer.module("generator").cpu().eval()
    metrics = {"val_lsd": (best or {}).get("val_lsd", result.get("val_lsd")), "final_val_lsd": result.get("val_lsd"),
               "sinc_val_lsd": sinc_lsd(pairs), "best_step": (best or {}).get("step"),
               "seconds": seconds}
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, bwe_card(options, train_files, val_files, metrics), half=options.half)
    log(f"{options.steps} steps in {seconds:.0f} s; held-out LSD {metrics['val_lsd']} (sinc "
        f"{metrics['sinc_val_lsd']}); wrote {path}")
    return {"checkpoint": str(path), **trainer.policy.to_dict(), "seconds": seconds, "metrics": metrics}
