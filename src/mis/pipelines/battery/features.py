"""From a cell's per-cycle curves to the FPNN inputs and the Severson features (numpy, no torch).

For a window of the first N cycles (frames = cycles 2..N, the MIT convention: cycle 1 is formation):

- curves [3, T, P']: per cycle Q_d(V), dQ_n(V) = Q_n(V) - Q_ref(V), and dQ/dV (box-smoothed finite
  differences), T = N - 1 frames, on P' = 250 voltage bins (4-point averages of the 1000-point
  grid: the curves are smooth, and 4x less data keeps prediction fast). The network reshapes
  each cycle to a 16 x 16 frame for its 3-D "video" stream and reads [T, P'] in its 2-D stream.
- summary [6]: per-cell scalars (Severson's "discharge model" family): log10 var dQ_{N,ref}(V),
  log10 |min dQ_{N,ref}(V)|, Q_d at cycle 2, max Q_d - Q_d(2), Q_d(N) - max Q_d, and the capacity
  slope over the second half of the window (mAh / cycle).

The reference cycle is N // 10 (cycle 10 for N = 100, Severson's dQ_100-10), at least cycle 2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import uniform_filter1d

from mis.errors import InputError
from mis.io.battery import MIT_FIRST_CYCLE, Cell

FIRST_CYCLE = MIT_FIRST_CYCLE
SUMMARY_NAMES = ("log10_var_dq", "log10_abs_min_dq", "q_cycle2", "q_max_minus_q2", "q_last_minus_qmax",
                 "q_slope_mah_per_cycle")
CHANNEL_NAMES = ("q", "delta_q", "dqdv")
# Used when the model was trained with them (`mis train battery --temperature --charge-time`: a T(V) channel and
# this feature) and the source has them (raw Arbin/Maccor exports, BEEP files); the MIT Q(V) files have neither.
OPTIONAL_SUMMARY = ("charge_time_s",)       # mean charge duration of cycles 2..6, seconds
# A curve is a glitch when it leaves [-0.1 Ah, 1.3 x nominal] (the six known MIT cases reach -9.7 and 48.8 Ah).
GLITCH_LOW_AH = -0.1
GLITCH_HIGH_FACTOR = 1.3
# Missing cycles inside the window that may be filled from their neighbours (with a warning).
MAX_MISSING_FRACTION = 0.1


def reference_cycle(n_cycles: int) -> int:
    return max(FIRST_CYCLE, n_cycles // 10)


@dataclass
class CellWindow:
    """The first N cycles of one cell on the model's grid, repaired, with what was done to it."""

    name: str
    cycles: np.ndarray      # [T] = 2..N
    qd: np.ndarray          # [T, P]
    warnings: list[str]
    temperature: np.ndarray | None = None   # [T, P] when the source has T(V)
    charge_time: np.ndarray | None = None   # [T] seconds (NaN where unknown) when the source has it


def nominal_capacity(cell: Cell) -> float:
    if cell.nominal_capacity:
        return float(cell.nominal_capacity)
    early = cell.qd[: min(5, len(cell.qd)), -1]
    return float(np.nanmedian(early)) if len(early) else 1.0


