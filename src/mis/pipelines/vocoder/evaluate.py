"""Vocoder metrics and the Griffin-Lim baseline, on the same mels.

- LSD: log-spectral distance in dB, mean over frames of sqrt(mean over bins of (10 log10 |X|^2/|Y|^2)^2),
  over all bins and over the mel band only (0..fmax: Griffin-Lim from an 0-8 kHz mel has no energy above
  fmax, which alone makes its full-band LSD large).
- MCD: mel-cepstral distortion in dB over cepstra 1..12 of the natural-log mel (DCT-II, orthonormal),
  (10 / ln 10) sqrt(2 sum (c - c')^2), mean over frames (time-aligned signals, no DTW).
- F0 RMSE in cents on frames voiced in both signals, tracked by pYIN (librosa's, 60-500 Hz, the STFT's frames), and
  the F0 frame error on the same tracks; the F0 RMSE also split into frames within 3 of a voicing change of the
  reference (onsets and offsets: the tracker's window reaches across the change) and the rest
  (`f0_rmse_boundary_cents`, `f0_rmse_interior_cents`, in the JSON); raw YIN's F0 RMSE beside it in the JSON
  (`f0_rmse_yin_cents`; YIN threshold 0.15, a test checks it against librosa.yin), which octave errors of YIN in the reference dominate.
- PESQ (wide band, at 16 kHz after resampling) and STOI through the `pesq` and `pystoi` packages.
- Griffin-Lim: the mel is mapped back to a linear magnitude with the filterbank's pseudo-inverse
  (clamped at 0), then torchaudio's Griffin-Lim (32 iterations, momentum 0.99).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mis.errors import InputError, MisError
from mis.transforms.audio import MelConfig, log_mel, mel_filterbank, read_audio_at, stft

PESQ_RATE = 16000
GRIFFIN_LIM_ITERATIONS = 32
N_CEPSTRA = 13


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

    generated, reference = _aligned(generated, reference)
    mels = log_mel(torch.from_numpy(np.stack([generated, reference])), config)        # [2, M, T]
    dct = torchaudio.functional.create_dct(N_CEPSTRA, config.n_mels, norm="ortho")     # [M, C]
    cepstra = torch.einsum("bmt,mc->bct", mels, dct)[:, 1:]
    difference = ((cepstra[0] - cepstra[1]) ** 2).sum(dim=0)
    return float((10.0 / math.log(10.0)) * torch.sqrt(2.0 * difference).mean())


YIN_THRESHOLD = 0.15
F0_RANGE_HZ = (60.0, 500.0)


def yin_f0(samples: np.ndarray, sample_rate: int, frame: int = 1024, hop: int = 256,
           fmin: float = F0_RANGE_HZ[0], fmax: float = F0_RANGE_HZ[1],
           threshold: float = YIN_THRESHOLD) -> np.ndarray:
    """YIN (de Cheveigne & Kawahara 2002): F0 in Hz per frame, 0 where unvoiced.

    Difference function via FFT autocorrelation, cumulative-mean normalisation, the first dip below
    `threshold` (its local minimum), parabolic interpolation of the lag.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < frame:
        samples = np.pad(samples, (0, frame - len(samples)))
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame)[::hop]   # [T, frame]
    max_lag, min_lag = min(int(sample_rate / fmin), frame // 2), max(int(sample_rate / fmax), 2)
    width = frame - max_lag
    spectrum = np.fft.rfft(frames, 2 * frame)
    autocorr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(frames[:, :width], 2 * frame)))[:, :max_lag + 1]
    energy = np.cumsum(frames ** 2, axis=1)
    window_energy = np.stack([energy[:, lag + width - 1] - (energy[:, lag - 1] if lag else 0)
                              for lag in range(max_lag + 1)], axis=1)
    difference = energy[:, width - 1:width] + window_energy - 2 * autocorr        # d(lag), [T, L]
    lags = np.arange(1, max_lag + 1)
    cmnd = np.ones_like(difference)
    cmnd[:, 1:] = difference[:, 1:] * lags / np.maximum(np.cumsum(difference[:, 1:], axis=1), 1e-12)
    f0 = np.zeros(len(frames))
    for t, row in enumerate(cmnd):
        below = np.flatnonzero(row[min_lag:] < threshold)
        if not len(below):
            continue
        lag = min_lag + below[0]
        while lag + 1 <= max_lag and row[lag + 1] < row[lag]:
            lag += 1
        if 0 < lag < max_lag:
            a, b, c = row[lag - 1], row[lag], row[lag + 1]
            shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
            f0[t] = sample_rate / (lag + shift)
    return f0


