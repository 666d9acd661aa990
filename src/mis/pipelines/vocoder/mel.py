"""The mel convention of a vocoder checkpoint, and the features computed in exactly that convention.

APNet/HiFi-GAN mels: magnitude sqrt(re^2 + im^2 + 1e-9) of a centred (reflect-padded) STFT with a
Hann window, a Slaney-scale Slaney-normalised filterbank (librosa's default, built here with
torchaudio), natural log with a floor: log(max(mel, 1e-5)). The convention is stored in the
checkpoint card and checked against every mel given to `mis vocode`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio

from mis.models.common import DictConfig

MAGNITUDE_EPS = 1e-9


@dataclass(frozen=True, kw_only=True)
class MelConfig(DictConfig):
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    mel_scale: str = "slaney"
    norm: str | None = "slaney"
    log_floor: float = 1e-5
    center: bool = True

    @property
    def log_min(self) -> float:
        """The smallest value a mel in this convention can hold."""
        return math.log(self.log_floor)

    @property
    def min_samples(self) -> int:
        """The shortest signal the centred (reflect-padded) STFT accepts."""
        return self.n_fft // 2 + 1

    def frames(self, samples: int) -> int:
        return samples // self.hop_length + 1 if self.center else (samples - self.n_fft) // self.hop_length + 1


MEL_16K = MelConfig(sample_rate=16000, n_fft=1024, hop_length=80, win_length=320, fmax=8000.0)  # APNet paper
MEL_22K = MelConfig()  # HiFi-GAN / APNet2 convention at 22.05 kHz


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1], numerically librosa.filters.mel(htk=False, norm='slaney')."""
    fbank = torchaudio.functional.melscale_fbanks(
        n_freqs=config.n_fft // 2 + 1, f_min=config.fmin, f_max=config.fmax or config.sample_rate / 2,
        n_mels=config.n_mels, sample_rate=config.sample_rate, norm=config.norm, mel_scale=config.mel_scale)
    return fbank.T.contiguous()


def stft(wave: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """[B, samples] -> complex [B, n_fft // 2 + 1, frames]."""
    window = torch.hann_window(config.win_length, device=wave.device, dtype=wave.dtype)
    return torch.stft(wave, config.n_fft, config.hop_length, config.win_length, window, center=config.center,
                      pad_mode="reflect", return_complex=True)


def istft(spectrum: torch.Tensor, config: MelConfig, length: int | None = None) -> torch.Tensor:
    window = torch.hann_window(config.win_length, device=spectrum.device, dtype=spectrum.real.dtype)
    return torch.istft(spectrum, config.n_fft, config.hop_length, config.win_length, window, center=config.center,
                       length=length)


def magnitude(spectrum: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(spectrum.real ** 2 + spectrum.imag ** 2 + MAGNITUDE_EPS)


def log_mel(wave: torch.Tensor, config: MelConfig, fbank: torch.Tensor | None = None) -> torch.Tensor:
    """[B, samples] -> natural-log mel [B, n_mels, frames]."""
    fbank = mel_filterbank(config).to(wave.device, wave.dtype) if fbank is None else fbank
    mel = torch.matmul(fbank, magnitude(stft(wave, config)))
    return torch.log(torch.clamp(mel, min=config.log_floor))


def read_audio_at(path, sample_rate: int):
    """(mono float32 samples at `sample_rate`, the file's AudioMeta): other rates are resampled with torchaudio."""
    from mis.io.audio import read_audio

    samples, meta = read_audio(path)
    if meta.sample_rate != sample_rate:
        samples = torchaudio.functional.resample(torch.from_numpy(samples), meta.sample_rate, sample_rate).numpy()
    return samples.astype("float32", copy=False), meta