def cell_window(cell: Cell, n_cycles: int, voltage: np.ndarray) -> CellWindow:
    """Cycles 2..N on `voltage`: checks coverage, NaNs and the grid; repairs glitch curves."""
    if n_cycles <= FIRST_CYCLE + 1:
        raise InputError(cell.source, f"{cell.name}: the window needs at least {FIRST_CYCLE + 2} cycles")
    _check_grid(cell, voltage)
    wanted = np.arange(FIRST_CYCLE, n_cycles + 1)
    have = np.isin(wanted, cell.cycles)
    if cell.last_cycle < n_cycles or have.mean() < 1 - MAX_MISSING_FRACTION:
        raise InputError(cell.source, f"{cell.name}: has discharge curves for {int(have.sum())} of cycles "
                         f"{FIRST_CYCLE}..{n_cycles} (last cycle {cell.last_cycle}); the model needs the first "
                         f"{n_cycles} cycles")
    qd = np.full((len(wanted), len(voltage)), np.nan)
    qd[have] = cell.qd[np.searchsorted(cell.cycles, wanted[have])]
    warnings = []
    if (~have).any():
        warnings.append(f"{cell.name}: cycles {_ranges(wanted[~have])} missing, filled from neighbouring cycles")
    present_nan = np.isnan(qd[have]).any(axis=1)
    if present_nan.any():
        bad = wanted[have][present_nan]
        raise InputError(cell.source, f"{cell.name}: NaN values in the discharge curve of cycle(s) {_ranges(bad)}")
    glitch = _glitch_rows(qd, nominal_capacity(cell)) & have
    for cycle, row in zip(wanted[glitch], qd[glitch]):
        warnings.append(f"{cell.name}: cycle {cycle} discharge curve corrupted (Q from {row.min():.2f} to "
                        f"{row.max():.2f} Ah), replaced by its neighbours' mean")
    qd[glitch] = np.nan
    if np.isnan(qd).all(axis=1).sum() > MAX_MISSING_FRACTION * len(wanted):
        raise InputError(cell.source, f"{cell.name}: too many missing or corrupted cycles in 2..{n_cycles}")
    qd = _fill_rows(qd)
    temperature = None
    if cell.temperature is not None:
        temperature = np.full((len(wanted), len(voltage)), np.nan)
        temperature[have] = cell.temperature[np.searchsorted(cell.cycles, wanted[have])]
        temperature = _fill_rows(temperature) if not np.isnan(temperature).all() else None
    charge_time = None
    if cell.charge_time:
        charge_time = np.array([cell.charge_time.get(int(c), np.nan) for c in wanted])
    return CellWindow(name=cell.name, cycles=wanted, qd=qd, warnings=warnings, temperature=temperature,
                      charge_time=charge_time)


def _check_grid(cell: Cell, voltage: np.ndarray) -> None:
    top, bottom = voltage.max(), voltage.min()
    if len(cell.cycles) == 0 and cell.discharge_range is not None:
        # a raw file with discharges but none on the grid: say which voltages they cover. Past the grid's ends by
        # over 10 % of its span is another window (an LFP discharge starts from 3.6 V, 0.1 V above the MIT grid).
        low, high = cell.discharge_range
        cover, margin = f"discharge curves cover {high:.2f}-{low:.2f} V", 0.1 * (top - bottom)
        if high > top + margin or low < bottom - margin:
            raise InputError(cell.source, f"{cell.name}: {cover}; the model's grid is {top:.1f}-{bottom:.1f} V: "
                             "another chemistry or voltage window")
        raise InputError(cell.source, f"{cell.name}: {cover}, only part of the model's {top:.1f}-{bottom:.1f} V "
                         "grid (partial discharges or another voltage window)")
    if len(cell.cycles) == 0:
        raise InputError(cell.source, f"{cell.name}: no complete discharge curves in this file (rest, partial or "
                         "summary data only); the model needs Q(V) curves")
    if len(cell.voltage) != len(voltage) or not np.allclose(cell.voltage, voltage, atol=1e-3):
        raise InputError(cell.source, f"{cell.name}: voltage grid {cell.voltage.max():.2f}->{cell.voltage.min():.2f} V "
                         f"({len(cell.voltage)} points) differs from the model's {top:.2f}->"
                         f"{bottom:.2f} V ({len(voltage)} points): another chemistry or voltage window")


def _glitch_rows(qd: np.ndarray, nominal: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (np.nanmax(qd, axis=1) > GLITCH_HIGH_FACTOR * nominal) | (np.nanmin(qd, axis=1) < GLITCH_LOW_AH)


def _fill_rows(qd: np.ndarray) -> np.ndarray:
    """Replace NaN rows by linear interpolation between the nearest valid cycles."""
    valid = ~np.isnan(qd).any(axis=1)
    if valid.all():
        return qd
    index, valid_index = np.arange(len(qd)), np.flatnonzero(valid)
    position = np.interp(index, valid_index, np.arange(len(valid_index)))  # fractional valid-row index
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, len(valid_index) - 1)
    weight = (position - below)[:, None]
    return (1 - weight) * qd[valid_index[below]] + weight * qd[valid_index[above]]


