"""`mis evaluate seaice`: the model's ice map against a reference mask (0 water / 1 ice, its nodata ignored) and,
as the paper compares with AMSR2, against a sea-ice-concentration raster thresholded at 15 % (the ice-edge
convention). Both references are read onto the output grid (nearest neighbour), band by band of rows as the
prediction streams, so only confusion counts are kept. F1 and IoU with ice as the positive class, accuracy,
precision, recall; pixels where either input or the reference has no data are ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from mis.errors import InputError, MisError
from mis.io.raster import aligned_reader
from mis.pipelines.seaice.pipeline import SeaIcePipeline
from mis.pipelines.seaice.run import Pair, SceneOptions, open_scene, scene_reader
from mis.pipelines.seaice.scores import Confusion

SIC_THRESHOLD = 15.0     # percent: the ice-edge convention for concentration products


def sic_percent(values: np.ndarray) -> np.ndarray:
    """Concentration in percent whether stored as 0-1 or 0-100 (decided on the finite values' maximum)."""
    finite = values[np.isfinite(values)]
    return values * 100.0 if finite.size and finite.max() <= 1.0 else values


def evaluate_pair(pipeline: SeaIcePipeline, pair: Pair, mask: Path | None, sic: Path | None,
                  options: SceneOptions | None = None) -> dict:
    scene = open_scene(pipeline, pair, options or SceneOptions())
    references = {}
    try:
        if mask is not None:
            references["mask"] = aligned_reader(mask, scene.grid, [1], "nearest")
        if sic is not None:
            references["sic"] = aligned_reader(sic, scene.grid, [1], "nearest")
        confusion = {name: Confusion() for name in references}
        for row, probability in pipeline.rows(scene_reader(pipeline, scene), scene.grid.height, scene.grid.width):
            window = Window(0, row, scene.grid.width, probability.shape[0])
            predicted_valid = np.isfinite(probability)
            predicted = probability >= 0.5
            for name, reader in references.items():
                values, valid = reader.read(window)
                values = values[0]
                truth = values >= 0.5 if name == "mask" else sic_percent(values) >= SIC_THRESHOLD
                keep = valid & predicted_valid & (values <= 100)
                confusion[name].add(predicted[keep], truth[keep])
    finally:
        scene.close()
        for reader in references.values():
            reader.close()
    return {"file": pair.sar.name, **{name: c.scores() for name, c in confusion.items()}}


def evaluate_files(pipeline: SeaIcePipeline, rows: list[tuple[Pair, Path | None, Path | None]],
                   options: SceneOptions | None = None) -> dict:
    cases, errors = [], []
    for pair, mask, sic in rows:
        try:
            cases.append(evaluate_pair(pipeline, pair, mask, sic, options))
        except InputError as exc:
            errors.append({"file": exc.path, "error": str(exc)})
    if not cases:
        raise MisError("no pair could be scored" + (f" ({errors[0]['error']})" if errors else ""))
    mean = {}
    for name in ("mask", "sic"):
        scored = [c[name] for c in cases if name in c]
        if scored:
            mean[name] = {k: float(np.mean([s[k] for s in scored])) for k in ("f1", "iou", "accuracy")}
    return {"cases": cases, "mean": mean, "errors": errors}
