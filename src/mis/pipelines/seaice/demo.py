"""`mis demo` for sea ice: the shipped demo on the synthetic sample pair, scored against its mask."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    import time

    from mis.pipelines.seaice.evaluate import evaluate_pair
    from mis.pipelines.seaice.pipeline import SeaIcePipeline
    from mis.pipelines.seaice.run import Pair, SceneOptions, seaice_files
    from mis.registry import resolve_checkpoint

    start = time.perf_counter()
    folder = sample / "seaice"
    pair = Pair(folder / "sar.tif", folder / "msi.tif")
    pipeline = SeaIcePipeline.from_checkpoint(resolve_checkpoint("seaice", None), runtime)
    summary = seaice_files(pipeline, [pair], out / "seaice", SceneOptions(), runtime, overwrite=True)
    result = summary.results[0]
    scores = evaluate_pair(pipeline, pair, folder / "mask.tif", None)["mask"]
    return [{"pipeline": "seaice", "input": "sar.tif + msi.tif", "output": result.target, "status": result.status,
             "seconds": round(time.perf_counter() - start, 2),
             "metric": result.error or f"F1 {scores['f1']:.3f}, IoU {scores['iou']:.3f} vs the mask (synthetic scene)"}]
