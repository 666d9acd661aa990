"""`mis train vocoder`: APNet with the multi-level losses and (from `gan_start`) MPD + MSD adversarial training.

Uses the shared training loop with a custom step (two optimizers, AdamW 2e-4 betas (0.8, 0.99),
exponential decay), AMP on GPU, periodic checkpoints and exact resume. Clips are read once,
resampled to the model's rate, and random `segment`-sample windows are drawn per step (seeded by
step, so a resumed run sees the same data). The last `val_files` clips (sorted by name) are held out
and scored (LSD) at every validation; best.pt keeps the best one, model.safetensors the final one.
"""
from __future__ import annotations

import functools
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mis.checkpoints import build_card, init_provenance, save_checkpoint
from mis.errors import InputError, UsageError
from mis.models.apnet import APNet, APNetConfig, apnet_demo_22k
from mis.models import discriminators as D
from mis.models.discriminators import DiscriminatorConfig, Discriminators
from mis.pipelines.vocoder import losses as L
from mis.pipelines.vocoder.evaluate import f0_rmse_cents, log_spectral_distance, pesq_wideband
from mis.pipelines.vocoder.mel import MEL_22K
from mis.pipelines.vocoder.pipeline import TASK, refined_phase
from mis.transforms.audio import (MelConfig, amplitude_from_mel, framing_mismatches, log_mel, mel_filterbank,
                                  mel_pseudo_inverse, read_audio_at)
from mis.runtime.training import (LAST, RunOptions, StepSeededBatches, TrainConfig, Trainer, hold_out_last,
                                  resume_settings)


@dataclass(kw_only=True)
class VocoderTrainOptions(RunOptions):
    out: Path
    mel: MelConfig = field(default_factory=lambda: MEL_22K)
    network: APNetConfig = field(default_factory=apnet_demo_22k)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    steps: int = 2000
    gan_start: int = 0            # steps before the discriminators join (0: from the start; > steps: never)
    batch_size: int = 4
    segment: int = 8192           # samples per training window (a multiple of hop)
    lr: float = 2e-4
    lr_decay: float = 0.999       # per 100 steps (upstream: 0.999 per epoch)
    val_files: int = 4
    validate_every: int = 250
    phase_refine: int = 0         # the card's default Griffin-Lim refinement at inference (0: pure APNet)
    refine_prior: int = 0         # the first of those iterations run on the mel's pseudo-inverse amplitude
    # Real audio around each segment, in frames, that the network sees but the losses do not: without it every
    # training frame's receptive field (66 frames for APNet's ResBlocks, twice a 8192-sample segment) reaches into
    # the convolutions' zero padding, i.e. a mel of 0 = a loud flat spectrum, which inference on real context
    # never shows it. None: the network's receptive field.
    context_frames: int | None = None
    convergence_weight: float = L.WEIGHT_CONVERGENCE   # linear-amplitude spectral convergence (0: the paper's losses)
    amplitude_weight: float = L.WEIGHT_AMPLITUDE       # log-amplitude MSE (the paper: 45)
    frame_convergence_weight: float = 0.0              # spectral convergence per frame, averaged (0: off)
    # The amplitude learns from the amplitude losses only (log-MSE, spectral convergence); the losses that also
    # depend on the phase (real/imag, consistency, mel of the waveform) train the phase alone. While the phase is
    # still wrong, which is all of a CPU-length run, those losses are lowest for a smaller amplitude and pull
    # the loud harmonic peaks down (README, vocoder). False: upstream's joint losses.
    separate_amplitude: bool = True
    init: Path | None = None      # start from this checkpoint's generator weights (same network) instead of the prior
    # Weight of the multi-resolution STFT loss on the refined output (the network's amplitude with the phase that
    # `phase_refine` Griffin-Lim iterations make of it, back-propagated through them to the amplitude); 0: off.
    # With it the pitch of the refined output is validated too, and picks the weights to ship.
    refined_weight: float = 0.0
    # Clip the generator's gradient norm (None: off). Gradients through the refinement are spiky: the unit phasors
    # of bins the inverse STFT leaves near zero move a lot for a small change (norms 2e3-2e8 where the spectral
    # convergence gives 5), and an unclipped run diverged within 200 steps.
    grad_clip: float | None = None


def load_clips(paths: list[Path], sample_rate: int) -> list[np.ndarray]:
    clips = []
    for path in paths:
        samples, _ = read_audio_at(path, sample_rate)
        if len(samples) < sample_rate // 4:  # checked up front: validation would fail only after training
            raise InputError(path, f"clip too short for training ({len(samples) / sample_rate:.2f} s; need 0.25 s)")
        clips.append(samples.astype(np.float32))
    return clips


