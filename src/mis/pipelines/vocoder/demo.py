"""`mis demo` for the vocoder: the shipped APNet on the sample mel, with its LSD against the sample WAV."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """The shipped APNet on the sample mel (synthetic vowels), with its LSD against the sample WAV."""
    import time

    from mis.io.audio import read_audio, read_mel, write_wav
    from mis.pipelines.vocoder.evaluate import log_spectral_distance
    from mis.pipelines.vocoder.pipeline import VocoderPipeline
    from mis.registry import resolve_checkpoint

    start = time.perf_counter()
    source = sample / "audio" / "synthetic_vowels.npy"
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None), runtime)
    wave = pipeline(pipeline.check_inputs(read_mel(source), str(source))).waveform
    target = out / "audio" / "synthetic_vowels.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, wave, pipeline.sample_rate)
    reference, _ = read_audio(sample / "audio" / "synthetic_vowels.wav")
    lsd = log_spectral_distance(wave, reference, pipeline.mel_config)
    return [{"pipeline": "vocode", "input": source.name, "output": str(target), "status": "done",
             "seconds": round(time.perf_counter() - start, 2), "metric": f"LSD {lsd:.2f} dB (synthetic speech)"}]
