"""AP-BWE (Lu et al., 2024): narrowband amplitude and phase spectra -> wideband ones -> inverse STFT.

Module names follow the upstream `models/model.py` (`APNet_BWE_Model`: conv_pre_mag/pha, norm_pre_mag/pha,
convnext_mag/pha, norm_post_mag/pha, linear_post_mag, linear_post_pha_r/i; ConvNeXt blocks with dwconv,
norm, pwconv1, pwconv2, gamma), so released state dicts load by name (docs/apbwe_keymap.md).

- The model runs at the target rate: its input is the band-limited signal resampled up (not a shorter one),
  framed by a centred STFT (n_fft 1024, hop 80, Hann window 320 at every rate pair).
- Two streams, amplitude (log(|X| + 1e-4)) and phase (angle X), each Conv1d(F -> C, k7) + LayerNorm.
- `layers` ConvNeXt blocks per stream: depthwise Conv1d k7 -> LayerNorm -> Linear C -> 3C -> GELU ->
  Linear 3C -> C -> layer scale (init 1 / layers) -> residual. Before every block the streams interact:
  the phase stream is added to the amplitude stream, then the updated amplitude stream to the phase stream.
- LayerNorm, then amplitude = the input log-amplitude + Linear(C -> F) (a residual: the low band is nearly
  given), phase = atan2 of two Linear(C -> F) heads. The whole band is re-estimated, the low band too.

Every layer runs at frame rate (hop 80), with 1-D convolutions only: the paper quotes 18x real time at
48 kHz on one CPU for the 29.76 M-parameter paper model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (re-exported)
from mis.transforms.audio import FramedNetwork, istft, stft

ATAN2_EPS = 1e-5  # added to the real head where it is exactly 0, so atan2's gradient stays finite
PHASE_WRAP_TOLERANCE = 1e-4  # input phases this close above -pi count as +pi (see `analyse`)


@dataclass(frozen=True, kw_only=True)
class APBWEConfig(FramedNetwork, DictConfig):
    n_fft: int = 1024
    hop_length: int = 80
    win_length: int = 320
    channels: int = 512           # upstream ConvNeXt_channels
    layers: int = 8               # upstream ConvNeXt_layers
    kernel_size: int = 7          # the input convs and the depthwise convs
    log_floor: float = 1e-4       # log(|X| + 1e-4), upstream's amplitude floor

    @property
    def receptive_frames(self) -> int:
        """Frames of context each side that influence one output frame (input conv + every depthwise conv)."""
        return (self.kernel_size - 1) // 2 * (1 + self.layers)


def apbwe_paper() -> APBWEConfig:
    """The published configuration (every rate pair): 29.76 M parameters."""
    return APBWEConfig()


def apbwe_demo() -> APBWEConfig:
    """The CPU-trained demo: 4 blocks of 128 channels (about 1.6 M parameters)."""
    return APBWEConfig(channels=128, layers=4)


def input_band_bins(input_rate: int, sample_rate: int, n_fft: int) -> int:
    """STFT bins (at the target rate) that lie inside the narrowband input's band, 0 .. input_rate / 2."""
    return min(n_fft // 2 + 1, int(input_rate / 2 / (sample_rate / n_fft)))


def quiet_above(logamp: torch.Tensor, phase: torch.Tensor, bins: int, floor: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The input spectra with every bin from `bins` up set to silence: log-amplitude log(floor), phase 0.
    Above the input's Nyquist frequency the band-limited signal holds only the resampler's stopband leakage
    (|X| ~ 1e-6, below the 1e-4 floor), whose phase is rounding noise: left in, the same audio batched or
    chunked differently gives different outputs (measured on a tiny model: 0.84 in log-amplitude from a
    0.004 input difference). Upstream feeds the leakage in; its weights saw log-amplitudes within 0.01 of
    log(floor) there and uniformly random phases."""
    silent = torch.full_like(logamp[:, bins:], math.log(floor))
    return (torch.cat([logamp[:, :bins], silent], dim=1),
            torch.cat([phase[:, :bins], torch.zeros_like(phase[:, bins:])], dim=1))


def analyse(wave: torch.Tensor, config: APBWEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, samples] -> (log(|X| + floor), angle X), each [B, F, frames]: the network's input, and its losses'
    targets."""
    spectrum = stft(wave.float(), config.stft)
    phase = torch.angle(spectrum)
    # A real-valued bin (DC; every bin of the first frame, which the centred STFT's reflect padding makes
    # symmetric) of negative value has phase +pi or -pi by the sign of an imaginary part that is rounding
    # noise, which depends on the FFT's code path (batch size, chunk): the network takes raw phase, so both
    # become +pi (angles within PHASE_WRAP_TOLERANCE above -pi move up by 2 pi; the losses are blind to 2 pi).
    phase = torch.where(phase < PHASE_WRAP_TOLERANCE - math.pi, phase + 2 * math.pi, phase)
    return torch.log(spectrum.abs() + config.log_floor), phase


class ConvNeXtBlock(nn.Module):
    """ConvNeXt (v1) block on [B, C, T] with layer scale."""

    def __init__(self, dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, dim * 3)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(dim * 3, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))          # [B, T, C]
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.transpose(1, 2)                           # [B, C, T]


def _channels_last_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return norm(x.transpose(1, 2)).transpose(1, 2)


class APBWE(nn.Module):
    """forward(logamp_nb, phase_nb [B, F, T]) -> (logamp_wb, phase_wb) [B, F, T]; `extend` works on waveforms."""

    def __init__(self, config: APBWEConfig | None = None):
        super().__init__()
        self.config = c = config or APBWEConfig()
        k, pad = c.kernel_size, c.kernel_size // 2
        self.conv_pre_mag = nn.Conv1d(c.freq_bins, c.channels, k, padding=pad)
        self.norm_pre_mag = nn.LayerNorm(c.channels, eps=1e-6)
        self.conv_pre_pha = nn.Conv1d(c.freq_bins, c.channels, k, padding=pad)
        self.norm_pre_pha = nn.LayerNorm(c.channels, eps=1e-6)
        self.convnext_mag = nn.ModuleList(ConvNeXtBlock(c.channels, k, 1 / c.layers) for _ in range(c.layers))
        self.convnext_pha = nn.ModuleList(ConvNeXtBlock(c.channels, k, 1 / c.layers) for _ in range(c.layers))
        self.norm_post_mag = nn.LayerNorm(c.channels, eps=1e-6)
        self.norm_post_pha = nn.LayerNorm(c.channels, eps=1e-6)
        self.apply(self._init_weights)
        # created after the truncated-normal init, as upstream: the output heads keep torch's default init
        self.linear_post_mag = nn.Linear(c.channels, c.freq_bins)
        self.linear_post_pha_r = nn.Linear(c.channels, c.freq_bins)
        self.linear_post_pha_i = nn.Linear(c.channels, c.freq_bins)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, logamp: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_mag = _channels_last_norm(self.norm_pre_mag, self.conv_pre_mag(logamp))   # [B, C, T]
        x_pha = _channels_last_norm(self.norm_pre_pha, self.conv_pre_pha(phase))
        for block_mag, block_pha in zip(self.convnext_mag, self.convnext_pha):
            x_mag = x_mag + x_pha          # mutual interaction, in upstream's order
            x_pha = x_pha + x_mag
            x_mag, x_pha = block_mag(x_mag), block_pha(x_pha)
        x_mag = self.norm_post_mag(x_mag.transpose(1, 2))                            # [B, T, C]
        logamp_wb = logamp + self.linear_post_mag(x_mag).transpose(1, 2)             # [B, F, T]
        x_pha = self.norm_post_pha(x_pha.transpose(1, 2))
        real, imag = self.linear_post_pha_r(x_pha), self.linear_post_pha_i(x_pha)
        real = torch.where(real == 0, torch.full_like(real, ATAN2_EPS), real)
        return logamp_wb, torch.atan2(imag, real).transpose(1, 2)

    def analyse(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return analyse(wave, self.config)

    def synthesize(self, logamp: torch.Tensor, phase: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """[B, F, frames] -> [B, samples] in fp32 (the inverse STFT needs it)."""
        return istft(torch.polar(torch.exp(logamp.float()), phase.float()), self.config.stft, length)

    def extend(self, wave: torch.Tensor, input_bins: int | None = None) -> torch.Tensor:
        """Band-limited [B, samples] at the target rate -> wideband [B, samples]; `input_bins`: the bins of the
        input band (silence above it, see `quiet_above`)."""
        logamp, phase = self.analyse(wave)
        if input_bins is not None:
            logamp, phase = quiet_above(logamp, phase, input_bins, self.config.log_floor)
        return self.synthesize(*self(logamp, phase), length=wave.shape[-1])