def context_of(options: "VocoderTrainOptions") -> int:
    from mis.pipelines.vocoder.pipeline import receptive_frames

    return receptive_frames(options.network) if options.context_frames is None else options.context_frames


def segment_sampler(clips: list[np.ndarray], batch_size: int, segment: int) -> Callable:
    lengths = np.array([len(c) for c in clips], dtype=np.float64)
    weights = lengths / lengths.sum()

    def make_batch(rng: np.random.Generator, step: int) -> torch.Tensor:
        batch = np.zeros((batch_size, segment), dtype=np.float32)
        for row in range(batch_size):
            clip = clips[int(rng.choice(len(clips), p=weights))]
            if len(clip) <= segment:
                batch[row, :len(clip)] = clip
            else:
                start = int(rng.integers(0, len(clip) - segment))
                batch[row] = clip[start:start + segment]
        return torch.from_numpy(batch)

    return make_batch


def make_step(options: VocoderTrainOptions, fbank: torch.Tensor) -> Callable:
    cfg = options.mel

    context = context_of(options)
    frames = options.segment // cfg.hop_length + 1
    edge = context * cfg.hop_length

    def step(trainer: Trainer, audio: torch.Tensor) -> dict:
        generator = trainer.models["generator"]
        discriminator = trainer.models["discriminator"]
        fb = fbank.to(audio.device)
        with trainer.autocast():
            audio_mel = log_mel(audio, cfg, fb)
            logamp, phase, real, imag, generated = generator(audio_mel)   # segment + context
        whole_logamp, whole_phase = logamp, phase
        # the losses see the segment only: its frames had real audio across their whole receptive field
        inside = slice(context, context + frames)
        if options.separate_amplitude:   # the phase-dependent terms see the amplitude as a constant
            real, imag, generated = trainer.module("generator").synthesize(logamp.detach(), phase)
        wave = audio[:, edge:edge + options.segment]
        generated = generated[:, edge:edge + options.segment]
        logamp, phase, real, imag = (t[..., inside] for t in (logamp, phase, real, imag))
        mel = log_mel(wave, cfg, fb)
        use_gan = trainer.step >= options.gan_start
        metrics = {}
        if use_gan:
            with trainer.autocast():
                loss_d = D.discriminator_loss(discriminator(wave[:, None]), discriminator(generated.detach()[:, None]))
            trainer.backward_step(loss_d, trainer.optimizers["discriminator"])
            metrics["loss_d"] = loss_d.detach()
        target = {name: t[..., inside] for name, t in L.targets(audio, cfg).items()}
        output = {"logamp": logamp.float(), "phase": phase.float(), "real": real, "imag": imag}
        spectral = L.spectral_losses(output, target, cfg, options.convergence_weight, options.amplitude_weight,
                                     options.frame_convergence_weight)
        loss_mel = L.mel_loss(generated, mel, cfg, fb)
        loss_g = spectral["total"] + L.WEIGHT_MEL * loss_mel
        if options.refined_weight:
            refined = refined_output(trainer.module("generator"), whole_logamp, whole_phase, audio_mel, options)
            metrics["refined"] = L.multi_resolution_stft_loss(refined[:, edge:edge + options.segment], wave)
            loss_g = loss_g + options.refined_weight * metrics["refined"]
        if use_gan:
            with trainer.autocast():
                real_out, fake_out = discriminator(wave[:, None]), discriminator(generated[:, None])
            loss_g = loss_g + D.generator_adversarial_loss(fake_out) + D.feature_matching_loss(real_out, fake_out)
        trainer.backward_step(loss_g, trainer.optimizers["generator"])
        metrics = {name: value.detach() for name, value in metrics.items()}
        metrics.update({"loss_g": loss_g.detach(), "amplitude": spectral["amplitude"].detach(),
                        "convergence": spectral["convergence"].detach(),
                        "frame_convergence": spectral["frame_convergence"].detach(),
                        "ip": spectral["ip"].detach(), "mel_l1": loss_mel.detach()})
        return metrics

    return step


# one double-precision pseudo-inverse per convention, not one per training step and validation clip (read only)
_pseudo_inverse = functools.lru_cache(maxsize=4)(mel_pseudo_inverse)


def prior_logamp(mel: torch.Tensor, options: VocoderTrainOptions) -> torch.Tensor | None:
    """The mel's pseudo-inverse log-amplitude where the refinement starts on it (None where it does not)."""
    return amplitude_from_mel(mel, _pseudo_inverse(options.mel)) if options.refine_prior else None


