"""Cells -> model arrays, and the normalisation stored in the checkpoint card (numpy only)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mis.models.common import DictConfig
from mis.io.battery import Cell
from mis.errors import InputError
from mis.pipelines.battery.features import (CHANNEL_NAMES, CURVE_POINTS, cell_window, curves, summary_features,
                                            with_grid)


@dataclass
class BatteryArrays:
    """Model inputs for M cells: curves [M, 3, T, P] float32, summary [M, S] float64."""

    names: list[str]
    sources: list[str]
    curves: np.ndarray
    summary: np.ndarray
    life: np.ndarray               # [M] float, NaN when unknown
    splits: list[str | None]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def take(self, index: np.ndarray) -> "BatteryArrays":
        """The cells at `index` (integer positions or a boolean mask), e.g. one cross-validation fold."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=int)
        return BatteryArrays(names=[self.names[i] for i in index], sources=[self.sources[i] for i in index],
                             curves=self.curves[index], summary=self.summary[index], life=self.life[index],
                             splits=[self.splits[i] for i in index])


def cell_arrays(cell: Cell, n_cycles: int, voltage: np.ndarray, points: int = CURVE_POINTS,
                channels: tuple[str, ...] = CHANNEL_NAMES,
                extra_summary: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One cell -> (curves [C, T, points], summary [S], warnings). Raises InputError for unusable cells."""
    window = cell_window(with_grid(cell, voltage), n_cycles, voltage)
    if "temperature" in channels and window.temperature is None:
        raise InputError(cell.source, f"{cell.name}: the model uses temperature T(V) and this source has none")
    if "charge_time_s" in extra_summary and (window.charge_time is None
                                             or np.isnan(window.charge_time[:5]).all()):
        raise InputError(cell.source, f"{cell.name}: the model uses the charge time and this source has none")
    return (curves(window, voltage, n_cycles, points, channels), summary_features(window, n_cycles, extra_summary),
            window.warnings)


def stack_cells(cells: list[Cell], n_cycles: int, voltage: np.ndarray, points: int = CURVE_POINTS,
                channels: tuple[str, ...] = CHANNEL_NAMES, extra_summary: tuple[str, ...] = ()) -> BatteryArrays:
    """Every cell must be usable (training/evaluation); prediction handles cells one by one instead."""
    parts = [cell_arrays(cell, n_cycles, voltage, points, channels, extra_summary) for cell in cells]
    return BatteryArrays(
        names=[c.name for c in cells], sources=[c.source for c in cells],
        curves=np.stack([p[0] for p in parts]), summary=np.stack([p[1] for p in parts]),
        life=np.array([np.nan if c.cycle_life is None else c.cycle_life for c in cells], dtype=np.float64),
        splits=[c.split for c in cells], warnings=[w for p in parts for w in p[2]])


# Summary features are clipped to the training range widened by this fraction of it on each side.
CLIP_MARGIN = 0.25


@dataclass
class Normalizer(DictConfig):
    """Per-channel curve statistics, summary statistics and clip range, log10-life statistics.

    Summary features are clipped to the training range widened by a quarter of it on each side:
    a linear model on an out-of-range feature (e.g. a cell far outside the training chemistry or
    a new glitch) would otherwise extrapolate to absurd lives.
    """

    channel_mean: list[float]
    channel_std: list[float]
    summary_mean: list[float]
    summary_std: list[float]
    summary_low: list[float]
    summary_high: list[float]
    target_mean: float
    target_std: float

    @classmethod
    def fit(cls, arrays: BatteryArrays) -> "Normalizer":
        channels = arrays.curves.transpose(1, 0, 2, 3).reshape(arrays.curves.shape[1], -1).astype(np.float64)
        low, high = arrays.summary.min(0), arrays.summary.max(0)
        margin = CLIP_MARGIN * (high - low)
        target = np.log10(arrays.life)
        return cls(channel_mean=channels.mean(1).tolist(), channel_std=(channels.std(1) + 1e-12).tolist(),
                   summary_mean=arrays.summary.mean(0).tolist(), summary_std=(arrays.summary.std(0) + 1e-12).tolist(),
                   summary_low=(low - margin).tolist(), summary_high=(high + margin).tolist(),
                   target_mean=float(target.mean()), target_std=float(target.std() + 1e-12))

    def training_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The summary features' range over the training cells (the clip range without its margins)."""
        low, high = np.asarray(self.summary_low), np.asarray(self.summary_high)
        margin = (high - low) * CLIP_MARGIN / (1 + 2 * CLIP_MARGIN)
        return low + margin, high - margin

    def clipped(self, summary: np.ndarray) -> np.ndarray:
        """[S] bool: which summary features `summary()` moves to the edge of the clip range."""
        return (summary < np.asarray(self.summary_low)) | (summary > np.asarray(self.summary_high))

    def curves(self, curves: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.channel_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.channel_std, dtype=np.float32)[:, None, None]
        return ((curves - mean) / std).astype(np.float32)

    def summary(self, summary: np.ndarray) -> np.ndarray:
        clipped = np.clip(summary, self.summary_low, self.summary_high)
        return ((clipped - np.asarray(self.summary_mean)) / np.asarray(self.summary_std)).astype(np.float32)

    def target(self, life: np.ndarray) -> np.ndarray:
        return ((np.log10(life) - self.target_mean) / self.target_std).astype(np.float32)

    def life(self, standardised: np.ndarray) -> np.ndarray:
        return 10.0 ** (np.asarray(standardised, dtype=np.float64) * self.target_std + self.target_mean)