def _ranges(values: np.ndarray) -> str:
    values = [int(v) for v in values]
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


CURVE_POINTS = 250


def curves(window: CellWindow, voltage: np.ndarray, n_cycles: int, points: int = CURVE_POINTS,
           channels: tuple[str, ...] = CHANNEL_NAMES) -> np.ndarray:
    """[C, T, points] float32: Q, dQ to the reference cycle, dQ/dV (and T(V)), on `points` voltage bins."""
    qd = bin_points(window.qd, points)
    reference = qd[reference_cycle(n_cycles) - FIRST_CYCLE]
    binned_voltage = bin_points(np.asarray(voltage, dtype=np.float64), points)
    smooth = max(3, 9 * points // len(voltage)) | 1  # about a 13 mV box on the MIT grid
    stack = [qd, qd - reference[None], dq_dv(qd, binned_voltage, smooth)]
    if "temperature" in channels:
        stack.append(bin_points(window.temperature, points))  # the caller checked it exists
    return np.stack(stack).astype(np.float32)


def bin_points(values: np.ndarray, points: int) -> np.ndarray:
    """Average the last axis in `points` equal bins (exact when it divides, else linear interpolation)."""
    size = values.shape[-1]
    if size == points:
        return values
    if size % points == 0:
        step = size // points
        return sum(values[..., i::step] for i in range(step)) / step  # strided adds beat .mean(-1) here
    position = (np.arange(points) + 0.5) * size / points - 0.5
    flat = values.reshape(-1, size)
    return np.stack([np.interp(position, np.arange(size), row) for row in flat]).reshape(*values.shape[:-1], points)


def dq_dv(qd: np.ndarray, voltage: np.ndarray, smooth: int = 9) -> np.ndarray:
    """-dQ/dV in Ah/V (positive on a discharge) after a centred box filter along the grid."""
    smoothed = uniform_filter1d(qd, smooth, axis=-1, mode="nearest")
    return -np.gradient(smoothed, voltage, axis=-1)


def summary_features(window: CellWindow, n_cycles: int, extra: tuple[str, ...] = ()) -> np.ndarray:
    """The 6 per-cell scalars named in SUMMARY_NAMES (float64), then those of `extra` that are requested."""
    qd = window.qd
    delta = qd[-1] - qd[reference_cycle(n_cycles) - FIRST_CYCLE]
    capacity = qd[:, -1]
    half = len(capacity) // 2
    slope = np.polyfit(window.cycles[half:], capacity[half:], 1)[0] if len(capacity) - half >= 2 else 0.0
    values = [
        np.log10(max(np.var(delta), 1e-12)),
        np.log10(max(abs(delta.min()), 1e-9)),
        capacity[0],
        capacity.max() - capacity[0],
        capacity[-1] - capacity.max(),
        1000.0 * slope,
    ]
    if "charge_time_s" in extra:
        values.append(float(np.nanmean(window.charge_time[:5])))  # the caller checked it exists
    return np.array(values)


def with_grid(cell: Cell, voltage: np.ndarray) -> Cell:
    """Resample a cell's curves to another grid of the same voltage window (e.g. 1000 -> 500 points)."""
    if len(cell.cycles) == 0 or (len(cell.voltage) == len(voltage) and np.allclose(cell.voltage, voltage)):
        return cell
    lo, hi = max(cell.voltage.min(), voltage.min()), min(cell.voltage.max(), voltage.max())
    if (hi - lo) < 0.98 * (voltage.max() - voltage.min()):
        return cell  # different window: cell_window reports it
    order = np.argsort(cell.voltage)
    qd = np.stack([np.interp(voltage, cell.voltage[order], row[order]) for row in cell.qd])
    return replace(cell, voltage=np.asarray(voltage, dtype=np.float64), qd=qd, temperature=None)
