"""BEEP structured JSON: the per-cycle `summary` and the Q(V) curves of `cycles_interpolated`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.battery.cell import MIT_VOLTAGE_GRID, Cell
from mis.io.battery.curves import MIN_CURVE_POINTS, GridCurves, on_grid

BEEP_CURVE_COLUMNS = ("voltage", "discharge_capacity", "cycle_index")
# How a message names a JSON value that is not the object it should be.
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}


@dataclass(frozen=True)
class _Summary:
    """The summary's per-cycle scalars (cycles with a non-finite value left out)."""

    capacity: dict[int, float]
    charge_time: dict[int, float]


@dataclass(frozen=True)
class _InterpolatedRows:
    """`cycles_interpolated` as columns of one length: one row per voltage point and cycle."""

    voltage: np.ndarray
    discharge_capacity: np.ndarray
    cycle_index: np.ndarray
    temperature: np.ndarray | None
    step_type: np.ndarray | None

    def discharge(self) -> np.ndarray:
        """Rows of discharge steps; every row when the file does not say which step a row belongs to."""
        if self.step_type is None:
            return np.ones(len(self.voltage), bool)
        return self.step_type == "discharge"


def read_beep_json(path: Path) -> Cell:
    document = _load_document(path)
    summary = _read_summary(path, _beep_object(path, document, "summary"))
    parameters = _beep_object(path, document, "structuring_parameters")
    nominal = _beep_number(path, parameters, "nominal_capacity", float)
    table = _beep_object(path, document, "cycles_interpolated")
    curves = _discharge_curves(path, table, _beep_grid(path, parameters))
    return Cell(name=path.stem, source=str(path), voltage=curves.voltage, cycles=curves.cycles, qd=curves.qd,
                temperature=curves.temperature, capacity=summary.capacity, charge_time=summary.charge_time,
                nominal_capacity=nominal or None,
                meta={"barcode": str(document.get("barcode", "")), "protocol": str(document.get("protocol", ""))})


def _load_document(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict) or "summary" not in document:
        raise InputError(path, "not a BEEP structured file (no 'summary')")
    return document


def _read_summary(path: Path, summary: dict) -> _Summary:
    for column in ("cycle_index", "discharge_capacity"):
        if column not in summary:
            raise InputError(path, f"BEEP summary has no '{column}' column")
    cycle_index = _numbers(path, summary["cycle_index"], "cycle_index")
    discharge = _numbers(path, summary["discharge_capacity"], "discharge_capacity")
    if len(cycle_index) != len(discharge):
        raise InputError(path, "BEEP summary columns have different lengths")
    capacity = _per_cycle(cycle_index, discharge)
    charge_time = {}
    if "charge_duration" in summary:
        charge_time = _per_cycle(cycle_index, _numbers(path, summary["charge_duration"], "charge_duration"))
    return _Summary(capacity=capacity, charge_time=charge_time)


def _per_cycle(cycle_index: np.ndarray, values: np.ndarray) -> dict[int, float]:
    return {int(c): float(v) for c, v in zip(cycle_index, values) if np.isfinite(c) and np.isfinite(v)}


def _beep_object(path: Path, document: dict, key: str) -> dict:
    """A section of the file that must be a JSON object of columns or settings (absent or null: empty)."""
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(path, f"BEEP '{key}' is not a JSON object (found {_JSON_KINDS.get(type(value), 'a value')})")
    return value


def _beep_number(path: Path, parameters: dict, key: str, kind: type):
    """One structuring parameter as `kind` (None when absent or null)."""
    value = parameters.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP structuring_parameters '{key}' is not a number ({value!r})") from None


