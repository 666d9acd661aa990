"""STFT framing, mel features and spectral/phase losses: one definition for every audio pipeline.

The APNet vocoder, AP-BWE and the evaluation metrics all frame audio the same way: a centred
(reflect-padded) STFT with a Hann window of `win_length` inside `n_fft`, hop `hop_length`. Networks
that end in an inverse STFT (APNet, AP-BWE) call `istft` from here, so the framing of a network and of
the features it is trained on cannot drift apart.

Mels follow the APNet/HiFi-GAN convention: magnitude sqrt(re^2 + im^2 + 1e-9), a Slaney-scale,
Slaney-normalised filterbank (librosa's default, built with torchaudio), natural log with a floor,
log(max(mel, 1e-5)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from mis.models.common import DictConfig

MAGNITUDE_EPS = 1e-9
AMPLITUDE_EPS = 1e-5   # log-amplitude targets: log(|X| + 1e-5), as APNet and AP-BWE


@dataclass(frozen=True, kw_only=True)
class STFTConfig(DictConfig):
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    center: bool = True

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """The shortest signal the centred (reflect-padded) STFT accepts."""
        return self.n_fft // 2 + 1

    def frames(self, samples: int) -> int:
        return samples // self.hop_length + 1 if self.center else (samples - self.n_fft) // self.hop_length + 1

    def framing(self) -> "STFTConfig":
        """Just the framing (a MelConfig's STFT part)."""
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          center=self.center)


@dataclass(frozen=True, kw_only=True)
class MelConfig(STFTConfig):
    sample_rate: int = 22050
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    mel_scale: str = "slaney"
    norm: str | None = "slaney"
    log_floor: float = 1e-5

    @property
    def log_min(self) -> float:
        """The smallest value a mel in this convention can hold."""
        return math.log(self.log_floor)


class FramedNetwork:
    """For network configs with n_fft / hop_length / win_length fields: the framing of their inverse STFT."""

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1  # type: ignore[attr-defined]

    @property
    def stft(self) -> STFTConfig:
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length,  # type: ignore[attr-defined]
                          win_length=self.win_length)  # type: ignore[attr-defined]


def framing_mismatches(a: STFTConfig, b: STFTConfig) -> list[str]:
    """Where two framings differ (a network's ISTFT and its mel convention must frame audio alike)."""
    names = ("n_fft", "hop_length", "win_length")
    return [f"{n} {getattr(a, n)} vs {getattr(b, n)}" for n in names if getattr(a, n) != getattr(b, n)]


def hann(config: STFTConfig, like: torch.Tensor) -> torch.Tensor:
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return torch.hann_window(config.win_length, device=like.device, dtype=dtype)


def stft(wave: torch.Tensor, config: STFTConfig) -> torch.Tensor:
    """[B, samples] -> complex [B, n_fft // 2 + 1, frames]."""
    return torch.stft(wave, config.n_fft, config.hop_length, config.win_length, hann(config, wave),
                      center=config.center, pad_mode="reflect", return_complex=True)


def istft(spectrum: torch.Tensor, config: STFTConfig, length: int | None = None) -> torch.Tensor:
    """complex [B, F, frames] -> [B, samples]; (frames - 1) * hop samples unless `length` is given."""
    return torch.istft(spectrum, config.n_fft, config.hop_length, config.win_length, hann(config, spectrum),
                       center=config.center, length=length)


def magnitude(spectrum: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(spectrum.real ** 2 + spectrum.imag ** 2 + MAGNITUDE_EPS)


def amplitude_phase(wave: torch.Tensor, config: STFTConfig) -> dict[str, torch.Tensor]:
    """Log-amplitude log(|X| + 1e-5), phase, real and imaginary spectra of [B, samples] (each [B, F, T])."""
    spectrum = stft(wave, config)
    return {"logamp": torch.log(spectrum.abs() + AMPLITUDE_EPS), "phase": torch.angle(spectrum),
            "real": spectrum.real, "imag": spectrum.imag}


def polar_to_wave(logamp: torch.Tensor, phase: torch.Tensor, config: STFTConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real, imag, wave) from log-amplitude and phase [B, F, T]; always computed in fp32 (the ISTFT needs it)."""
    amplitude = torch.exp(logamp.float())
    real, imag = amplitude * torch.cos(phase.float()), amplitude * torch.sin(phase.float())
    return real, imag, istft(torch.complex(real, imag), config)


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1], numerically librosa.filters.mel(htk=False, norm='slaney')."""
    fbank = torchaudio.functional.melscale_fbanks(
        n_freqs=config.n_fft // 2 + 1, f_min=config.fmin, f_max=config.fmax or config.sample_rate / 2,
        n_mels=config.n_mels, sample_rate=config.sample_rate, norm=config.norm, mel_scale=config.mel_scale)
    return fbank.T.contiguous()


def mel_pseudo_inverse(config: MelConfig) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels]: the Moore-Penrose pseudo-inverse of the filterbank (double precision, then float).
    Below about 1 kHz the Slaney filters are narrower than a voice's harmonic spacing, so pinv(fbank) @ mel keeps
    the pitch harmonics there: an amplitude estimate that needs no training."""
    return torch.linalg.pinv(mel_filterbank(config).double()).float()


def amplitude_from_mel(log_mel_frames: torch.Tensor, basis: torch.Tensor, floor: float = AMPLITUDE_EPS) -> torch.Tensor:
    """log(max(pinv @ exp(mel), floor)): [B, n_mels, T] natural-log mel -> [B, F, T] log-amplitude, in fp32."""
    linear = torch.matmul(basis.to(log_mel_frames.device, torch.float32), torch.exp(log_mel_frames.float()))
    return torch.log(torch.clamp(linear, min=floor))


def griffin_lim(amplitude: torch.Tensor, phase: torch.Tensor, config: STFTConfig, iterations: int,
                momentum: float = 0.99) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013, torchaudio's update) from a given start phase: [B, F, T] amplitude
    and phase -> the refined phase. Each iteration couples a frame with its neighbours within one window, so the
    result at a frame depends on +-(n_fft / hop - 1) x iterations frames around it (what chunked streaming must
    give as context)."""
    angles = torch.polar(torch.ones_like(amplitude), phase)
    previous = torch.zeros_like(angles)
    frames = amplitude.shape[-1]
    for _ in range(iterations):
        rebuilt = stft(istft(amplitude * angles, config), config)[..., :frames]
        angles = rebuilt - previous * (momentum / (1 + momentum))
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.angle(angles)


