"""`mis evaluate interpolate`: drop frames, interpolate them back, score against the dropped ones.

For `--drop N`, frames 0, N+1, 2(N+1), ... are the inputs and the N frames between each pair the targets
(as MoSt-DSA / GaraMoSt evaluate 1-, 2- and 3-frame interpolation). Scores per inserted index (1..N), as
upstream reports them, for the model and, on the same frames in the same run, two baselines that need no
training: linear blending ((1 - t) A + t B) and the nearest input frame. PSNR = -10 log10(MSE) and SSIM
(11x11 Gaussian window, sigma 1.5, MONAI's) on frames scaled to [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mis.errors import InputError, MisError
from mis.io.frames import read_sequence
from mis.io.image import to_unit
from mis.pipelines.interpolate.pipeline import InterpolationPipeline, even_times
from mis.pipelines.interpolate.run import check_bit_depth

METHODS = ("model", "linear", "nearest")


MAX_PSNR = 100.0   # dB: identical frames (a repeated frame, the nearest-frame baseline) score this, not infinity


def psnr(predicted: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(predicted, np.float64) - np.asarray(target, np.float64)) ** 2))
    return MAX_PSNR if mse <= 10 ** (-MAX_PSNR / 10) else -10.0 * np.log10(mse)


def ssim(predicted: np.ndarray, target: np.ndarray) -> float:
    from monai.metrics import SSIMMetric

    def tensor(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(x, np.float32))
        return x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]

    return float(SSIMMetric(spatial_dims=2, data_range=1.0)(tensor(predicted), tensor(target)).mean())


def baselines(first: np.ndarray, second: np.ndarray, t: float) -> dict[str, np.ndarray]:
    return {"linear": (1 - t) * first + t * second, "nearest": first if t <= 0.5 else second}


def score_gaps(pipeline: InterpolationPipeline, frames: np.ndarray, drop: int, source: str) -> dict[str, list]:
    """frames: float [T, H, W(, 3)] in [0, 1]. {"<method>_<metric>": [[score per gap] per inserted index]}."""
    step = drop + 1
    starts = list(range(0, len(frames) - step, step))
    if not starts:
        raise InputError(source, f"{len(frames)} frames: too few to drop {drop} between inputs (need at least "
                         f"{step + 1})")
    times = even_times(drop)
    scores: dict[str, list[list[float]]] = {f"{m}_{k}": [[] for _ in times] for m in METHODS for k in ("psnr", "ssim")}
    for start in starts:
        first, second = frames[start], frames[start + step]
        predicted = pipeline(first, second, times, source=source).frames
        for k, t in enumerate(times):
            target = frames[start + k + 1]
            made = {"model": predicted[k], **baselines(first, second, t)}
            for method, frame in made.items():
                scores[f"{method}_psnr"][k].append(psnr(frame, target))
                scores[f"{method}_ssim"][k].append(ssim(frame, target))
    return scores


def evaluate_sequence(pipeline: InterpolationPipeline, path: Path, drop: int) -> dict:
    stored, meta = read_sequence(path)
    check_bit_depth(pipeline, meta.image, path)
    frames = np.stack([to_unit(frame, meta.image) for frame in stored])
    scores = score_gaps(pipeline, frames, drop, str(path))
    per_index = [{"index": k + 1, **{name: float(np.mean(values[k])) for name, values in scores.items()}}
                 for k in range(drop)]
    overall = {name: float(np.mean([v for per_gap in values for v in per_gap])) for name, values in scores.items()}
    return {"file": Path(path).name, "frames": len(frames), "gaps": len(scores["model_psnr"][0]),
            "per_index": per_index, **overall}


def evaluate_files(pipeline: InterpolationPipeline, paths: list, drop: int = 1) -> dict:
    """Every sequence scored; unreadable ones listed under "errors", the rest still scored. `paths` may hold
    InputErrors (arguments that did not resolve)."""
    cases, errors = [], []
    for path in paths:
        try:
            if isinstance(path, InputError):
                raise path
            cases.append(evaluate_sequence(pipeline, Path(path), drop))
        except InputError as exc:
            errors.append({"file": exc.path, "error": str(exc)})
    if not cases:
        raise MisError("no sequence could be scored" + (f" ({errors[0]['error']})" if errors else ""))
    keys = [f"{m}_{k}" for m in METHODS for k in ("psnr", "ssim")]
    mean = {k: float(np.mean([c[k] for c in cases])) for k in keys}
    return {"drop": drop, "times": list(even_times(drop)), "cases": cases, "mean": mean, "errors": errors}