def refined_output(generator: APNet, logamp: torch.Tensor, phase: torch.Tensor, mel: torch.Tensor,
                   options: VocoderTrainOptions) -> torch.Tensor:
    """The waveform `mis vocode` plays by default: Griffin-Lim from the network's phase (a constant here: the phase
    predictor keeps its own losses), first on the mel's pseudo-inverse amplitude if the card says so, then on the
    network's amplitude: differentiable in the amplitude."""
    refined = refined_phase(logamp.float(), phase.detach().float(), prior_logamp(mel.float(), options), options.mel,
                            options.phase_refine, options.refine_prior)
    return generator.synthesize(logamp.float(), refined)[2]


def make_validate(val_clips: list[np.ndarray], options: VocoderTrainOptions, fbank: torch.Tensor) -> Callable:
    cfg = options.mel
    seconds = 3 * cfg.sample_rate

    @torch.no_grad()
    def validate(trainer: Trainer) -> dict:
        generator = trainer.module("generator")
        lsd, pesq, f0 = [], [], []
        for clip in val_clips:
            wave = torch.from_numpy(clip[:seconds])[None].to(trainer.device)
            mel = log_mel(wave, cfg, fbank.to(wave.device))
            logamp, phase = generator.spectra(mel)
            generated = generator.synthesize(logamp, phase)[2][..., :wave.shape[-1]]
            lsd.append(log_spectral_distance(generated[0].cpu().numpy(), clip[:seconds], cfg))
            if options.phase_refine:   # the model as `mis vocode` will run it: refined phase
                refined = refined_phase(logamp.float(), phase.float(), prior_logamp(mel, options), cfg,
                                        options.phase_refine, options.refine_prior)
                default = generator.synthesize(logamp, refined)[2][0, :wave.shape[-1]].cpu().numpy()
                pesq.append(pesq_wideband(default, clip[:seconds], cfg.sample_rate) or 1.0)
                if options.refined_weight:
                    f0.append(f0_rmse_cents(default, clip[:seconds], cfg.sample_rate))
        metrics = {"val_lsd": float(np.mean(lsd))} if lsd else {}
        if pesq:
            metrics["val_pesq"] = float(np.mean(pesq))
        if f0:   # a clip with no frame voiced in both counts as a full semitone off
            metrics["val_f0"] = float(np.mean([100.0 if cents is None else cents for cents in f0]))
        return metrics

    return validate


def vocoder_card(options: VocoderTrainOptions, train_files: list[Path], val_files: list[Path], metrics: dict) -> dict:
    training = {"steps": options.steps, "gan_start": options.gan_start, "batch_size": options.batch_size,
                "segment": options.segment, "lr": options.lr, "seed": options.seed,
                "context_frames": context_of(options), "convergence_weight": options.convergence_weight,
                "amplitude_weight": options.amplitude_weight, "refined_weight": options.refined_weight,
                "frame_convergence_weight": options.frame_convergence_weight,
                "grad_clip": options.grad_clip,
                "separate_amplitude": options.separate_amplitude, "best_metric": best_metric(options),
                "init": options.init.name if options.init else None,
                "init_training": init_provenance(options.init),
                "discriminator": options.discriminator.to_dict(),
                "train_files": [p.name for p in train_files], "held_out_files": [p.name for p in val_files]}
    training["command"] = options.command
    return build_card("apnet", options.network.to_dict(), task=TASK, preprocessing={"mel": options.mel.to_dict()},
                      training=training, metrics=metrics, inference={"phase_refine": options.phase_refine,
                                                                    "phase_refine_prior": options.refine_prior})


def best_metric(options: VocoderTrainOptions) -> str:
    """What picks the weights to ship: the held-out PESQ of the default inference when the model refines its phase
    (what users will hear), its F0 RMSE when training through the refinement (the pitch is what that loss is for),
    else the pure network's LSD."""
    if options.phase_refine:
        return "val_f0" if options.refined_weight else "val_pesq"
    return "val_lsd"


def best_mode(options: VocoderTrainOptions) -> str:
    return "max" if best_metric(options) == "val_pesq" else "min"


def start_on_the_prior(generator: APNet) -> None:
    """Zero the amplitude head, so that training starts exactly on the pseudo-inverse prior (a fixed linear map of
    the mel) and every change to it has to pay for itself in the losses."""
    with torch.no_grad():
        head = generator.ASP_output_conv
        head.parametrizations.weight.original0.zero_()
        head.bias.zero_()


