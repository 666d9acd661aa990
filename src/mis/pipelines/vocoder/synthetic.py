"""Seeded synthetic vowel-like speech (sample data and smoke tests; labelled synthetic, not for quality claims).

A glottal pulse train with a slowly moving pitch goes through three formant resonators (two-pole
filters) per vowel; vowels change every 0.4 s, with a little breath noise.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# (F1, F2, F3) in Hz of a few English vowels
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
          "o": (570, 840, 2410)}


def _resonator(signal: np.ndarray, frequency: float, bandwidth: float, rate: int) -> np.ndarray:
    radius = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * frequency / rate
    return lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius ** 2], signal)


def synthetic_speech(seconds: float = 2.0, rate: int = 22050, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28))
    phase = np.cumsum(f0) / rate
    pulses = np.diff(np.floor(phase), prepend=0.0)          # one impulse per pitch period
    source = lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    segment = int(0.4 * rate)
    names = list(VOWELS)
    for start in range(0, n, segment):
        piece = source[start:start + segment]
        formants = VOWELS[names[int(rng.integers(len(names)))]]
        shaped = sum(_resonator(piece, f, 80 + 0.05 * f, rate) for f in formants)
        fade = np.minimum(1, np.minimum(np.arange(len(piece)), np.arange(len(piece))[::-1]) / (0.02 * rate))
        out[start:start + segment] = shaped * fade
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def write_sample_data(out) -> list:
    """sample_data/audio: 2 s of synthetic vowels (seed 7, 22.05 kHz) as a 16-bit WAV, and the log-mel of
    what that WAV holds in the HiFi-GAN/APNet 22.05 kHz convention."""
    from pathlib import Path

    import soundfile as sf
    import torch

    from mis.pipelines.vocoder.mel import MEL_22K
    from mis.transforms.audio import log_mel

    folder = Path(out) / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    speech = synthetic_speech(2.0, MEL_22K.sample_rate, seed=7)
    wav = folder / "synthetic_vowels.wav"
    sf.write(str(wav), speech, MEL_22K.sample_rate, subtype="PCM_16")
    samples, _ = sf.read(str(wav), dtype="float32")  # the mel of what the WAV holds (16-bit)
    mel = folder / "synthetic_vowels.npy"
    np.save(mel, log_mel(torch.from_numpy(samples)[None], MEL_22K)[0].numpy())
    return [wav, mel]
