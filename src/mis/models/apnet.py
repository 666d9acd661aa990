"""APNet (Ai & Ling, TASLP 2023): mel -> log-amplitude and phase spectra at frame level -> inverse STFT.

Module names follow the upstream `models.py` (ASP_input_conv, ASP_ResNet, ASP_output_conv,
PSP_input_conv, PSP_ResNet, PSP_output_R_conv, PSP_output_I_conv; residual blocks with convs1/convs2)
so that upstream state dicts map by name; weight norm uses torch's parametrization, so upstream
`weight_g`/`weight_v` become `parametrizations.weight.original0/1` (the key map in pipelines/vocoder/spec.py).

- Amplitude spectrum predictor (ASP): Conv1d(n_mels -> C, k7) -> three parallel residual blocks
  (kernels 3/7/11, dilations 1/3/5, HiFi-GAN "ResBlock1") averaged -> LeakyReLU -> Conv1d(C -> F, k7)
  = log-amplitude spectrum (F = n_fft // 2 + 1).
- Phase spectrum predictor (PSP): the same backbone with its own weights -> two parallel Conv1d(C -> F)
  giving R and I -> phase = atan2(I, R) (parallel phase estimation; a small epsilon keeps the gradient
  finite at the origin).
- Waveform: exp(logamp) * e^{i phase} -> inverse STFT (`mis.transforms.audio`, the framing every audio
  pipeline shares; it must equal the mel convention's, which the vocoder pipeline checks on load).

Every layer runs at frame rate: there is no upsampling, which is why APNet is fast on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (re-exported)
from mis.transforms.audio import FramedNetwork, MelConfig, amplitude_from_mel, mel_pseudo_inverse, polar_to_wave

LRELU_SLOPE = 0.1
ATAN2_EPS = 1e-5  # added to R where it is exactly 0, so atan2's gradient stays finite


@dataclass(frozen=True, kw_only=True)
class APNetConfig(FramedNetwork, DictConfig):   # .stft: the ISTFT framing (must equal the mel convention's)
    n_mels: int = 80
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    asp_channels: int = 512
    psp_channels: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    input_conv_kernel_size: int = 7
    output_conv_kernel_size: int = 7
    # Amplitude prior (not in upstream APNet; off for imported weights): the log-amplitude is predicted as a residual
    # on log(pinv(filterbank) @ mel), as AP-BWE predicts a residual on its narrowband input. The filterbank is the
    # mel convention's (sample rate and band edges below), built at construction: no extra weights.
    amplitude_prior: bool = False
    sample_rate: int = 22050
    fmin: float = 0.0
    fmax: float | None = 8000.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "resblock_kernel_sizes", tuple(self.resblock_kernel_sizes))
        object.__setattr__(self, "resblock_dilation_sizes", tuple(tuple(d) for d in self.resblock_dilation_sizes))

    @property
    def mel(self) -> MelConfig:
        """The mel convention the amplitude prior inverts."""
        return MelConfig(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length, n_mels=self.n_mels,
                         sample_rate=self.sample_rate, fmin=self.fmin, fmax=self.fmax)


def apnet_paper_16k() -> APNetConfig:
    """APNet as published: 16 kHz, n_fft 1024, hop 80, win 320, 512 channels (72 M parameters)."""
    return APNetConfig(hop_length=80, win_length=320)


def apnet_22k() -> APNetConfig:
    """The HiFi-GAN 22.05 kHz convention (n_fft 1024, hop 256, win 1024), paper-size network."""
    return APNetConfig()


def apnet_demo_22k() -> APNetConfig:
    """Small demo network at 22.05 kHz (CPU-trainable): 128 channels, kernels 3/7/11."""
    return APNetConfig(asp_channels=128, psp_channels=128)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _conv(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Conv1d:
    conv = nn.Conv1d(cin, cout, kernel, 1, dilation=dilation, padding=_padding(kernel, dilation))
    nn.init.normal_(conv.weight, 0.0, 0.01)  # HiFi-GAN/APNet init
    return weight_norm(conv)


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the frames past each item's length ([B, 1, T] mask), so that a padded batch sees the same zero
    padding at every conv as each item alone (batch == single to float rounding)."""
    return x if mask is None else x * mask.to(x.dtype)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """[B] lengths -> [B, 1, frames] float mask (1 inside each item)."""
    return (torch.arange(frames, device=lengths.device)[None] < lengths[:, None]).float()[:, None]


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: three (LReLU, dilated conv, LReLU, conv) + skip. [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, channels, kernel, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, channels, kernel, 1) for _ in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            hidden = _masked(F.leaky_relu(conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE), mask)
            x = _masked(x + conv2(hidden), mask)
        return x


