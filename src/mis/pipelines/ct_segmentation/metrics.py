"""Dice and HD95 per label with MONAI's metric functions, in mm using the volume spacing."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def one_hot(labels: np.ndarray | torch.Tensor, ids: list[int]) -> torch.Tensor:
    """(X, Y, Z) ids -> (1, len(ids), X, Y, Z) float one-hot for the listed ids only."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    return torch.stack([(labels == i) for i in ids]).float()[None]


def dice_hd95(pred: np.ndarray, ref: np.ndarray, ids: list[int], spacing: tuple[float, float, float],
              *, hd95: bool = True) -> dict[int, dict[str, float | None]]:
    """Per label: Dice (1.0 when both are empty, 0.0 when only one is), HD95 in mm (None if either is empty)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    p, r = one_hot(pred, ids), one_hot(ref, ids)
    dice = compute_dice(p, r, include_background=True, ignore_empty=False)[0]
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated `always_return_as_numpy` internally: nothing a user can act on
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = (compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))[0]
              if hd95 else torch.full((len(ids),), float("nan")))
    out = {}
    for index, label in enumerate(ids):
        empty_p, empty_r = not bool(p[0, index].any()), not bool(r[0, index].any())
        d = float(dice[index])
        if empty_p and empty_r:
            d = 1.0
        h = float(hd[index])
        out[label] = {"dice": d, "hd95_mm": None if (empty_p or empty_r or math.isnan(h) or math.isinf(h)) else h}
    return out


def soft_dice_per_class(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard Dice per foreground class from (K, ...) probabilities and (...) ids, for validation."""
    pred = probs.argmax(0)
    scores = []
    for k in range(1, num_classes):
        p, r = pred == k, labels == k
        denominator = p.sum() + r.sum()
        scores.append(torch.tensor(1.0) if denominator == 0 else 2 * (p & r).sum() / denominator)
    return torch.stack(scores).float()
