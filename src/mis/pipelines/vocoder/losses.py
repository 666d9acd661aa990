"""APNet's multi-level losses (Ai & Ling 2023, section III-C) and the LSGAN terms.

L_G = 45 L_A + 100 L_P + 20 L_S + (L_GAN + L_FM + 45 L_mel), with
- L_A: MSE of the log-amplitude spectrum (target log(|X| + 1e-5));
- L_P: anti-wrapping losses f(x) = mean(-cos x) of the instantaneous phase (IP) error, the group delay
  (GD, difference along frequency) error and the phase time difference (PTD, along time) error;
- L_S: STFT consistency (the predicted spectrum vs the STFT of its own inverse STFT) + 2.25 x L1 of
  the real and imaginary parts against the target;
- L_mel: L1 between the log-mels of the real and generated waveforms;
- LSGAN generator/discriminator terms over all sub-discriminators; feature matching L1 x 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mis.pipelines.vocoder.mel import MelConfig, istft, log_mel, stft

WEIGHT_AMPLITUDE = 45.0
WEIGHT_PHASE = 100.0
WEIGHT_SPECTRUM = 20.0
WEIGHT_REAL_IMAG = 2.25
WEIGHT_MEL = 45.0
WEIGHT_FEATURE_MATCHING = 2.0
AMPLITUDE_EPS = 1e-5


def targets(wave: torch.Tensor, config: MelConfig) -> dict[str, torch.Tensor]:
    """Log-amplitude, phase, real and imaginary spectra of real audio [B, samples] (each [B, F, T])."""
    spectrum = stft(wave, config)
    return {"logamp": torch.log(spectrum.abs() + AMPLITUDE_EPS), "phase": torch.angle(spectrum),
            "real": spectrum.real, "imag": spectrum.imag}


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(-torch.cos(x))


def _difference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x_{i+1} - x_i, with -x_last for the last element (upstream's -1/+1 band matrix)."""
    nxt = torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), torch.zeros_like(x.narrow(dim, 0, 1))], dim=dim)
    return nxt - x


def phase_losses(phase: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, F, T] phases -> instantaneous phase, group delay and phase time difference losses."""
    return {"ip": anti_wrapping(phase - target),
            "gd": anti_wrapping(_difference(phase, 1) - _difference(target, 1)),
            "ptd": anti_wrapping(_difference(phase, 2) - _difference(target, 2))}


def consistency_loss(real: torch.Tensor, imag: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Mean squared distance between the predicted spectrum and the STFT of its inverse STFT."""
    spectrum = torch.complex(real, imag)
    again = stft(istft(spectrum, config), config)
    frames = min(again.shape[-1], spectrum.shape[-1])
    return torch.mean((again[..., :frames] - spectrum[..., :frames]).abs() ** 2)


def spectral_losses(output: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    config: MelConfig) -> dict[str, torch.Tensor]:
    """Frame-level terms of L_G (no waveform/GAN terms), weighted sum in 'total'."""
    losses = {"amplitude": F.mse_loss(output["logamp"], target["logamp"])}
    losses.update(phase_losses(output["phase"], target["phase"]))
    losses["consistency"] = consistency_loss(output["real"], output["imag"], config)
    losses["real_imag"] = F.l1_loss(output["real"], target["real"]) + F.l1_loss(output["imag"], target["imag"])
    losses["total"] = (WEIGHT_AMPLITUDE * losses["amplitude"]
                       + WEIGHT_PHASE * (losses["ip"] + losses["gd"] + losses["ptd"])
                       + WEIGHT_SPECTRUM * (losses["consistency"] + WEIGHT_REAL_IMAG * losses["real_imag"]))
    return losses


def mel_loss(generated: torch.Tensor, real_mel: torch.Tensor, config: MelConfig, fbank: torch.Tensor) -> torch.Tensor:
    """L1 between the generated waveform's log-mel and the real one (computed once per step by the caller)."""
    generated_mel = log_mel(generated, config, fbank)
    frames = min(generated_mel.shape[-1], real_mel.shape[-1])
    return F.l1_loss(generated_mel[..., :frames], real_mel[..., :frames])


def discriminator_loss(real_outputs, fake_outputs) -> torch.Tensor:
    loss = 0.0
    for (real_score, _), (fake_score, _) in zip(real_outputs, fake_outputs):
        loss = loss + torch.mean((1 - real_score) ** 2) + torch.mean(fake_score ** 2)
    return loss  # type: ignore[return-value]


def generator_adversarial_loss(fake_outputs) -> torch.Tensor:
    return sum(torch.mean((1 - score) ** 2) for score, _ in fake_outputs)  # type: ignore[return-value]


def feature_matching_loss(real_outputs, fake_outputs) -> torch.Tensor:
    loss = 0.0
    for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs):
        for real_map, fake_map in zip(real_features, fake_features):
            loss = loss + torch.mean(torch.abs(real_map.detach() - fake_map))
    return WEIGHT_FEATURE_MATCHING * loss  # type: ignore[return-value]
