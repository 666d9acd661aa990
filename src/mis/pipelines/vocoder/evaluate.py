"""Vocoder metrics and the Griffin-Lim baseline, on the same mels.

- LSD: log-spectral distance in dB, mean over frames of sqrt(mean over bins of (10 log10 |X|^2/|Y|^2)^2),
  over all bins and over the mel band only (0..fmax: Griffin-Lim from an 0-8 kHz mel has no energy above
  fmax, which alone makes its full-band LSD large).
- MCD: mel-cepstral distortion in dB over cepstra 1..12 of the natural-log mel (DCT-II, orthonormal),
  (10 / ln 10) sqrt(2 sum (c - c')^2), mean over frames (time-aligned signals, no DTW).
- F0 RMSE in cents on frames voiced in both signals (torchaudio's NCCF pitch detector; a frame is
  voiced when its energy is within 30 dB of the clip's loudest frame).
- PESQ (wide band, at 16 kHz after resampling) and STOI through the `pesq` and `pystoi` packages.
- Griffin-Lim: the mel is mapped back to a linear magnitude with the filterbank's pseudo-inverse
  (clamped at 0), then torchaudio's Griffin-Lim (32 iterations, momentum 0.99).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mis.pipelines.vocoder.mel import MelConfig, mel_filterbank, stft

PESQ_RATE = 16000
GRIFFIN_LIM_ITERATIONS = 32
N_CEPSTRA = 13
VOICING_DB = 30.0


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[:n].astype(np.float32), b[:n].astype(np.float32)


def log_spectral_distance(generated: np.ndarray, reference: np.ndarray, config: MelConfig,
                          max_hz: float | None = None) -> float:
    """LSD in dB over all bins, or over the bins up to `max_hz` (e.g. the mel's fmax)."""
    generated, reference = _aligned(generated, reference)
    spectra = stft(torch.from_numpy(np.stack([generated, reference])), config).abs() ** 2
    if max_hz is not None:
        spectra = spectra[:, : int(max_hz / (config.sample_rate / config.n_fft)) + 1]
    log_ratio = 10 * torch.log10((spectra[0] + 1e-10) / (spectra[1] + 1e-10))     # [F, T]
    return float(torch.sqrt((log_ratio ** 2).mean(dim=0)).mean())


def mel_cepstral_distortion(generated: np.ndarray, reference: np.ndarray, config: MelConfig) -> float:
    import torchaudio

    from mis.pipelines.vocoder.mel import log_mel

    generated, reference = _aligned(generated, reference)
    mels = log_mel(torch.from_numpy(np.stack([generated, reference])), config)        # [2, M, T]
    dct = torchaudio.functional.create_dct(N_CEPSTRA, config.n_mels, norm="ortho")     # [M, C]
    cepstra = torch.einsum("bmt,mc->bct", mels, dct)[:, 1:]
    difference = ((cepstra[0] - cepstra[1]) ** 2).sum(dim=0)
    return float((10.0 / math.log(10.0)) * torch.sqrt(2.0 * difference).mean())


def f0_rmse_cents(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    import torchaudio

    generated, reference = _aligned(generated, reference)
    pitch = torchaudio.functional.detect_pitch_frequency(torch.from_numpy(np.stack([generated, reference])),
                                                          sample_rate, frame_time=0.02, win_length=15,
                                                          freq_low=60, freq_high=500)
    frames = pitch.shape[-1]
    hop = max(len(reference) // frames, 1)
    energy = np.array([np.mean(reference[i * hop:(i + 1) * hop] ** 2) + 1e-12 for i in range(frames)])
    voiced = 10 * np.log10(energy / energy.max()) > -VOICING_DB
    f0 = pitch.numpy()
    voiced &= (f0[0] > 0) & (f0[1] > 0)
    if not voiced.any():
        return None
    cents = 1200 * np.log2(f0[0][voiced] / f0[1][voiced])
    return float(np.sqrt(np.mean(cents ** 2)))


def pesq_wideband(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    import torchaudio
    from pesq import pesq

    generated, reference = _aligned(generated, reference)
    if sample_rate != PESQ_RATE:
        both = torchaudio.functional.resample(torch.from_numpy(np.stack([generated, reference])), sample_rate,
                                              PESQ_RATE).numpy()
        generated, reference = both[0], both[1]
    try:
        return float(pesq(PESQ_RATE, reference, generated, "wb"))
    except Exception:  # the pesq package raises its own error types for silent or too-short signals
        return None


def stoi_score(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi

    generated, reference = _aligned(generated, reference)
    return float(stoi(reference, generated, sample_rate, extended=False))


def griffin_lim(mel: np.ndarray, config: MelConfig, iterations: int = GRIFFIN_LIM_ITERATIONS,
                length: int | None = None) -> np.ndarray:
    import torchaudio

    fbank = mel_filterbank(config).double()                                           # [M, F]
    linear = torch.clamp(torch.linalg.pinv(fbank) @ torch.exp(torch.from_numpy(mel).double()), min=0.0).float()
    window = torch.hann_window(config.win_length)
    wave = torchaudio.functional.griffinlim(linear, window, config.n_fft, config.hop_length, config.win_length,
                                            power=1.0, n_iter=iterations, momentum=0.99, length=length,
                                            rand_init=False)
    return wave.numpy()


def score_pair(generated: np.ndarray, reference: np.ndarray, config: MelConfig) -> dict[str, float | None]:
    rate = config.sample_rate
    return {"lsd_db": log_spectral_distance(generated, reference, config),
            "lsd_mel_band_db": log_spectral_distance(generated, reference, config, config.fmax),
            "mcd_db": mel_cepstral_distortion(generated, reference, config),
            "f0_rmse_cents": f0_rmse_cents(generated, reference, rate),
            "pesq_wb": pesq_wideband(generated, reference, rate),
            "stoi": stoi_score(generated, reference, rate)}


METRICS = ("lsd_db", "lsd_mel_band_db", "mcd_db", "f0_rmse_cents", "pesq_wb", "stoi")


def evaluate_vocoder(pipeline, paths: list, seconds: float | None = None) -> dict:
    """Copy-synthesis of each file with the vocoder and with Griffin-Lim on the same mel; per-file and mean scores."""
    import torchaudio

    from mis.io.audio import read_audio
    from mis.pipelines.vocoder.mel import log_mel

    config = pipeline.mel_config
    fbank = mel_filterbank(config)
    cases = []
    for path in paths:
        samples, meta = read_audio(path)
        if meta.sample_rate != config.sample_rate:
            samples = torchaudio.functional.resample(torch.from_numpy(samples), meta.sample_rate,
                                                     config.sample_rate).numpy()
        if seconds:
            samples = samples[: int(seconds * config.sample_rate)]
        mel = log_mel(torch.from_numpy(samples)[None], config, fbank)[0].numpy()
        vocoded = pipeline(mel)
        baseline = griffin_lim(mel, config, length=len(samples))
        cases.append({"file": str(path), "seconds": round(len(samples) / config.sample_rate, 2),
                      "vocoder": score_pair(vocoded, samples, config),
                      "griffin_lim": score_pair(baseline, samples, config)})
    return {"cases": cases, "mean": {system: _means([c[system] for c in cases]) for system in ("vocoder", "griffin_lim")},
            "griffin_lim_iterations": GRIFFIN_LIM_ITERATIONS}


def _means(scores: list[dict]) -> dict:
    out = {}
    for name in METRICS:
        values = [s[name] for s in scores if s[name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out
