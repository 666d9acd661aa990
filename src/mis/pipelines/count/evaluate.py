"""`mis evaluate count`: images with head-point annotations -> MAE and RMSE of the counts (crowd-counting papers
print RMSE under the name "MSE"; here it is named "MSE (RMSE)") and GAME(0-3), the grid average mean absolute error
of Guerrero-Gomez-Olmedo et al.: the image cut into 4^L regions, the absolute count errors summed over them, so a
model that puts the right number of people in the wrong places is caught. The reference density comes from the
points with the model card's sigma rule; its region counts are exact (the points' own counts, up to the kernels'
spill across region borders).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.errors import InputError, MisError
from mis.io.image import read_image
from mis.io.points import check_points_in_image, points_file_for, read_points
from mis.pipelines.count.density import count_metrics, density_from_points, game
from mis.pipelines.count.pipeline import CountPipeline

GAME_LEVELS = (0, 1, 2, 3)


def annotation_for(image: Path, points_dir: Path | None) -> Path:
    if points_dir is not None:
        for suffix in (".mat", ".json", ".csv", ".txt"):
            for name in (image.stem + suffix, f"GT_{image.stem}{suffix}", f"{image.stem}_ann{suffix}"):
                if (points_dir / name).is_file():
                    return points_dir / name
    found = points_file_for(image)
    if found is None:
        raise InputError(image, "no head-point annotation found for it (ShanghaiTech ground_truth/GT_<name>.mat, "
                         "<name>.json / .csv / .txt, <name>_ann.mat, or --points DIR)")
    return found


def evaluate_image(pipeline: CountPipeline, image_path: Path, annotation: Path) -> dict:
    image, _meta = read_image(image_path, alpha="refuse")
    points, _ = read_points(annotation)
    points, dropped = check_points_in_image(points, image.shape)
    out = pipeline(image, str(image_path))
    truth = density_from_points(points, image.shape[:2], pipeline.card["preprocessing"].get("sigma", "fixed:5"))
    case = {"file": image_path.name, "annotation": annotation.name, "true_count": float(len(points)),
            "count": out.count, "error": out.count - len(points), "points_outside": dropped}
    case.update({f"game{level}": game(out.density, truth, level) for level in GAME_LEVELS})
    return case


def evaluate_files(pipeline: CountPipeline, images: list, points_dir: Path | None = None) -> dict:
    cases, errors = [], []
    for image in images:
        try:
            if isinstance(image, InputError):
                raise image
            cases.append(evaluate_image(pipeline, Path(image), annotation_for(Path(image), points_dir)))
        except InputError as exc:
            errors.append({"file": exc.path, "error": str(exc)})
    if not cases:
        raise MisError("no image could be scored" + (f" ({errors[0]['error']})" if errors else ""))
    metrics = count_metrics([c["count"] for c in cases], [c["true_count"] for c in cases])
    mean = {"mae": metrics["mae"], "rmse": metrics["rmse"], "images": len(cases),
            "mean_true_count": float(np.mean([c["true_count"] for c in cases])),
            **{f"game{level}": float(np.mean([c[f"game{level}"] for c in cases])) for level in GAME_LEVELS}}
    return {"cases": cases, "mean": mean, "errors": errors}
