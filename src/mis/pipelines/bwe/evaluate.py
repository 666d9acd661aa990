"""`mis evaluate bwe`: AP-BWE's metrics for a model and, in the same table, the sinc-upsampling baseline.

As upstream (`cal_metrics.py`), on a wideband reference and a prediction of the same length:
- LSD: log10 power spectra (STFT n_fft 2048, hop 512, Hann, centred), floored at 1e-8; RMS over
  frequency, mean over frames;
- SNR in dB;
- APD-IP / APD-GD / APD-IAF: RMS over frequency (mean over frames) of the anti-wrapped instantaneous phase
  error and of its first differences along frequency (group delay) and time (instantaneous angular frequency).
The narrowband input is made as in training: the reference resampled down to the input rate (torchaudio's
windowed sinc); the sinc baseline is that narrowband resampled back up.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mis.errors import InputError
from mis.transforms.audio import resample

METRIC_FFT, METRIC_HOP = 2048, 512
METRICS = ("lsd", "snr", "apd_ip", "apd_gd", "apd_iaf")


def _spectrum(wave: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(METRIC_FFT, dtype=wave.dtype)
    return torch.stft(wave, METRIC_FFT, METRIC_HOP, window=window, center=True, return_complex=True)


def _wrapped(x: torch.Tensor) -> torch.Tensor:
    return x - torch.round(x / (2 * math.pi)) * 2 * math.pi


def _rms_over_frequency(x: torch.Tensor) -> float:
    return float(x.square().mean(dim=0).sqrt().mean())


def scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """LSD, SNR and the three APDs of a mono prediction against its reference (cropped to the shorter)."""
    n = min(len(predicted), len(reference))
    pred = torch.from_numpy(np.asarray(predicted[:n], dtype=np.float64))
    ref = torch.from_numpy(np.asarray(reference[:n], dtype=np.float64))
    sp, sr = _spectrum(pred), _spectrum(ref)                                          # [F, T]
    log_ratio = torch.log10(sp.abs().square().clamp(min=1e-8)) - torch.log10(sr.abs().square().clamp(min=1e-8))
    noise = torch.linalg.vector_norm(pred - ref).clamp(min=1e-8)
    pp, pr = torch.angle(sp), torch.angle(sr)
    return {"lsd": _rms_over_frequency(log_ratio),
            "snr": float(20 * torch.log10(torch.linalg.vector_norm(ref) / noise)),
            "apd_ip": _rms_over_frequency(_wrapped(pp - pr)),
            "apd_gd": _rms_over_frequency(_wrapped(torch.diff(pp, dim=0) - torch.diff(pr, dim=0))),
            "apd_iaf": _rms_over_frequency(_wrapped(torch.diff(pp, dim=1) - torch.diff(pr, dim=1)))}


def narrowband_pair(wideband: np.ndarray, target_rate: int, input_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(the narrowband signal at the input rate, the sinc baseline at the target rate, cropped or padded to the
    reference's length), as AP-BWE makes its inputs."""
    low = resample(wideband, target_rate, input_rate)
    baseline = resample(low, input_rate, target_rate)[..., :wideband.shape[-1]]
    if baseline.shape[-1] < wideband.shape[-1]:
        baseline = np.pad(baseline, [(0, 0)] * (baseline.ndim - 1) + [(0, wideband.shape[-1] - baseline.shape[-1])])
    return low, baseline


def reference_at(path: Path, target_rate: int) -> np.ndarray:
    """A wideband reference file, mono, at the target rate (files recorded below it cannot serve)."""
    from mis.io.audio import read_audio

    samples, meta = read_audio(path)
    if meta.sample_rate < target_rate:
        raise InputError(path, f"audio is at {meta.sample_rate} Hz, below the target rate {target_rate} Hz: it "
                         "cannot serve as a wideband reference")
    if float(np.abs(samples).max()) == 0.0:
        raise InputError(path, "audio is silent (all samples are zero)")
    return resample(samples, meta.sample_rate, target_rate)


def evaluate_file(pipeline, path: Path) -> dict:
    """One row: the model's and the sinc baseline's metrics on one wideband file."""
    reference = reference_at(path, pipeline.sample_rate)
    low, baseline = narrowband_pair(reference, pipeline.sample_rate, pipeline.input_rate)
    predicted = pipeline(low, pipeline.input_rate, source=str(path)).waveform[0]
    ours, sinc = scores(predicted, reference), scores(baseline, reference)
    return {"file": path.name, "seconds": round(len(reference) / pipeline.sample_rate, 2),
            **{name: ours[name] for name in METRICS}, **{f"sinc_{name}": sinc[name] for name in METRICS}}


def summarise(rows: list[dict]) -> dict:
    """Means over the files of every metric (the model's and the baseline's)."""
    keys = [k for k in rows[0] if k not in ("file", "seconds")] if rows else []
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def evaluate_files(pipeline, paths: list) -> dict:
    """Every file scored (model and sinc baseline); unreadable ones listed under "errors", the rest still scored.
    `paths` may hold InputErrors (arguments that did not resolve)."""
    from mis.errors import MisError

    cases, errors = [], []
    for path in paths:
        try:
            if isinstance(path, InputError):
                raise path
            cases.append(evaluate_file(pipeline, Path(path)))
        except InputError as exc:
            errors.append({"file": exc.path, "error": str(exc)})
    if not cases:
        raise MisError("no file could be scored" + (f" ({errors[0]['error']})" if errors else ""))
    return {"input_sample_rate": pipeline.input_rate, "sample_rate": pipeline.sample_rate, "cases": cases,
            "mean": summarise(cases), "errors": errors}