def _beep_grid(path: Path, parameters: dict) -> np.ndarray:
    """The voltage grid BEEP interpolated on: `v_range` [low, high] with `resolution` points (MIT's by default)."""
    v_range = parameters.get("v_range") or [float(MIT_VOLTAGE_GRID[-1]), float(MIT_VOLTAGE_GRID[0])]
    resolution = _beep_number(path, parameters, "resolution", int) or len(MIT_VOLTAGE_GRID)
    try:
        low, high = sorted(float(v) for v in v_range)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP structuring_parameters 'v_range' is not [low, high] volts "
                         f"({v_range!r})") from None
    if resolution < 2 or not low < high:
        raise InputError(path, f"BEEP structuring_parameters give an empty voltage grid (v_range {v_range!r}, "
                         f"resolution {resolution})")
    return np.linspace(high, low, resolution)


def _numbers(path: Path, values, name: str) -> np.ndarray:
    """A JSON column as float64 (null -> NaN); anything else non-numeric is the file's problem."""
    if not isinstance(values, list):
        raise InputError(path, f"BEEP column '{name}' is not an array")
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP column '{name}' holds non-numeric values") from None


def _interpolated_rows(path: Path, table: dict) -> _InterpolatedRows | None:
    """`cycles_interpolated` as numeric columns of one length (and `step_type`); None when it has no Q(V) data."""
    if not all(key in table for key in BEEP_CURVE_COLUMNS):
        return None
    numeric = {key: _numbers(path, table[key], f"cycles_interpolated/{key}")
               for key in BEEP_CURVE_COLUMNS + ("temperature",) if key in table}
    step_type = _step_types(path, table)
    lengths = {key: len(values) for key, values in numeric.items()}
    if step_type is not None:
        lengths["step_type"] = len(step_type)
    if len(set(lengths.values())) > 1:
        raise InputError(path, "BEEP cycles_interpolated columns have different lengths ("
                         + ", ".join(f"{key} {length}" for key, length in lengths.items()) + ")")
    return _InterpolatedRows(voltage=numeric["voltage"], discharge_capacity=numeric["discharge_capacity"],
                             cycle_index=numeric["cycle_index"], temperature=numeric.get("temperature"),
                             step_type=step_type)


def _step_types(path: Path, table: dict) -> np.ndarray | None:
    if "step_type" not in table:
        return None
    if not isinstance(table["step_type"], list):
        raise InputError(path, "BEEP column 'cycles_interpolated/step_type' is not an array")
    return np.asarray([str(step) for step in table["step_type"]])


def _discharge_curves(path: Path, table: dict, grid: np.ndarray) -> GridCurves:
    """`cycles_interpolated` rows (one per voltage point and cycle) -> Q_d(V) per cycle."""
    empty = GridCurves(voltage=grid, cycles=np.zeros(0, dtype=np.int64), qd=np.zeros((0, len(grid))),
                       temperature=None)
    interpolated = _interpolated_rows(path, table)
    if interpolated is None:
        return empty
    temps = interpolated.temperature
    keep = interpolated.discharge()
    cycles, curves, temp_curves = [], [], []
    for cycle in np.unique(interpolated.cycle_index[keep]):
        rows = keep & (interpolated.cycle_index == cycle)
        volts, charge = interpolated.voltage[rows], interpolated.discharge_capacity[rows]
        if rows.sum() < MIN_CURVE_POINTS or not np.isfinite(charge).any():
            continue  # BEEP leaves NaN rows for incomplete cycles (e.g. the last one)
        # BEEP orders these rows by voltage (rising), not by time: put them in discharge order first
        order_falling = np.argsort(-volts, kind="stable")
        cycles.append(int(cycle))
        curves.append(on_grid(volts[order_falling], charge[order_falling], grid))
        if temps is not None:
            temp_curves.append(on_grid(volts[order_falling], temps[rows][order_falling], grid))
    if not cycles:
        return empty
    order = np.argsort(cycles)
    temperature = np.asarray(temp_curves)[order] if temps is not None else None
    return GridCurves(voltage=grid, cycles=np.asarray(cycles, dtype=np.int64)[order], qd=np.asarray(curves)[order],
                      temperature=temperature)