def pyin_f0(samples: np.ndarray, sample_rate: int, frame: int = 1024, hop: int = 256,
            fmin: float = F0_RANGE_HZ[0], fmax: float = F0_RANGE_HZ[1]) -> np.ndarray:
    """pYIN (Mauch & Dixon 2014, librosa's): F0 in Hz per frame, 0 where unvoiced; same frames as `yin_f0`.

    YIN's pitch candidates and voicing tracked through the utterance by an HMM (Viterbi). Raw YIN decides each frame
    alone and jumps an octave where a harmonic is as strong as the fundamental, in the reference as readily as in the
    vocoded signal: on LJ001-0019 it reads 452 Hz for one frame of the *reference* between frames at 225 and 228 Hz,
    and that one frame set the F0 RMSE of the vocoder and of Griffin-Lim alike (84 cents each; pYIN: 225 Hz there).
    """
    import librosa

    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < frame:
        samples = np.pad(samples, (0, frame - len(samples)))
    f0, voiced, _ = librosa.pyin(samples, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame, hop_length=hop,
                                 center=False)
    return np.where(voiced, np.nan_to_num(f0), 0.0)


def _rmse_cents(f0_generated: np.ndarray, f0_reference: np.ndarray) -> float | None:
    """RMSE in cents over frames voiced in both tracks (None when there are none)."""
    voiced = (f0_generated > 0) & (f0_reference > 0)
    if not voiced.any():
        return None
    cents = 1200 * np.log2(f0_generated[voiced] / f0_reference[voiced])
    return float(np.sqrt(np.mean(cents ** 2)))


# Frames either side of a voicing change that count as its boundary: pYIN's 1024-sample window spans 4 hops, so
# the 3 frames on each side of a change see both sides of it (35 ms at 22.05 kHz).
VOICING_MARGIN = 3


def near_voicing_changes(f0_reference: np.ndarray, margin: int = VOICING_MARGIN) -> np.ndarray:
    """Frames within `margin` frames of a change in the reference's voicing decision (boolean per frame)."""
    voiced = f0_reference > 0
    near = np.zeros(len(voiced), dtype=bool)
    for change in np.flatnonzero(voiced[1:] != voiced[:-1]):   # between frames `change` and `change + 1`
        near[max(0, change + 1 - margin):change + 1 + margin] = True
    return near


def _rmse_cents_split(f0_generated: np.ndarray, f0_reference: np.ndarray) -> dict[str, float | None]:
    """F0 RMSE on the frames near a voicing change of the reference (onsets and offsets, where the pitch is least
    defined and a few frames decide the RMSE) and on the others (the held pitch)."""
    near = near_voicing_changes(f0_reference)
    return {"f0_rmse_boundary_cents": _rmse_cents(np.where(near, f0_generated, 0), f0_reference),
            "f0_rmse_interior_cents": _rmse_cents(np.where(near, 0, f0_generated), f0_reference)}


