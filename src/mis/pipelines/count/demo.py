"""`mis demo` for crowd counting: the shipped M-SFANet on the synthetic sample crowd scene."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """Count the sample scene (density map and overlay written) and compare with its known heads."""
    import time

    from mis.io.points import read_points
    from mis.pipelines.count.pipeline import CountPipeline
    from mis.pipelines.count.run import CountOptions, count_files
    from mis.registry import resolve_checkpoint

    start = time.perf_counter()
    source = sample / "crowd" / "crowd_scene.png"
    pipeline = CountPipeline.from_checkpoint(resolve_checkpoint("count", None), runtime)
    summary = count_files(pipeline, [str(source)], out / "count", CountOptions(overwrite=True), runtime)
    result = summary.results[0]
    heads = len(read_points(sample / "crowd" / "crowd_scene.json")[0])
    detail = result.error or f"count {result.info['count']:.1f}, the scene has {heads} heads (synthetic)"
    return [{"pipeline": "count", "input": source.name, "output": result.target, "status": result.status,
             "seconds": round(time.perf_counter() - start, 2), "metric": detail}]
