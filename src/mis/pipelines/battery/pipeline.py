"""BatteryLifePipeline: model arrays -> predicted cycle life (FPNN ensemble and variance model)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mis.errors import InputError
from mis.io.battery import MAH_FACTOR, Cell
from mis.pipelines.base import Pipeline
from mis.pipelines.card_checks import number, positive_int
from mis.pipelines.battery.baseline import VarianceModel
from mis.pipelines.battery.features import CHANNEL_NAMES, OPTIONAL_SUMMARY, SUMMARY_NAMES
from mis.pipelines.battery.preprocess import Normalizer, cell_arrays
from mis.runtime.device import ComputePolicy

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


@dataclass
class LifePrediction:
    fpnn: np.ndarray        # [M] cycle life predicted by the FPNN ensemble
    variance: np.ndarray    # [M] ... by the Severson variance model stored in the same checkpoint


@torch.no_grad()
def standardised_predictions(network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], normalizer: Normalizer,
                             curves: np.ndarray, summary: np.ndarray, device: torch.device | str = "cpu",
                             batch_size: int = 128) -> np.ndarray:
    """Raw (not yet normalised) model inputs -> the network's standardised log10 life, in batches."""
    outputs = []
    for start in range(0, len(curves), batch_size):
        part = slice(start, start + batch_size)
        x = torch.from_numpy(normalizer.curves(curves[part])).to(device)
        s = torch.from_numpy(normalizer.summary(summary[part])).to(device)
        outputs.append(network(x, s).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0)


# A prediction this far (relative) from a cell's observed life says the cell is unlike the training cells: the
# shipped N = 100 model's error is 9 % on average over the 84 MIT/Severson cells, and above 40 % for one of them
# (b2c1, a 148-cycle outlier that BatteryML leaves out).
FAR_FROM_OBSERVED = 0.4


def far_from_observed(row: CellPrediction) -> list[str]:
    """A warning when the data's observed life shows the prediction is far off (a cell unlike the training ones)."""
    if row.observed is None or row.fpnn is None or row.observed <= 0:
        return []
    error = (row.fpnn - row.observed) / row.observed
    if abs(error) <= FAR_FROM_OBSERVED:
        return []
    return [f"{row.name}: predicted {row.fpnn:.0f} cycles, observed {row.observed} ({100 * error:+.0f} %): the cell is "
            "probably unlike the cells the model was trained on (chemistry, protocol or a synthetic cell)"]


class BatteryLifePipeline(Pipeline):
    """`pipeline(curves, summary)` -> LifePrediction (FPNN and variance-model lives [M], in cycles)."""

    task = TASK
    default_batch_size = 128   # cells per forward pass

    def __init__(self, model: torch.nn.Module, card: dict, policy: ComputePolicy | None = None, **base_options):
        super().__init__(model, card, policy, **base_options)
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
    def card_problems(cls, card: dict) -> list[str]:
        pre = card["preprocessing"]
        problems = positive_int("preprocessing.n_cycles", pre.get("n_cycles"), minimum=2)
        grid = pre.get("voltage_grid")
        if not (isinstance(grid, dict) and number(grid.get("start")) and number(grid.get("stop"))
                and grid.get("start") != grid.get("stop") and isinstance(grid.get("points"), int)
                and grid.get("points", 0) >= 2):
            problems.append(f"preprocessing.voltage_grid must be {{start, stop, points >= 2}}, not {grid!r}")
        try:
            Normalizer.from_dict(pre["normalizer"])
            VarianceModel.from_dict(card.get("extra", {})["baseline"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"the normaliser or the variance model is missing or malformed ({type(exc).__name__}: "
                            f"{exc})")
        return problems

    def __call__(self, curves: np.ndarray, summary: np.ndarray) -> LifePrediction:
        """curves [M, C, T, P] and summary [M, S] (raw, as from `cell_arrays`) -> lives [M], [M]."""
        standardised = standardised_predictions(self.forward, self.normalizer, curves, summary, self.device,
                                                self.batch_size)
        return LifePrediction(self.normalizer.life(standardised), self.baseline.predict(np.asarray(summary)[:, 0]))

    def check_inputs(self, cell: Cell) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One cell's model arrays and warnings, or an InputError naming its file (too few cycles, NaN, another
        voltage window, a capacity the model never saw)."""
        curves, summary, warnings = cell_arrays(cell, self.n_cycles, self.voltage, self.curve_points, self.channels,
                                                self.extra_summary)
        return curves, summary, warnings + self.check_training_range(cell, summary)

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
                cell_curves, summary, warnings = self.check_inputs(cell)
            except InputError as exc:
                row.error = str(exc)
            else:
                row.warnings = warnings
                usable.append(len(rows))
                curves.append(cell_curves)
                summaries.append(summary)
            rows.append(row)
        if usable:
            lives = self(np.stack(curves), np.stack(summaries))
            for index, life, base in zip(usable, lives.fpnn, lives.variance):
                rows[index].fpnn, rows[index].variance = float(life), float(base)
                rows[index].warnings += far_from_observed(rows[index])
        return rows
