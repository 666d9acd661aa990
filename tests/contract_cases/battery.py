"""`mis battery predict`: a tiny 2-member FPNN (a few seeded training steps) on synthetic cells."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]
N_CYCLES = 20


def make_checkpoint(folder: Path) -> Path:
    from mis.models.fpnn import FPNNConfig
    from mis.pipelines.battery.synthetic import synthetic_cells
    from mis.pipelines.battery.train import BatteryTrainOptions, train_battery

    options = BatteryTrainOptions(out=folder / "battery_run", n_cycles=N_CYCLES, members=2, steps=4, batch_size=4,
                                  device="cpu", config=FPNNConfig(channels=4, hidden=8), progress=False)
    return Path(train_battery(synthetic_cells(10, n_cycles=N_CYCLES), options)["checkpoint"])


def load(path, runtime):
    from mis.pipelines.battery.pipeline import BatteryLifePipeline

    return BatteryLifePipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    from mis.pipelines.battery.synthetic import synthetic_cell

    return [synthetic_cell(100 + i, n_cycles=30) for i in range(n)]


def run(pipeline, cell) -> np.ndarray:
    curves, summary, _ = pipeline.check_inputs(cell)
    return pipeline(curves[None], summary[None]).fpnn


def run_batch(pipeline, cells) -> list[np.ndarray]:
    rows = [pipeline.check_inputs(cell) for cell in cells]
    lives = pipeline(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])).fpnn
    return [lives[i:i + 1] for i in range(len(cells))]


def expect(cell, output: np.ndarray) -> None:
    assert output.dtype.kind == "f" and output.shape == (1,) and np.all(output > 0)


def bad_input(pipeline, path: Path) -> None:
    from dataclasses import replace

    from mis.pipelines.battery.synthetic import synthetic_cell

    pipeline.check_inputs(replace(synthetic_cell(1, n_cycles=12), source=str(path)))   # fewer cycles than N


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["battery", "predict", str(ROOT / "sample_data" / "battery" / "synthetic_cells.npz"), "--model",
            str(checkpoint), "--csv", str(out / "lives.csv")]


CASE = ContractCase("battery", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli,
                    golden=lambda out: np.asarray(out, np.float64).tolist(), batch_tolerance=1e-5)
