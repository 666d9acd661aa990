"""The vocoder taken apart on held-out speech: where its amplitude loses to the mel's pseudo-inverse, and why.

For each model (the shipped demo, or any --model) and held-out LJSpeech clips, from the same log-mels:

1. Log-amplitude RMS error against the true STFT amplitude, in the low band (0-3.2 kHz, where the pitch
   harmonics are) and above, for the network and for log(pinv(filterbank) @ mel), the baseline that needs no
   training; and the harmonic contrast (mean log-amplitude at the harmonics of the true F0 minus between them,
   0-1.5 kHz, voiced frames): a flat envelope has none, speech a lot.
2. With --train-steps N: the same low-band error over training for the amplitude predictor alone (amplitude loss
   only, the demo's width and learning rate), without and with the amplitude prior, on the training clips: the
   measurement behind "the network starts from the wrong place".

    python benchmarks/vocoder_parts.py [--model PATH] [--train-steps 600]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from mis.models.apnet import APNet, apnet_demo_22k
from mis.pipelines.vocoder.evaluate import yin_f0
from mis.pipelines.vocoder.mel import MEL_22K
from mis.pipelines.vocoder.pipeline import VocoderPipeline
from mis.registry import resolve_checkpoint
from mis.runtime.config import RuntimeConfig
from mis.transforms.audio import (AMPLITUDE_EPS, amplitude_from_mel, log_mel, mel_pseudo_inverse, read_audio_at,
                                  stft)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio" / "ljspeech_22k"
HELD_OUT = [f"LJ001-{i:04d}.wav" for i in range(21, 25)]   # the demo's held-out clips
TRAIN = [f"LJ001-{i:04d}.wav" for i in range(1, 21)]
LOW_BAND_HZ = 3200.0


def true_logamp(samples: np.ndarray) -> torch.Tensor:
    return torch.log(stft(torch.from_numpy(samples)[None], MEL_22K).abs() + AMPLITUDE_EPS)[0]


def band_rmse(estimate: torch.Tensor, truth: torch.Tensor, low: bool) -> float:
    cut = int(LOW_BAND_HZ / (MEL_22K.sample_rate / MEL_22K.n_fft))
    frames = min(estimate.shape[-1], truth.shape[-1])
    part = slice(0, cut) if low else slice(cut, int(MEL_22K.fmax / (MEL_22K.sample_rate / MEL_22K.n_fft)))
    return float(torch.sqrt(((estimate[part, :frames] - truth[part, :frames]) ** 2).mean()))


def harmonic_contrast(logamp: torch.Tensor, samples: np.ndarray) -> float:
    """Mean log-amplitude at the true F0's harmonics minus half-way between them (0-1.5 kHz, voiced frames)."""
    f0 = yin_f0(samples, MEL_22K.sample_rate, frame=1024, hop=MEL_22K.hop_length)
    bin_hz = MEL_22K.sample_rate / MEL_22K.n_fft
    contrasts = []
    for t, pitch in enumerate(f0[: logamp.shape[-1]]):
        if pitch <= 0:
            continue
        harmonics = np.arange(pitch, 1500.0, pitch)
        peaks = [float(logamp[int(round(h / bin_hz)), t]) for h in harmonics]
        valleys = [float(logamp[int(round((h + pitch / 2) / bin_hz)), t]) for h in harmonics]
        contrasts.append(np.mean(peaks) - np.mean(valleys))
    return float(np.mean(contrasts)) if contrasts else float("nan")


def clips(names: list[str]) -> list[np.ndarray]:
    return [read_audio_at(DATA / name, MEL_22K.sample_rate)[0] for name in names if (DATA / name).exists()]


