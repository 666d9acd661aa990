"""The Severson et al. (2019) "variance" model: log10 life = a * log10 var dQ_{N,ref}(V) + b.

Fitted on the same training cells as the network and stored in its card, so every prediction
and every evaluation reports both side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mis.models.common import DictConfig


@dataclass
class VarianceModel(DictConfig):
    slope: float
    intercept: float
    feature: str = "log10_var_dq"

    @classmethod
    def fit(cls, log_var: np.ndarray, life: np.ndarray) -> "VarianceModel":
        slope, intercept = np.polyfit(np.asarray(log_var, dtype=np.float64), np.log10(life), 1)
        return cls(float(slope), float(intercept))

    def predict(self, log_var: np.ndarray) -> np.ndarray:
        return 10.0 ** (self.slope * np.asarray(log_var, dtype=np.float64) + self.intercept)


def rmse_mape(predicted: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    """RMSE in cycles and MAPE in percent (Severson's metrics)."""
    predicted, observed = np.asarray(predicted, dtype=np.float64), np.asarray(observed, dtype=np.float64)
    rmse = float(np.sqrt(np.mean((predicted - observed) ** 2)))
    mape = float(100.0 * np.mean(np.abs(predicted - observed) / observed))
    return rmse, mape
