"""`mis demo` for bandwidth extension: the shipped 16 -> 48 kHz AP-BWE on the sample narrowband WAV."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """The shipped 16 -> 48 kHz demo on the 16 kHz sample, with its LSD and sinc upsampling's against the 48 kHz
    synthetic reference."""
    import time

    import soundfile as sf

    from mis.io.atomic import atomic_output
    from mis.io.audio import read_audio
    from mis.pipelines.bwe.evaluate import scores
    from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
    from mis.registry import resolve_checkpoint
    from mis.transforms.audio import resample

    start = time.perf_counter()
    source = sample / "audio" / "synthetic_vowels_16k.wav"
    pipeline = BandwidthExtensionPipeline.from_checkpoint(resolve_checkpoint("bwe", None), runtime)
    samples, meta = read_audio(source)
    wave = pipeline(samples, meta.sample_rate, source=str(source)).waveform[0]
    target = out / "audio" / "synthetic_vowels_bwe_48k.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        sf.write(str(tmp), wave, pipeline.sample_rate, subtype="FLOAT", format="WAV")
    reference, _ = read_audio(sample / "audio" / "synthetic_vowels_48k.wav")
    ours = scores(wave, reference)["lsd"]
    sinc = scores(resample(samples, meta.sample_rate, pipeline.sample_rate), reference)["lsd"]
    return [{"pipeline": "bwe", "input": source.name, "output": str(target), "status": "done",
             "seconds": round(time.perf_counter() - start, 2),
             "metric": f"LSD {ours:.2f} vs sinc {sinc:.2f} (synthetic speech)"}]