def check_options(options: VocoderTrainOptions) -> None:
    mel = options.mel
    differ = framing_mismatches(options.network.stft, mel)
    if options.network.n_mels != mel.n_mels:
        differ.append(f"n_mels {options.network.n_mels} vs {mel.n_mels}")
    if differ:
        raise UsageError(f"network and mel convention disagree on n_fft/hop/win/n_mels: {', '.join(differ)}")
    if options.segment % mel.hop_length:
        raise UsageError(f"--segment must be a multiple of the hop ({mel.hop_length})")
    if options.refine_prior > options.phase_refine:
        raise UsageError(f"--refine-prior {options.refine_prior}: at most --phase-refine ({options.phase_refine})")
    if options.refined_weight and not options.phase_refine:
        raise UsageError("--refined-weight trains through the phase refinement: give --phase-refine N too")


def start_from(generator: APNet, path: Path) -> None:
    """Load a checkpoint's generator weights; its network must be the one being trained."""
    from mis.checkpoints import load_checkpoint

    model, card = load_checkpoint(path)
    if card.get("family") != "apnet" or APNetConfig.from_dict(card["config"]) != generator.config:
        raise UsageError(f"--init {path}: not an APNet checkpoint of the network being trained (same preset and "
                         "--amplitude-prior)")
    generator.load_state_dict(model.state_dict())


def train_vocoder(paths: list[Path], options: VocoderTrainOptions, log: Callable[[str], None] = lambda _: None) -> dict:
    check_options(options)
    train_files, val_files = hold_out_last(paths, options.val_files)
    clips = load_clips(train_files, options.mel.sample_rate)
    val_clips = load_clips(val_files, options.mel.sample_rate)
    log(f"training on {len(clips)} clips ({sum(map(len, clips)) / options.mel.sample_rate:.0f} s), "
        f"{len(val_clips)} held out: {', '.join(p.name for p in val_files)}")
    torch.manual_seed(options.seed)
    generator, discriminator = APNet(options.network), Discriminators(options.discriminator)
    if options.init is not None:
        start_from(generator, options.init)
    elif options.network.amplitude_prior:
        start_on_the_prior(generator)
    betas = (0.8, 0.99)
    optimizers = {"generator": torch.optim.AdamW(generator.parameters(), options.lr, betas=betas),
                  "discriminator": torch.optim.AdamW(discriminator.parameters(), options.lr, betas=betas)}
    gamma = options.lr_decay ** (1 / 100)
    schedulers = {name: torch.optim.lr_scheduler.ExponentialLR(opt, gamma) for name, opt in optimizers.items()}
    fbank = mel_filterbank(options.mel)
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr, grad_clip=options.grad_clip,
                         precision=options.precision, checkpoint_every=max(options.validate_every, 1),
                         log_every=50, validate_every=options.validate_every if val_clips else 0,
                         best_metric=best_metric(options) if val_clips else None,
                         best_mode=best_mode(options), seed=options.seed,
                         device=options.device, resume=options.resume, progress=options.progress,
                         description="APNet", settings=resume_settings(options))
    trainer = Trainer({"generator": generator, "discriminator": discriminator}, optimizers, schedulers, config,
                      step_fn=make_step(options, fbank),
                      validate_fn=make_validate(val_clips, options, fbank) if val_clips else None)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Before gan_start the discriminator's optimizer does not step, but the loop steps every scheduler.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        sampled = options.segment + 2 * context_of(options) * options.mel.hop_length
        result = trainer.fit(StepSeededBatches(segment_sampler(clips, options.batch_size, sampled), options.seed))
    # the run's whole training time (a resumed run's earlier invocations included), as its log records it
    seconds = max(time.perf_counter() - start, float(trainer.logged(trainer.step).get("seconds") or 0.0))
    best = trainer.restore_best() if val_clips else None   # ship the best validation's weights
    model = trainer.module("generator").cpu().eval()
    metrics = {"val_lsd": (best or result).get("val_lsd"), "val_pesq": (best or result).get("val_pesq"),
               "val_f0": (best or result).get("val_f0"),
               "best_step": (best or {}).get("best_step"), "final_val_lsd": result.get("val_lsd"),
               "seconds": seconds}
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, vocoder_card(options, train_files, val_files, metrics), half=options.half)
    log(f"{options.steps} steps in {seconds:.0f} s; shipped the weights of step {metrics['best_step']} (validation "
        f"LSD {metrics['val_lsd']}, PESQ {metrics['val_pesq']}); wrote {path} "
        f"(resume state: {options.out / LAST})")
    return {"checkpoint": str(path), **trainer.policy.to_dict(), "seconds": seconds, "metrics": metrics}
