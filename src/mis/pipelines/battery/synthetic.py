"""Seeded synthetic LFP-like cells for tests, sample data and smoke runs (clearly labelled synthetic).

Each cell has Q_d(V) curves on the MIT grid (3.5 -> 2.0 V) for cycles 2..n_cycles and a capacity
trajectory to end of life. Ageing follows the Severson observation in a simplified form: the early
change of the discharge curve, dQ_{n-10}(V), grows at a cell-specific rate, and log life falls
linearly with log var dQ (plus noise), so a model can learn the relation. It is not a physical
model (PyBaMM would be one); nothing here is used to claim accuracy on real cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.io.battery import MIT_FIRST_CYCLE, MIT_NOMINAL_CAPACITY, MIT_VOLTAGE_GRID, Cell


def _fresh_curve(voltage: np.ndarray, capacity: float, plateau: float) -> np.ndarray:
    """Q_d(V) of a fresh LFP-like cell: ~0 at 3.5 V, most charge on the ~3.3 V plateau, a tail below."""
    plateau_part = 0.93 / (1.0 + np.exp((voltage - plateau) / 0.015))
    tail = 0.07 * np.clip((3.0 - voltage) / 1.0, 0.0, 1.0) ** 0.5
    return capacity * (plateau_part + tail) / (0.93 + 0.07)


def synthetic_cell(seed: int, n_cycles: int = 100, name: str | None = None, split: str | None = "train") -> Cell:
    rng = np.random.default_rng([20260, seed])
    voltage = MIT_VOLTAGE_GRID.copy()
    capacity0 = rng.uniform(1.04, 1.08)
    plateau = rng.uniform(3.24, 3.30)
    # Cell-specific ageing rate; life follows log10 life = 2.9 - 0.45 * log10(rate / 1e-5) + noise.
    log_rate = rng.uniform(-0.8, 1.2)
    life = int(round(10 ** (2.9 - 0.45 * log_rate + rng.normal(0.0, 0.04))))
    rate = 1e-5 * 10 ** log_rate  # Ah per cycle of curve change at the plateau's edge
    bump = np.exp(-0.5 * ((voltage - (plateau - 0.05)) / 0.04) ** 2)  # where the curve changes first
    cycles = np.arange(MIT_FIRST_CYCLE, n_cycles + 1)
    fresh = _fresh_curve(voltage, capacity0, plateau)
    fade = rng.uniform(0.6, 1.4) * (0.12 * capacity0) / life  # linear fade part, Ah per cycle
    qd = np.empty((len(cycles), len(voltage)))
    for t, cycle in enumerate(cycles):
        change = rate * (cycle - MIT_FIRST_CYCLE) * bump * np.cumsum(np.ones_like(voltage)) / len(voltage)
        qd[t] = fresh * (1 - fade * (cycle - MIT_FIRST_CYCLE) / capacity0) - change
        qd[t] += rng.normal(0.0, 2e-5, len(voltage))  # measurement noise
    qd = np.maximum.accumulate(np.clip(qd, 0.0, None), axis=1)  # Q(V) never decreases along a discharge
    capacity = _trajectory(capacity0, fade, life, rng)
    capacity.update({int(c): float(q[-1]) for c, q in zip(cycles, qd)})
    return Cell(name=name or f"synthetic{seed}", source="synthetic", voltage=voltage, cycles=cycles, qd=qd,
                capacity=capacity, cycle_life=life, split=split, nominal_capacity=MIT_NOMINAL_CAPACITY,
                meta={"synthetic": "true"})


def _trajectory(capacity0: float, fade: float, life: int, rng: np.random.Generator) -> dict[int, float]:
    """Capacity per cycle to a bit past end of life: slow linear fade then a knee reaching 0.88 Ah at `life`."""
    cycles = np.arange(1, int(life * 1.1) + 1)
    linear = capacity0 - fade * cycles
    knee_start = 0.7 * life
    drop_needed = max(linear[life - 1] - 0.88 * MIT_NOMINAL_CAPACITY, 1e-3)
    knee = drop_needed * np.clip((cycles - knee_start) / (life - knee_start), 0, None) ** 2
    values = linear - knee + rng.normal(0.0, 5e-4, len(cycles))
    return {int(c): float(q) for c, q in zip(cycles, values)}


def synthetic_cells(count: int, seed: int = 0, n_cycles: int = 100, split: str | None = "train") -> list[Cell]:
    return [synthetic_cell(seed * 10000 + i, n_cycles, split=split) for i in range(count)]


def as_npz_arrays(cells: list[Cell]) -> dict[str, np.ndarray]:
    """The MIT NPZ layout (what `read_cells` reads back) for a list of same-length cells."""
    return {
        "qdlin": np.stack([c.qd for c in cells]).astype(np.float32),
        "voltage": cells[0].voltage.astype(np.float32),
        "cycles": cells[0].cycles.astype(np.int64),
        "cycle_life": np.array([c.cycle_life for c in cells], dtype=np.int64),
        "split": np.array([c.split or "" for c in cells]),
        "barcode": np.array([c.name for c in cells]),
    }


# Raw cycler exports of a synthetic cell (tests of the readers, sample data): a CC charge, then a
# discharge sampled along the cell's Q(V) curve.

def write_arbin_csv(cell: Cell, path: Path, points: int = 400) -> None:
    """A raw Arbin-style export of `cell`: per cycle a CC charge, then a discharge along its Q(V) curve."""
    rows, time = [], 0.0
    for cycle, curve in zip(cell.cycles, cell.qd):
        for i in range(20):  # charge
            time += 30
            rows.append((time, cycle, 4.4, 3.3 + 0.01 * i, 0.0, 30.0))
        volts = np.linspace(3.52, 1.99, points)
        charge = np.interp(volts[::-1], cell.voltage[::-1], curve[::-1])[::-1]
        for v, q in zip(volts, charge):
            time += 5
            rows.append((time, cycle, -4.4, v, q, 30.0 + 4.0 * q + 0.01 * cycle))  # warms up as it discharges
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("Data_Point,Test_Time,Cycle_Index,Current,Voltage,Discharge_Capacity,Temperature\n")
        for i, (t, c, a, v, q, temp) in enumerate(rows):
            handle.write(f"{i},{t:.1f},{c},{a},{v:.5f},{q:.6f},{temp:.3f}\n")


def write_maccor_text(cell: Cell, path: Path, points: int = 400) -> None:
    """The same as a Maccor tab-separated text export (magnitudes in Amps, the State column gives the sign)."""
    lines = ["Today's Date 01/01/2026  Date of Test:\t01/01/2026\t Filename:\tx\tProcedure:\tsynthetic",
             "Rec#\tCyc#\tStep\tTestTime\tStepTime\tAmp-hr\tWatt-hr\tAmps\tVolts\tState\tES\tDPt Time"]
    record, seconds = 1, 0
    for cycle, curve in zip(cell.cycles, cell.qd):
        for i in range(10):
            seconds += 30
            lines.append(f"{record}\t{cycle}\t1\t  0d {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.0000"
                         f"\t  0d 00:00:00.0000\t{0.01 * i:.6f}\t0\t4.4\t{3.3 + 0.01 * i:.5f}\tC\t0\tx")
            record += 1
        volts = np.linspace(3.52, 1.99, points)
        charge = np.interp(volts[::-1], cell.voltage[::-1], curve[::-1])[::-1]
        for v, q in zip(volts, charge):
            seconds += 5
            lines.append(f"{record}\t{cycle}\t2\t  0d {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.0000"
                         f"\t  0d 00:00:00.0000\t{q:.7f}\t0\t4.4\t{v:.6f}\tD\t0\tx")
            record += 1
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


SAMPLE_SEEDS = (101, 202, 303)


def write_sample_data(out: Path) -> list[Path]:
    """sample_data/battery: 3 synthetic cells (cycles 2..100) in the MIT Q(V) NPZ layout, with life, and one
    cell's first 40 cycles as a raw Arbin-style export."""
    folder = Path(out) / "battery"
    folder.mkdir(parents=True, exist_ok=True)
    cells = [synthetic_cell(seed, 100, name=f"synthetic{seed}", split="sample") for seed in SAMPLE_SEEDS]
    npz = folder / "synthetic_cells.npz"
    with open(npz, "wb") as handle:
        np.savez_compressed(handle, **as_npz_arrays(cells))
    arbin = folder / "synthetic_arbin.csv"
    write_arbin_csv(synthetic_cell(404, 40, name="synthetic404"), arbin, points=150)
    return [npz, arbin]
