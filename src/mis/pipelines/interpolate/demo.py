"""`mis demo` for frame interpolation: the shipped GaraMoSt on the synthetic sample DSA sequence."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """Double the sample sequence's frame rate (written as numbered frames with a GIF preview), and score every
    other frame dropped and interpolated back against linear blending."""
    import time

    from mis.pipelines.interpolate.evaluate import evaluate_sequence
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline
    from mis.pipelines.interpolate.run import SequenceOptions, interpolate_files, plan_sequences
    from mis.registry import resolve_checkpoint

    start = time.perf_counter()
    source = sample / "dsa" / "sequence"
    pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", None), runtime)
    items = plan_sequences([str(source)], out / "dsa")
    summary = interpolate_files(pipeline, items, SequenceOptions(factor=2, preview=True, overwrite=True), runtime, overwrite=True)
    result = summary.results[0]
    scores = evaluate_sequence(pipeline, source, drop=1)
    return [{"pipeline": "interpolate", "input": source.name, "output": result.target, "status": result.status,
             "seconds": round(time.perf_counter() - start, 2),
             "metric": result.error or f"every other frame: PSNR {scores['model_psnr']:.2f} dB vs linear blending "
                                       f"{scores['linear_psnr']:.2f} (synthetic DSA)"}]
