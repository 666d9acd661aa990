"""APNet's multi-level losses (Ai & Ling 2023, section III-C) and the LSGAN terms.

L_G = 45 L_A + 100 L_P + 20 L_S + (L_GAN + L_FM + 45 L_mel), with
- L_A: MSE of the log-amplitude spectrum (target log(|X| + 1e-5)), plus (our addition, weight
  `convergence_weight`, 0 = the paper) the spectral convergence ||A - |X| ||_F / || |X| ||_F of the linear
  amplitude: an MSE in the log domain weighs every time-frequency bin alike, so the few loud harmonic peaks
  that carry pitch are pulled towards the noise floor between them; on linear amplitude they dominate; and (weight
  `frame_convergence_weight`, 0 = off) the same ratio frame by frame, averaged, so quiet frames count too;
- L_P: anti-wrapping losses f(x) = mean(-cos x) of the instantaneous phase (IP) error, the group delay
  (GD, difference along frequency) error and the phase time difference (PTD, along time) error;
- L_S: STFT consistency (the predicted spectrum vs the STFT of its own inverse STFT) + 2.25 x L1 of
  the real and imaginary parts against the target;
- L_mel: L1 between the log-mels of the real and generated waveforms;
- (ours, `refined_weight`, 0 = off) a multi-resolution STFT loss (spectral convergence + log-magnitude L1 at 512-,
  1024- and 2048-point windows, as in Parallel WaveGAN) on the waveform `mis vocode` plays by default: the network's
  amplitude with the phase Griffin-Lim refines on it. It reaches the amplitude through the refinement, which is where
  the pitch is kept or lost (README, vocoder); the 2048-point window resolves harmonics 11 Hz apart at 22.05 kHz;
- LSGAN generator/discriminator terms over all sub-discriminators and feature matching L1 x 2
  (`mis.models.discriminators`, shared with the bandwidth extension).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mis.transforms.audio import (AMPLITUDE_EPS, MelConfig, STFTConfig, amplitude_phase, consistency_loss, log_mel,
                                  phase_losses, stft)

WEIGHT_AMPLITUDE = 45.0
WEIGHT_PHASE = 100.0
WEIGHT_SPECTRUM = 20.0
WEIGHT_REAL_IMAG = 2.25
WEIGHT_MEL = 45.0
WEIGHT_CONVERGENCE = 45.0   # the default for our training; the paper has none
STFT_RESOLUTIONS = tuple(STFTConfig(n_fft=n, hop_length=n // 4, win_length=n) for n in (512, 1024, 2048))


def targets(wave: torch.Tensor, config: MelConfig) -> dict[str, torch.Tensor]:
    """Log-amplitude, phase, real and imaginary spectra of real audio [B, samples] (each [B, F, T])."""
    return amplitude_phase(wave, config)


def _relative_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||predicted - target||_F / ||target||_F (linear magnitudes, [B, ...])."""
    return (torch.linalg.vector_norm((predicted - target).flatten(1), dim=1)
            / torch.linalg.vector_norm(target.flatten(1), dim=1).clamp_min(1e-3)).mean()


def spectral_convergence(logamp: torch.Tensor, target_logamp: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||A - |X| ||_F / || |X| ||_F on linear amplitudes (inputs are log(|.| + 1e-5))."""
    return _relative_error(torch.exp(logamp.float()), torch.exp(target_logamp.float()) - AMPLITUDE_EPS)


FRAME_FLOOR = 0.1   # frames quieter than this share of the segment's mean frame norm count as if that loud


def frame_convergence(logamp: torch.Tensor, target_logamp: torch.Tensor) -> torch.Tensor:
    """The spectral convergence of each frame, averaged over frames ([B, F, T] log-amplitudes): the segment-wide
    ratio is decided by its loudest frames, and the quiet ones at voicing onsets and offsets, where the demo's pitch
    is furthest from Griffin-Lim's (README, vocoder), barely count in it. Near-silent frames are floored at
    FRAME_FLOOR x the segment's mean frame norm, so that their noise does not take over instead."""
    predicted = torch.exp(logamp.float())
    target = torch.exp(target_logamp.float()) - AMPLITUDE_EPS
    error = torch.linalg.vector_norm(predicted - target, dim=1)            # [B, T]
    norm = torch.linalg.vector_norm(target, dim=1)
    return (error / norm.clamp_min(FRAME_FLOOR * norm.mean(dim=1, keepdim=True)).clamp_min(1e-6)).mean()


def spectral_losses(output: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    config: MelConfig, convergence_weight: float = 0.0,
                    amplitude_weight: float = WEIGHT_AMPLITUDE,
                    frame_convergence_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Frame-level terms of L_G (no waveform/GAN terms), weighted sum in 'total'."""
    losses = {"amplitude": F.mse_loss(output["logamp"], target["logamp"]),
              "convergence": spectral_convergence(output["logamp"], target["logamp"]),
              "frame_convergence": frame_convergence(output["logamp"], target["logamp"])}
    losses.update(phase_losses(output["phase"], target["phase"]))
    losses["consistency"] = consistency_loss(output["real"], output["imag"], config)
    losses["real_imag"] = F.l1_loss(output["real"], target["real"]) + F.l1_loss(output["imag"], target["imag"])
    losses["total"] = (amplitude_weight * losses["amplitude"] + convergence_weight * losses["convergence"]
                       + frame_convergence_weight * losses["frame_convergence"]
                       + WEIGHT_PHASE * (losses["ip"] + losses["gd"] + losses["ptd"])
                       + WEIGHT_SPECTRUM * (losses["consistency"] + WEIGHT_REAL_IMAG * losses["real_imag"]))
    return losses


def mel_loss(generated: torch.Tensor, real_mel: torch.Tensor, config: MelConfig, fbank: torch.Tensor) -> torch.Tensor:
    """L1 between the generated waveform's log-mel and the real one (computed once per step by the caller)."""
    generated_mel = log_mel(generated, config, fbank)
    frames = min(generated_mel.shape[-1], real_mel.shape[-1])
    return F.l1_loss(generated_mel[..., :frames], real_mel[..., :frames])


def multi_resolution_stft_loss(generated: torch.Tensor, reference: torch.Tensor,
                               resolutions=STFT_RESOLUTIONS) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 of the log-magnitudes, [B, samples] each (fp32)."""
    total = generated.new_zeros(())
    for config in resolutions:
        ours, truth = (stft(x.float(), config).abs().clamp_min(AMPLITUDE_EPS) for x in (generated, reference))
        total = total + _relative_error(ours, truth) + F.l1_loss(torch.log(ours), torch.log(truth))
    return total / len(resolutions)