class APNet(nn.Module):
    """mel [B, n_mels, T] -> (log-amplitude [B, F, T], phase [B, F, T], real, imag, wave [B, (T-1)*hop])."""

    def __init__(self, config: APNetConfig):
        super().__init__()
        c = config
        self.config = config
        self.ASP_input_conv = _conv(c.n_mels, c.asp_channels, c.input_conv_kernel_size)
        self.PSP_input_conv = _conv(c.n_mels, c.psp_channels, c.input_conv_kernel_size)
        self.ASP_ResNet = nn.ModuleList(ResBlock(c.asp_channels, k, d)
                                        for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
        self.PSP_ResNet = nn.ModuleList(ResBlock(c.psp_channels, k, d)
                                        for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
        self.ASP_output_conv = _conv(c.asp_channels, c.freq_bins, c.output_conv_kernel_size)
        self.PSP_output_R_conv = _conv(c.psp_channels, c.freq_bins, c.output_conv_kernel_size)
        self.PSP_output_I_conv = _conv(c.psp_channels, c.freq_bins, c.output_conv_kernel_size)
        if c.amplitude_prior:   # not persistent: rebuilt from the config, so state dicts keep upstream's keys
            with torch.device("cpu"):   # computed for real even when the network is built on the meta device
                basis = mel_pseudo_inverse(c.mel)
            self.register_buffer("prior_basis", basis, persistent=False)

    @staticmethod
    def _branch(x: torch.Tensor, blocks: nn.ModuleList, mask: torch.Tensor | None) -> torch.Tensor:
        x = _masked(x, mask)
        mean = sum(block(x, mask) for block in blocks) / len(blocks)
        return _masked(F.leaky_relu(mean, LRELU_SLOPE), mask)  # type: ignore[arg-type]

    def spectra(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-amplitude, phase), each [B, F, T]. `lengths` [B]: valid frames of each item in a padded
        batch; frames past them are masked at every layer (their outputs are meaningless)."""
        mask = None if lengths is None else frame_mask(lengths, mel.shape[-1])
        mel = _masked(mel, mask)
        logamp = self.ASP_output_conv(self._branch(self.ASP_input_conv(mel), self.ASP_ResNet, mask))
        if self.config.amplitude_prior:
            logamp = logamp.float() + amplitude_from_mel(mel, self.prior_basis)
        hidden = self._branch(self.PSP_input_conv(mel), self.PSP_ResNet, mask)
        real, imag = self.PSP_output_R_conv(hidden), self.PSP_output_I_conv(hidden)
        real = torch.where(real == 0, torch.full_like(real, ATAN2_EPS), real)
        return logamp, torch.atan2(imag, real)

    def synthesize(self, logamp: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real, imag, wave): the complex spectrum and its inverse STFT (centred framing, fp32)."""
        return polar_to_wave(logamp, phase, self.config.stft)

    def forward(self, mel: torch.Tensor):
        logamp, phase = self.spectra(mel)
        real, imag, wave = self.synthesize(logamp, phase)
        return logamp, phase, real, imag, wave

