"""Raw cycler time series cut into cycles, and discharge curves interpolated on a voltage grid."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.battery.cell import MIT_VOLTAGE_GRID, Cell

# Part of the grid a discharge must cover to count as a full curve (a cycle cut short is skipped).
MIN_GRID_COVERAGE = 0.9
# A cycle with fewer discharge points has no curve worth interpolating (a pulse, a rest, a cycle cut off).
MIN_CURVE_POINTS = 10


@dataclass
class TimeSeries:
    """A raw cycler log, one entry per logged row, already in A, Ah, V."""

    cycle: np.ndarray
    current: np.ndarray      # A, discharge negative
    voltage: np.ndarray
    discharge_q: np.ndarray  # Ah, cumulative within the discharge step
    time: np.ndarray | None
    temperature: np.ndarray | None


@dataclass(frozen=True)
class GridCurves:
    """Discharge curves on one voltage grid, one row per cycle."""

    voltage: np.ndarray             # (P,) the grid, descending
    cycles: np.ndarray              # (K,) int64, ascending
    qd: np.ndarray                  # (K, P) Ah
    temperature: np.ndarray | None  # (K, P) degC, or None when the source logs none


@dataclass(frozen=True)
class CutSeries:
    """A raw time series cut into cycles: the curves and the per-cycle scalars."""

    curves: GridCurves
    capacity: dict[int, float]      # every cycle with a discharge, also one that does not cover the grid
    charge_time: dict[int, float]
    discharge_range: tuple[float, float] | None


# A discharge may lack this share of its capacity values (a dropped sample here and there) and still give a curve.
MAX_UNKNOWN_CAPACITY = 0.05


def cell_from_series(path: Path, series: TimeSeries, meta: dict[str, str],
                     grid: np.ndarray = MIT_VOLTAGE_GRID) -> Cell:
    """Cut a raw time series into cycles; interpolate each discharge segment on the voltage grid."""
    cut = cut_into_cycles(path, series, grid)
    return Cell(name=path.stem, source=str(path), voltage=cut.curves.voltage, cycles=cut.curves.cycles,
                qd=cut.curves.qd, temperature=cut.curves.temperature, capacity=cut.capacity,
                charge_time=cut.charge_time, meta=meta, discharge_range=cut.discharge_range)


def cut_into_cycles(path: Path, series: TimeSeries, grid: np.ndarray) -> CutSeries:
    """Per cycle: the charge time, the discharge capacity, and the discharge curve when it covers the grid."""
    finite = np.isfinite(series.cycle) & np.isfinite(series.voltage) & np.isfinite(series.current)
    if not finite.any():
        raise InputError(path, "no rows with finite cycle index, current and voltage")
    fractional = series.cycle[finite][series.cycle[finite] != np.round(series.cycle[finite])]
    if fractional.size:
        raise InputError(path, f"cycle index {fractional[0]:g} is not a whole number (is another column taken "
                         "for the cycle index?)")
    cycles, curves, temps, capacity, charge_time, ranges = [], [], [], {}, {}, []
    for cycle in np.unique(series.cycle[finite]):
        number = int(cycle)
        rows = finite & (series.cycle == cycle)
        charging = rows & (series.current > 0)
        if series.time is not None and charging.sum() > 1:
            charge_time[number] = float(series.time[charging].max() - series.time[charging].min())
        discharging = rows & (series.current < 0)
        if discharging.sum() < MIN_CURVE_POINTS:
            continue
        volts, charge = series.voltage[discharging], series.discharge_q[discharging]
        unknown = ~np.isfinite(charge)
        if unknown.all():
            continue   # no capacity logged for this discharge: neither a capacity nor a curve
        capacity[number] = float(np.nanmax(charge))
        if unknown.mean() > MAX_UNKNOWN_CAPACITY:
            # interpolating across the gap would draw a flat line where nothing was measured: the cycle counts as
            # missing, and the feature stage says it filled it from its neighbours
            continue
        ranges.append((volts.min(), volts.max()))
        if grid_coverage(volts, grid) < MIN_GRID_COVERAGE:
            continue
        cycles.append(number)
        curves.append(on_grid(volts, charge, grid))
        if series.temperature is not None:
            temps.append(on_grid(volts, series.temperature[discharging], grid))
    # reshape, not stack: a series with no full discharge still gives (0, P) curves
    shape = (len(cycles), len(grid))
    temperature = np.asarray(temps).reshape(shape) if series.temperature is not None else None
    grid_curves = GridCurves(voltage=grid.copy(), cycles=np.asarray(cycles, dtype=np.int64),
                             qd=np.asarray(curves).reshape(shape), temperature=temperature)
    discharge_range = tuple(float(v) for v in np.median(ranges, axis=0)) if ranges else None
    return CutSeries(curves=grid_curves, capacity=capacity, charge_time=charge_time, discharge_range=discharge_range)


def grid_coverage(volts: np.ndarray, grid: np.ndarray) -> float:
    """The part of the grid's voltage span that a discharge's voltages span."""
    span = grid.max() - grid.min()
    return (min(volts.max(), grid.max()) - max(volts.min(), grid.min())) / span


def on_grid(volts: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolate values measured along a (noisy, falling) discharge voltage onto the grid.

    The voltage is made monotone (running minimum) so relaxation noise does not fold the curve;
    values outside the measured range are held at the nearest measured value.
    """
    keep = np.isfinite(volts) & np.isfinite(values)
    volts, values = volts[keep], values[keep]
    if len(volts) < 2:
        return np.full(len(grid), np.nan)
    monotone = np.minimum.accumulate(volts)
    order = np.argsort(monotone, kind="stable")
    x, y = monotone[order], values[order]
    x, first = np.unique(x, return_index=True)
    return np.interp(grid, x, y[first])
