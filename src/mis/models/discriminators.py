"""Discriminators for the audio networks: HiFi-GAN's multi-period (MPD) and multi-scale (MSD) for APNet;
MPD and AP-BWE's multi-resolution amplitude and phase discriminators (MRAD, MRPD) for AP-BWE.

MPD: for each period p in (2, 3, 5, 7, 11) the waveform is folded to [B, 1, T/p, p] and scored by
2-D convolutions with kernels (5, 1) (one column per phase of the period). MSD: three 1-D
discriminators on the raw, 2x and 4x average-pooled waveform, the first with spectral norm.
Each discriminator returns (score map, feature maps) for the LSGAN and feature-matching losses.
MRAD / MRPD: per resolution (n_fft, hop, win) the amplitude (or phase) of a rectangular-window STFT,
[B, 1, F, T], scored by five 2-D convolutions of 64 channels (AP-BWE's DiscriminatorAR / DiscriminatorPR).
Module names follow HiFi-GAN's and AP-BWE's (`discriminators`, `convs`, `conv_post`, `meanpools`).
Losses: least squares (LSGAN, APNet) or hinge (AP-BWE) over a list of (score, features) pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from mis.models.common import DictConfig

LRELU_SLOPE = 0.1


@dataclass(frozen=True, kw_only=True)
class DiscriminatorConfig(DictConfig):
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    channels: int = 32          # MPD first width (HiFi-GAN: 32 -> 128 -> 512 -> 1024 -> 1024)
    scale_channels: int = 128   # MSD first width (HiFi-GAN: 128 ... 1024)


def _score(x: torch.Tensor, convs: nn.ModuleList, conv_post: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Conv stack with LeakyReLU, keeping every layer's output for feature matching -> (scores, features)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int = 32):
        super().__init__()
        self.period = period
        widths = [1, channels, channels * 4, channels * 16, channels * 32, channels * 32]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i in range(5))
        self.conv_post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = wave.shape                                   # [B, 1, T]
        if t % self.period:
            wave = F.pad(wave, (0, self.period - t % self.period), mode="reflect")
        return _score(wave.view(b, c, -1, self.period), self.convs, self.conv_post)   # [B, 1, T/p, p]


class ScaleDiscriminator(nn.Module):
    def __init__(self, channels: int = 128, spectral: bool = False):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        c = channels
        specs = [(1, c, 15, 1, 1), (c, c, 41, 2, 4), (c, 2 * c, 41, 2, 16), (2 * c, 4 * c, 41, 4, 16),
                 (4 * c, 8 * c, 41, 4, 16), (8 * c, 8 * c, 41, 1, 16), (8 * c, 8 * c, 5, 1, 1)]
        # groups as HiFi-GAN's at full width; narrower test/demo widths use the largest group count that divides
        self.convs = nn.ModuleList(norm(nn.Conv1d(i, o, k, s, groups=math.gcd(g, i, o), padding=k // 2))
                                   for i, o, k, s, g in specs)
        self.conv_post = norm(nn.Conv1d(8 * c, 1, 3, 1, padding=1))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _score(wave, self.convs, self.conv_post)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, config.channels) for p in config.periods)

    def forward(self, wave: torch.Tensor):
        return [d(wave) for d in self.discriminators]


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList([ScaleDiscriminator(config.scale_channels, spectral=True),
                                             ScaleDiscriminator(config.scale_channels),
                                             ScaleDiscriminator(config.scale_channels)])
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])

    def forward(self, wave: torch.Tensor):
        outputs = []
        for i, discriminator in enumerate(self.discriminators):
            if i > 0:
                wave = self.meanpools[i - 1](wave)
            outputs.append(discriminator(wave))
        return outputs


class Discriminators(nn.Module):
    """MPD + MSD in one module (one optimizer); returns the list of (score, features) of all of them."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(config)
        self.msd = MultiScaleDiscriminator(config)

    def forward(self, wave: torch.Tensor):
        return self.mpd(wave) + self.msd(wave)


RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


class ResolutionDiscriminator(nn.Module):
    """AP-BWE's DiscriminatorAR (`spectrum="amplitude"`) or DiscriminatorPR (`"phase"`) at one resolution."""

    def __init__(self, resolution: tuple[int, int, int], spectrum: str, channels: int = 64):
        super().__init__()
        if spectrum not in ("amplitude", "phase"):
            raise ValueError(f"spectrum must be 'amplitude' or 'phase', not {spectrum!r}")
        self.resolution, self.spectrum = tuple(resolution), spectrum
        c = channels
        specs = [(1, (7, 5), (2, 2), (3, 2)), (c, (5, 3), (2, 1), (2, 1)), (c, (5, 3), (2, 2), (2, 1)),
                 (c, (3, 3), (2, 1), (1, 1)), (c, (3, 3), (2, 2), (1, 1))]
        self.convs = nn.ModuleList(weight_norm(nn.Conv2d(i, c, k, s, padding=p)) for i, k, s, p in specs)
        self.conv_post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_fft, hop, win = self.resolution
        # a rectangular window, as upstream (window=None there)
        rectangle = torch.ones(win, device=wave.device)
        spectrum = torch.stft(wave.squeeze(1).float(), n_fft, hop, win, window=rectangle, center=True,
                              return_complex=True)                                  # [B, F, T]
        x = spectrum.abs() if self.spectrum == "amplitude" else spectrum.angle()
        return _score(x.unsqueeze(1).to(wave.dtype), self.convs, self.conv_post)


class MultiResolutionDiscriminator(nn.Module):
    """MRAD or MRPD: one ResolutionDiscriminator per STFT resolution."""

    def __init__(self, spectrum: str, resolutions=RESOLUTIONS, channels: int = 64):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(r, spectrum, channels) for r in resolutions)

    def forward(self, wave: torch.Tensor):
        return [d(wave) for d in self.discriminators]


# ---- adversarial losses over a list of (score, features) pairs, one per sub-discriminator ----------

WEIGHT_FEATURE_MATCHING = 2.0


def discriminator_loss(real_outputs, fake_outputs) -> torch.Tensor:
    loss = 0.0
    for (real_score, _), (fake_score, _) in zip(real_outputs, fake_outputs):
        loss = loss + torch.mean((1 - real_score) ** 2) + torch.mean(fake_score ** 2)
    return loss  # type: ignore[return-value]


def generator_adversarial_loss(fake_outputs) -> torch.Tensor:
    return sum(torch.mean((1 - score) ** 2) for score, _ in fake_outputs)  # type: ignore[return-value]


def feature_distance(real_outputs, fake_outputs) -> torch.Tensor:
    """Sum over sub-discriminators and layers of the mean L1 distance between real and fake feature maps."""
    loss = 0.0
    for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs):
        for real_map, fake_map in zip(real_features, fake_features):
            loss = loss + torch.mean(torch.abs(real_map.detach() - fake_map))
    return loss  # type: ignore[return-value]


def feature_matching_loss(real_outputs, fake_outputs) -> torch.Tensor:
    """HiFi-GAN's (and APNet's) feature matching: 2 x feature_distance."""
    return WEIGHT_FEATURE_MATCHING * feature_distance(real_outputs, fake_outputs)


def hinge_discriminator_loss(real_outputs, fake_outputs) -> torch.Tensor:
    """AP-BWE's discriminator loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) per sub-discriminator."""
    loss = 0.0
    for (real_score, _), (fake_score, _) in zip(real_outputs, fake_outputs):
        loss = loss + torch.mean(F.relu(1 - real_score)) + torch.mean(F.relu(1 + fake_score))
    return loss  # type: ignore[return-value]


def hinge_generator_loss(fake_outputs) -> torch.Tensor:
    return sum(torch.mean(F.relu(1 - score)) for score, _ in fake_outputs)  # type: ignore[return-value]