def log_mel(wave: torch.Tensor, config: MelConfig, fbank: torch.Tensor | None = None) -> torch.Tensor:
    """[B, samples] -> natural-log mel [B, n_mels, frames]."""
    fbank = mel_filterbank(config).to(wave.device, wave.dtype) if fbank is None else fbank
    mel = torch.matmul(fbank, magnitude(stft(wave, config)))
    return torch.log(torch.clamp(mel, min=config.log_floor))


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """float32 samples (last axis time) at another rate, with torchaudio's windowed-sinc resampler."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
                                         source_rate, target_rate)
    return out.float().numpy()   # float32 also under an autocast context (training's validation)


class ArraySource:
    """Samples [channels, n] in memory, read in windows (what the streaming pipelines consume)."""

    def __init__(self, samples: np.ndarray):
        self.samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
        self.channels, self.length = self.samples.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.samples[:, start:stop]


class ResampledSource:
    """Another source's samples at `target_rate`, read in windows: each window is resampled from an input block
    wide enough for the sinc kernel and aligned to the rate ratio's period, so it equals the same samples of
    the whole signal resampled at once (torchaudio, to float rounding) while memory stays flat."""

    LOWPASS_WIDTH, ROLLOFF = 6, 0.99   # torchaudio's defaults

    def __init__(self, inner, source_rate: int, target_rate: int):
        self.inner, self.source_rate, self.target_rate = inner, int(source_rate), int(target_rate)
        g = math.gcd(self.source_rate, self.target_rate)
        self.down, self.up = self.source_rate // g, self.target_rate // g
        kernel = math.ceil(self.LOWPASS_WIDTH * self.down / (self.ROLLOFF * min(self.down, self.up)))
        self.margin = math.ceil((kernel + self.down) / self.down) * self.down   # input samples, whole periods
        self.channels = inner.channels
        self.length = math.ceil(inner.length * self.up / self.down)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.up == self.down:
            return self.inner.read(start, stop)
        first, last = start // self.up, -(-stop // self.up)                 # whole periods covering the window
        lo = max(0, first * self.down - self.margin)
        hi = min(self.inner.length, last * self.down + self.margin)
        block = torch.from_numpy(np.ascontiguousarray(self.inner.read(lo, hi), dtype=np.float32))
        out = torchaudio.functional.resample(block, self.source_rate, self.target_rate).float().numpy()
        offset = lo // self.down * self.up                                   # the block's first output sample
        return out[:, start - offset:stop - offset]


def read_audio_at(path: str | Path, sample_rate: int):
    """(mono float32 samples at `sample_rate`, the file's AudioMeta): other rates are resampled."""
    from mis.io.audio import read_audio

    samples, meta = read_audio(path)
    return resample(samples, meta.sample_rate, sample_rate), meta


# ---- losses on spectra (APNet and AP-BWE) ------------------------------------------------------------


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """mean(-cos x): a phase error counts the same modulo whole turns (a smooth form of APNet's
    |x - 2 pi round(x / 2 pi)|; 0 for random phase, -1 for a perfect one)."""
    return torch.mean(-torch.cos(x))


def _difference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x_{i+1} - x_i, with -x_last for the last element (upstream's -1/+1 band matrix)."""
    nxt = torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), torch.zeros_like(x.narrow(dim, 0, 1))], dim=dim)
    return nxt - x


def phase_losses(phase: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, F, T] phases -> instantaneous phase (IP), group delay (GD, along frequency) and phase time
    difference / instantaneous angular frequency (PTD = IAF, along time) anti-wrapping losses."""
    return {"ip": anti_wrapping(phase - target),
            "gd": anti_wrapping(_difference(phase, 1) - _difference(target, 1)),
            "ptd": anti_wrapping(_difference(phase, 2) - _difference(target, 2))}


def linear_anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """mean |x - 2 pi round(x / 2 pi)|: AP-BWE's anti-wrapping function (0 for a perfect phase, pi / 2 for random)."""
    return torch.mean(torch.abs(x - torch.round(x / (2 * math.pi)) * (2 * math.pi)))


def bwe_phase_losses(phase: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """AP-BWE's IP, GD (first difference along frequency) and IAF (along time) losses on [B, F, T] phases,
    with the linear anti-wrapping function and no boundary term."""
    return {"ip": linear_anti_wrapping(phase - target),
            "gd": linear_anti_wrapping(torch.diff(phase, dim=1) - torch.diff(target, dim=1)),
            "iaf": linear_anti_wrapping(torch.diff(phase, dim=2) - torch.diff(target, dim=2))}


def consistency_loss(real: torch.Tensor, imag: torch.Tensor, config: STFTConfig) -> torch.Tensor:
    """Mean squared distance between a predicted spectrum and the STFT of its own inverse STFT."""
    spectrum = torch.complex(real, imag)
    again = stft(istft(spectrum, config), config)
    frames = min(again.shape[-1], spectrum.shape[-1])
    return torch.mean((again[..., :frames] - spectrum[..., :frames]).abs() ** 2)
