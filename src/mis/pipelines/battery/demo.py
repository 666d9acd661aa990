"""`mis demo` for batteries: both shipped models on the synthetic sample cells."""
from __future__ import annotations

from pathlib import Path

from mis.runtime.config import RuntimeConfig


def demo(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """Both shipped battery models on the synthetic sample cells (NPZ layout and a raw Arbin export)."""
    import time

    from mis.pipelines.battery.pipeline import BatteryLifePipeline
    from mis.pipelines.battery.plot import plot_cell
    from mis.pipelines.battery.run import read_file_cells, write_csv
    from mis.registry import WEIGHTS_DIR

    rows = []
    for n_cycles, name in ((100, "synthetic_cells.npz"), (40, "synthetic_arbin.csv")):
        start = time.perf_counter()
        source = sample / "battery" / name
        pipeline = BatteryLifePipeline.from_checkpoint(WEIGHTS_DIR / f"battery_fpnn_n{n_cycles}.safetensors", runtime)
        cells = read_file_cells(source)
        predictions = pipeline.predict_cells(cells)
        target = out / "battery" / f"{source.stem}_n{n_cycles}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_csv(target, predictions)
        for cell, row in zip(cells, predictions):
            if row.error is None:
                plot_cell(cell, row, n_cycles, target.parent / f"{cell.name}_n{n_cycles}.png")
        errors = [r.error for r in predictions if r.error]
        lives = ", ".join(f"{r.name} {r.fpnn:.0f}" for r in predictions if r.error is None)
        rows.append({"pipeline": f"battery predict --cycles {n_cycles}", "input": name, "output": str(target),
                     "status": "failed" if errors else "done", "seconds": round(time.perf_counter() - start, 2),
                     "metric": errors[0] if errors else f"predicted life: {lives} (synthetic cells)"})
    return rows
