"""AP-BWE's losses (Lu et al. 2024; upstream train_48k.py), on the shared STFT and discriminators.

L_G = 45 L_A + 100 (L_IP + L_GD + L_IAF) + 90 L_C + 90 L_S + L_GAN + L_FM, with
- L_A: MSE of the log-amplitude log(|X| + 1e-4);
- IP / GD / IAF: the linear anti-wrapping losses (`transforms.audio.bwe_phase_losses`);
- L_C: MSE of the complex spectrum (real and imaginary parts) rebuilt from log-amplitude and phase;
- L_S: MSE between the predicted complex spectrum and the STFT of its own waveform (consistency);
- hinge GAN and feature matching over MPD + 0.1 x (MRAD + MRPD). There is no mel loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mis.models import discriminators as D
from mis.models.apbwe import APBWEConfig, analyse
from mis.transforms.audio import bwe_phase_losses

WEIGHT_AMPLITUDE = 45.0
WEIGHT_PHASE = 100.0
WEIGHT_COMPLEX = 90.0
WEIGHT_CONSISTENCY = 90.0
WEIGHT_RESOLUTION_DISCRIMINATORS = 0.1   # MRAD and MRPD, in D, G and feature matching


def _complex(logamp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """[B, F, T, 2] (real, imaginary), upstream's `com` layout."""
    amplitude = torch.exp(logamp)
    return torch.stack((amplitude * torch.cos(phase), amplitude * torch.sin(phase)), dim=-1)


def spectral_losses(logamp: torch.Tensor, phase: torch.Tensor, target_wave: torch.Tensor,
                    generated_wave: torch.Tensor, config: APBWEConfig) -> dict[str, torch.Tensor]:
    """The frame-level terms of L_G for predicted spectra [B, F, T] and the waveforms [B, samples]."""
    target_logamp, target_phase = analyse(target_wave, config)
    again_logamp, again_phase = analyse(generated_wave, config)
    losses = {"amplitude": F.mse_loss(logamp, target_logamp)}
    losses.update(bwe_phase_losses(phase, target_phase))
    predicted = _complex(logamp, phase)
    losses["complex"] = F.mse_loss(predicted, _complex(target_logamp, target_phase))
    losses["consistency"] = F.mse_loss(predicted, _complex(again_logamp, again_phase))
    losses["total"] = (WEIGHT_AMPLITUDE * losses["amplitude"]
                       + WEIGHT_PHASE * (losses["ip"] + losses["gd"] + losses["iaf"])
                       + WEIGHT_COMPLEX * losses["complex"] + WEIGHT_CONSISTENCY * losses["consistency"])
    return losses


def _weighted(parts: tuple, function) -> torch.Tensor:
    mpd, mrad, mrpd = parts
    return function(*mpd) + WEIGHT_RESOLUTION_DISCRIMINATORS * (function(*mrad) + function(*mrpd))


def discriminator_loss(real, fake) -> torch.Tensor:
    """Hinge loss of MPD + 0.1 (MRAD + MRPD); `real`/`fake` are BweDiscriminators outputs."""
    return _weighted(tuple(zip(real, fake)), D.hinge_discriminator_loss)


def generator_loss(real, fake) -> torch.Tensor:
    """Hinge generator loss + feature matching (L1, unweighted as upstream), MPD + 0.1 (MRAD + MRPD)."""
    adversarial = _weighted(tuple((f,) for f in fake), D.hinge_generator_loss)
    matching = _weighted(tuple(zip(real, fake)), D.feature_distance)
    return adversarial + matching
