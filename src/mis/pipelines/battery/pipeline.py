"""BatteryLifePipeline: model arrays -> predicted cycle life (FPNN ensemble and variance model)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mis.checkpoints import load_checkpoint
from mis.errors import CheckpointError, InputError
from mis.io.battery import MAH_FACTOR, Cell
from mis.pipelines.battery.baseline import VarianceModel
from mis.pipelines.battery.features import CHANNEL_NAMES, OPTIONAL_SUMMARY, SUMMARY_NAMES
from mis.pipelines.battery.preprocess import Normalizer, cell_arrays
from mis.runtime.config import RuntimeConfig
from mis.runtime.device import resolve_device

TASK = "battery_life"
# A cell's capacity at cycle 2 may lie this far (as factors) outside the training cells' before it is refused:
# ageing and cycler calibration move it by a few per cent, another cell type or a unit error by far more.
CAPACITY_TOLERANCE = (0.8, 1.25)


@dataclass
class CellPrediction:
    name: str
    source: str
    fpnn: float | None = None          # predicted cycle life
    variance: float | None = None      # the Severson variance model's prediction
    observed: int | None = None        # the observed life when the data has it
    split: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@torch.no_grad()
def standardised_predictions(model: torch.nn.Module, normalizer: Normalizer, curves: np.ndarray, summary: np.ndarray,
                             device: torch.device | str = "cpu", batch_size: int = 128) -> np.ndarray:
    """Raw (not yet normalised) model inputs -> the network's standardised log10 life, in batches."""
    outputs = []
    for start in range(0, len(curves), batch_size):
        part = slice(start, start + batch_size)
        x = torch.from_numpy(normalizer.curves(curves[part])).to(device)
        s = torch.from_numpy(normalizer.summary(summary[part])).to(device)
        outputs.append(model(x, s).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0)


class BatteryLifePipeline:
    """`pipeline(curves, summary)` -> (FPNN life [M], variance-model life [M]), in cycles."""

    def __init__(self, model: torch.nn.Module, card: dict, device: torch.device | str = "cpu"):
        if card.get("task") != TASK:
            raise CheckpointError(f"checkpoint is for task {card.get('task')!r}, not {TASK}")
        self.card = card
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        pre = card["preprocessing"]
        self.n_cycles = int(pre["n_cycles"])
        grid = pre["voltage_grid"]
        self.voltage = np.linspace(grid["start"], grid["stop"], int(grid["points"]))
        self.curve_points = int(pre.get("curve_points", len(self.voltage)))
        self.channels = tuple(pre.get("channels", CHANNEL_NAMES))
        self.extra_summary = tuple(n for n in pre.get("summary_features", ()) if n in OPTIONAL_SUMMARY)
        self.normalizer = Normalizer.from_dict(pre["normalizer"])
        self.summary_names = list(pre.get("summary_features", SUMMARY_NAMES))
        self.baseline = VarianceModel.from_dict(card["extra"]["baseline"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, runtime: RuntimeConfig | None = None) -> "BatteryLifePipeline":
        model, card = load_checkpoint(path)
        device = resolve_device(runtime.device if runtime else "cpu")
        return cls(model, card, device)

    def __call__(self, curves: np.ndarray, summary: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """curves [M, C, T, P] and summary [M, S] (raw, as from `cell_arrays`) -> lives [M], [M]."""
        standardised = standardised_predictions(self.model, self.normalizer, curves, summary, self.device, batch_size)
        return self.normalizer.life(standardised), self.baseline.predict(np.asarray(summary)[:, 0])

    def check_training_range(self, cell: Cell, summary: np.ndarray) -> list[str]:
        """Refuse a cell whose capacity the model never saw (another cell type, or mAh read as Ah): the network
        would answer with a confident, meaningless life. Other features outside the clip range are moved to
        its edge by the Normalizer and reported."""
        if "q_cycle2" in self.summary_names:
            i = self.summary_names.index("q_cycle2")
            seen_low, seen_high = self.normalizer.training_range()
            capacity, lo, hi = float(summary[i]), float(seen_low[i]), float(seen_high[i])
            if not CAPACITY_TOLERANCE[0] * lo <= capacity <= CAPACITY_TOLERANCE[1] * hi:
                hint = (" (is the file in mAh?)" if capacity > MAH_FACTOR * hi else
                        "; another cell type needs its own model (`mis train battery`)")
                raise InputError(cell.source, f"{cell.name}: discharge capacity at cycle 2 is {capacity:.4g} Ah; "
                                 f"the model was trained on cells of {lo:.3g}-{hi:.3g} Ah{hint}")
        outside = [name for name, out in zip(self.summary_names, self.normalizer.clipped(summary)) if out]
        return [f"{cell.name}: {', '.join(outside)} outside the range of the training cells; the prediction uses "
                "the edge of that range"] if outside else []

    def predict_cells(self, cells: list[Cell]) -> list[CellPrediction]:
        """Every cell gets a row; a cell that cannot be used gets its error and the rest go on."""
        rows, usable, curves, summaries = [], [], [], []
        for cell in cells:
            row = CellPrediction(cell.name, cell.source, observed=cell.cycle_life, split=cell.split)
            try:
                cell_curves, summary, warnings = cell_arrays(cell, self.n_cycles, self.voltage, self.curve_points,
                                                             self.channels, self.extra_summary)
                warnings = warnings + self.check_training_range(cell, summary)
            except InputError as exc:
                row.error = str(exc)
            else:
                row.warnings = warnings
                usable.append(len(rows))
                curves.append(cell_curves)
                summaries.append(summary)
            rows.append(row)
        if usable:
            fpnn, variance = self(np.stack(curves), np.stack(summaries))
            for index, life, base in zip(usable, fpnn, variance):
                rows[index].fpnn, rows[index].variance = float(life), float(base)
        return rows