def f0_rmse_cents(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    """RMSE in cents over frames that pYIN finds voiced in both signals (None when there are none)."""
    generated, reference = _aligned(generated, reference)
    return _rmse_cents(pyin_f0(generated, sample_rate), pyin_f0(reference, sample_rate))


def f0_rmse_yin_cents(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    """The same with raw YIN (what earlier reports used; see `pyin_f0` for why it is no longer the F0 metric)."""
    generated, reference = _aligned(generated, reference)
    return _rmse_cents(yin_f0(generated, sample_rate), yin_f0(reference, sample_rate))


GROSS_PITCH_ERROR = 0.2   # a voiced frame whose F0 is off by more than 20 % (about 316 cents) is a gross error


def _frame_error(f0_generated: np.ndarray, f0_reference: np.ndarray) -> float | None:
    if not len(f0_reference):
        return None
    voicing = (f0_generated > 0) != (f0_reference > 0)
    both = (f0_generated > 0) & (f0_reference > 0)
    gross = np.zeros_like(both)
    gross[both] = np.abs(f0_generated[both] / f0_reference[both] - 1) > GROSS_PITCH_ERROR
    return float(100 * (voicing | gross).mean())


def f0_frame_error(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    """F0 frame error (Chu & Alwan 2009) in %, pYIN tracks: frames whose voicing decision differs from the
    reference's, plus frames voiced in both with a gross pitch error (> 20 %), over all frames. F0 RMSE over frames
    voiced in both is dominated by the few octave jumps a clip may have; FFE counts them as the few frames they are,
    and counts the voicing a vocoder loses or invents, which RMSE does not see."""
    generated, reference = _aligned(generated, reference)
    return _frame_error(pyin_f0(generated, sample_rate), pyin_f0(reference, sample_rate))


def pesq_wideband(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    import torchaudio
    from pesq import pesq

    generated, reference = _aligned(generated, reference)
    if sample_rate != PESQ_RATE:
        both = torchaudio.functional.resample(torch.from_numpy(np.stack([generated, reference])), sample_rate,
                                              PESQ_RATE).float().numpy()   # float32 under autocast too
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
    aligned, truth = _aligned(generated, reference)
    f0, f0_reference = pyin_f0(aligned, rate), pyin_f0(truth, rate)   # pYIN is the slow part: track each once
    return {"lsd_db": log_spectral_distance(generated, reference, config),
            "lsd_mel_band_db": log_spectral_distance(generated, reference, config, config.fmax),
            "mcd_db": mel_cepstral_distortion(generated, reference, config),
            "f0_rmse_cents": _rmse_cents(f0, f0_reference),
            "f0_rmse_yin_cents": _rmse_cents(yin_f0(aligned, rate), yin_f0(truth, rate)),
            **_rmse_cents_split(f0, f0_reference),
            "f0_frame_error_pct": _frame_error(f0, f0_reference),
            "pesq_wb": pesq_wideband(generated, reference, rate),
            "stoi": stoi_score(generated, reference, rate)}


METRICS = ("lsd_db", "lsd_mel_band_db", "mcd_db", "f0_rmse_cents", "f0_rmse_interior_cents", "f0_rmse_boundary_cents",
           "f0_rmse_yin_cents", "f0_frame_error_pct", "pesq_wb", "stoi")


def evaluate_vocoder(pipeline, paths: list, seconds: float | None = None, diagnostics: bool = True) -> dict:
    """Copy-synthesis of each file with the vocoder and with Griffin-Lim on the same mel; per-file and mean scores.

    With `diagnostics`, also the parts of the vocoder against the simplest baselines, on the same mel: the pure
    network (no phase refinement), the network's amplitude refined by 32 Griffin-Lim iterations from its phase,
    the mel's pseudo-inverse amplitude with the network's phase, and the true amplitude with the network's phase
    (which part, amplitude or phase, limits the quality).

    `paths` may hold InputErrors (arguments that did not resolve); those and unreadable files are listed
    under "errors" and the other files are still scored.
    """
    cases, errors = [], []
    fbank = mel_filterbank(pipeline.mel_config)
    for path in paths:
        try:
            if isinstance(path, InputError):
                raise path
            cases.append(_score_file(pipeline, path, seconds, fbank, diagnostics))
        except InputError as exc:
            errors.append({"file": exc.path, "error": str(exc)})
    if not cases:
        raise MisError("no file could be scored" + (f" ({errors[0]['error']})" if errors else ""))
    systems = [name for name in cases[0] if isinstance(cases[0][name], dict)]
    return {"cases": cases, "mean": {system: _means([c[system] for c in cases]) for system in systems},
            "griffin_lim_iterations": GRIFFIN_LIM_ITERATIONS, "phase_refine": pipeline.phase_refine,
            "errors": errors}


def _score_file(pipeline, path, seconds: float | None, fbank: torch.Tensor, diagnostics: bool) -> dict:
    config = pipeline.mel_config
    samples, _ = read_audio_at(path, config.sample_rate)
    if seconds:
        samples = samples[: int(seconds * config.sample_rate)]
    if len(samples) < config.min_samples:
        raise InputError(path, f"audio too short ({len(samples)} samples at {config.sample_rate} Hz) for "
                         f"n_fft {config.n_fft}")
    mel = log_mel(torch.from_numpy(samples)[None], config, fbank)[0].numpy()
    systems = {"vocoder": pipeline(mel).waveform, "griffin_lim": griffin_lim(mel, config, length=len(samples))}
    if diagnostics:
        systems.update(_parts(pipeline, mel, samples))
    return {"file": str(path), "seconds": round(len(samples) / config.sample_rate, 2),
            **{name: score_pair(wave, samples, config) for name, wave in systems.items()}}


@torch.inference_mode()
def _parts(pipeline, mel: np.ndarray, samples: np.ndarray) -> dict[str, np.ndarray]:
    """The vocoder taken apart, each part against what needs no training (see `evaluate_vocoder`)."""
    from mis.transforms.audio import AMPLITUDE_EPS, amplitude_from_mel, griffin_lim as refine, mel_pseudo_inverse

    config = pipeline.mel_config
    logamp, phase = (t[None] for t in pipeline.spectra(mel))
    stft_config = pipeline.model.config.stft
    frames = logamp.shape[-1]
    true_logamp = torch.log(stft(torch.from_numpy(samples)[None], config).abs()[..., :frames] + AMPLITUDE_EPS)
    pinv_logamp = amplitude_from_mel(torch.from_numpy(mel)[None], mel_pseudo_inverse(config))

    def synthesise(amplitude: torch.Tensor, angle: torch.Tensor) -> np.ndarray:
        return pipeline.model.synthesize(amplitude, angle)[2][0].cpu().numpy()

    refined = refine(torch.exp(logamp), phase, stft_config, GRIFFIN_LIM_ITERATIONS)
    return {"network (pure)": synthesise(logamp, phase),
            f"network + {GRIFFIN_LIM_ITERATIONS} GL from its phase": synthesise(logamp, refined),
            "pinv amplitude + network phase": synthesise(pinv_logamp, phase),
            "true amplitude + network phase": synthesise(true_logamp, phase)}


def _means(scores: list[dict]) -> dict:
    out = {}
    for name in METRICS:
        values = [s[name] for s in scores if s[name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out
