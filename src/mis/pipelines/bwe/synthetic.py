"""Sample data for `mis bwe` and `mis demo`: seeded synthetic speech at 48 kHz and its 16 kHz narrowband copy
(labelled synthetic, not for quality claims)."""
from __future__ import annotations

from pathlib import Path


def write_sample_data(out) -> list[Path]:
    """sample_data/audio: 2 s of synthetic vowels (seed 11) at 48 kHz as a float WAV (the wideband reference)
    and the same resampled to 16 kHz as a 16-bit WAV (the narrowband input)."""
    import soundfile as sf

    from mis.pipelines.vocoder.synthetic import synthetic_speech
    from mis.transforms.audio import resample

    folder = Path(out) / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    wideband = synthetic_speech(2.0, 48000, seed=11)
    reference, narrow = folder / "synthetic_vowels_48k.wav", folder / "synthetic_vowels_16k.wav"
    sf.write(str(reference), wideband, 48000, subtype="FLOAT")
    sf.write(str(narrow), resample(wideband, 48000, 16000), 16000, subtype="PCM_16")
    return [reference, narrow]