def measure(pipeline: VocoderPipeline, held_out: list[np.ndarray]) -> dict[str, list[float]]:
    basis = mel_pseudo_inverse(MEL_22K)
    rows: dict[str, list[float]] = {}
    for samples in held_out:
        mel = log_mel(torch.from_numpy(samples)[None], MEL_22K)
        truth = true_logamp(samples)
        network = pipeline.spectra(mel[0].numpy())[0]
        pinv = amplitude_from_mel(mel, basis)[0]
        for name, estimate in (("network", network), ("pinv", pinv), ("true", truth)):
            rows.setdefault(f"{name} low-band RMSE", []).append(band_rmse(estimate, truth, True))
            rows.setdefault(f"{name} 3.2-8 kHz RMSE", []).append(band_rmse(estimate, truth, False))
            rows.setdefault(f"{name} harmonic contrast", []).append(harmonic_contrast(estimate, samples))
    return rows


def amplitude_training_curve(train: list[np.ndarray], held_out: list[np.ndarray], prior: bool, steps: int,
                             lr: float = 5e-4) -> list[tuple[int, float, float]]:
    """Low-band log-amplitude RMSE and harmonic contrast on the held-out clips while the amplitude predictor alone
    is trained."""
    torch.manual_seed(0)
    model = APNet(dataclasses.replace(apnet_demo_22k(), amplitude_prior=prior))
    parameters = [p for n, p in model.named_parameters() if n.startswith("ASP_")]
    optimizer = torch.optim.AdamW(parameters, lr, betas=(0.8, 0.99))
    rng = np.random.default_rng(0)
    held = [(log_mel(torch.from_numpy(s[:3 * MEL_22K.sample_rate])[None], MEL_22K), true_logamp(s[:3 * 22050]),
             s[:3 * 22050]) for s in held_out]

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            estimates = [(model.spectra(mel)[0][0], truth, samples) for mel, truth, samples in held]
        return (float(np.mean([band_rmse(e, truth, True) for e, truth, _ in estimates])),
                float(np.mean([harmonic_contrast(e, samples) for e, _, samples in estimates])))

    curve = [(0, *evaluate())]
    for step in range(1, steps + 1):
        batch = []
        for _ in range(4):
            clip = train[int(rng.integers(len(train)))]
            start = int(rng.integers(0, len(clip) - 8192))
            batch.append(clip[start:start + 8192])
        wave = torch.from_numpy(np.stack(batch))
        mel = log_mel(wave, MEL_22K)
        target = torch.log(stft(wave, MEL_22K).abs() + AMPLITUDE_EPS)
        loss = torch.nn.functional.mse_loss(model.spectra(mel)[0], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 6) == 0 or step == steps:
            curve.append((step, *evaluate()))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--train-steps", type=int, default=0)
    args = parser.parse_args()
    held_out = clips(HELD_OUT)
    if not held_out:
        raise SystemExit(f"no LJSpeech clips in {DATA}")
    checkpoint = resolve_checkpoint("vocoder", args.model)
    pipeline = VocoderPipeline.from_checkpoint(checkpoint, RuntimeConfig(device="cpu", precision="fp32", quiet=True))
    rows = measure(pipeline, held_out)
    print(f"{checkpoint.name} on {len(held_out)} held-out LJSpeech clips; log-amplitude vs the true STFT amplitude")
    for name, values in rows.items():
        if not name.startswith("true") or "contrast" in name:
            print(f"  {name:32s} {np.mean(values):7.3f}")
    if args.train_steps:
        train = clips(TRAIN)
        print(f"amplitude predictor alone, {args.train_steps} steps of the amplitude loss (4 x 8192 samples, "
              "AdamW 5e-4): held-out low-band RMSE / harmonic contrast at each step")
        pinv = (np.mean(rows["pinv low-band RMSE"]), np.mean(rows["pinv harmonic contrast"]))
        for prior in (False, True):
            start = time.perf_counter()
            curve = amplitude_training_curve(train, held_out, prior, args.train_steps)
            text = "  ".join(f"{step}: {rmse:.2f}/{contrast:.2f}" for step, rmse, contrast in curve)
            print(f"  {'with prior   ' if prior else 'without prior'}  {text}   ({time.perf_counter() - start:.0f} s)")
        print(f"  pinv alone {pinv[0]:.2f}/{pinv[1]:.2f}; true contrast {np.mean(rows['true harmonic contrast']):.2f}")


if __name__ == "__main__":
    main()
