"""`mis demo` for CT: the shipped model on the sample phantoms, with Dice against their reference labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    from mis.io.nifti import read_nifti
    from mis.pipelines.ct_segmentation.metrics import dice_hd95
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
    from mis.pipelines.ct_segmentation.run import SegmentOptions, plan_items, segment_files
    from mis.registry import resolve_checkpoint

    pipeline = CTSegmentationPipeline.from_checkpoint(resolve_checkpoint("ct_segmentation", None), runtime)
    inputs = sorted(str(p) for p in (sample / "ct").glob("*.nii.gz") if not p.name.endswith("_labels.nii.gz"))
    items = plan_items(inputs, out / "ct")
    summary = segment_files(pipeline, items, SegmentOptions(statistics=True, preview=True, overwrite=True), runtime)
    rows = []
    for item, result in zip(items, summary.results):
        row = {"pipeline": "segment", "input": Path(item.key).name, "output": str(item.target),
               "status": result.status, "seconds": round(result.seconds, 2), "metric": ""}
        reference = Path(item.key.replace(".nii.gz", "_labels.nii.gz"))
        if result.status == "done" and reference.exists():
            pred, meta = read_nifti(item.target)
            ref, _ = read_nifti(reference)
            scores = dice_hd95(np.rint(pred).astype(int), np.rint(ref).astype(int), sorted(pipeline.labels),
                               meta.spacing, hd95=False)
            row["metric"] = f"mean Dice {np.mean([s['dice'] for s in scores.values()]):.3f}"
        elif result.status == "failed":
            row["metric"] = result.error
        rows.append(row)
    return rows
