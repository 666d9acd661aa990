"""`--plot`: capacity fade of one cell with the window used and the predicted end of life (PNG)."""
from __future__ import annotations

import io
from pathlib import Path

from mis.io.atomic import atomic_write_bytes
from mis.io.battery import Cell
from mis.pipelines.battery.pipeline import CellPrediction

END_OF_LIFE_FRACTION = 0.8


def plot_cell(cell: Cell, row: CellPrediction, n_cycles: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    limit = 1.3 * (cell.nominal_capacity or max(cell.capacity.values(), default=1.0))
    cycles = sorted(c for c, q in cell.capacity.items() if 0 <= q <= limit)  # glitches would hide the fade
    capacity = [cell.capacity[c] for c in cycles]
    figure = Figure(figsize=(6.4, 4.0), dpi=120)
    axes = figure.add_subplot()
    axes.plot(cycles, capacity, ".", markersize=3, color="0.55", label="discharge capacity")
    used = [(c, q) for c, q in zip(cycles, capacity) if c <= n_cycles]
    if used:
        axes.plot(*zip(*used), ".", markersize=4, color="tab:blue", label=f"cycles used (first {n_cycles})")
    if cell.nominal_capacity:
        axes.axhline(END_OF_LIFE_FRACTION * cell.nominal_capacity, color="0.3", linestyle=":", linewidth=1,
                     label="80 % of nominal")
    for value, style, label in ((row.fpnn, "tab:red", "FPNN"), (row.variance, "tab:orange", "variance model"),
                                (row.observed, "black", "observed")):
        if value is not None:
            axes.axvline(value, color=style, linestyle="--" if label != "observed" else "-", linewidth=1.2,
                         label=f"{label}: {value:.0f} cycles")
    axes.set_xlabel("cycle")
    axes.set_ylabel("discharge capacity (Ah)")
    axes.set_title(cell.name)
    if capacity:
        low = min(min(capacity), END_OF_LIFE_FRACTION * (cell.nominal_capacity or min(capacity)))
        axes.set_ylim(low - 0.02, max(capacity) + 0.02)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
