"""FPNN vs the Severson variance model on the Severson split (train 41 cells, primary test 43).

For each window N the FPNN ensemble is trained on the train split with the `mis train battery`
defaults, and both models are scored on the train and primary-test cells. Also times prediction
for 100 cells with a trained model. Needs ../shared/data/battery (real MIT cells).

    python benchmarks/battery_life.py                  # N = 10 20 30 40 100, about 15 min on 2 cores
    python benchmarks/battery_life.py --cycles 100 40  # a subset
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from mis.io.battery import read_cells
from mis.pipelines.battery.baseline import rmse_mape
from mis.pipelines.battery.pipeline import BatteryLifePipeline
from mis.pipelines.battery.preprocess import stack_cells
from mis.pipelines.battery.train import BatteryTrainOptions, train_battery

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/battery/mit_severson_qdlin_train_test1_cycles2-100.npz"


def score(pipeline: BatteryLifePipeline, cells) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for split in ("train", "test1"):
        chosen = [c for c in cells if c.split == split]
        arrays = stack_cells(chosen, pipeline.n_cycles, pipeline.voltage, pipeline.curve_points, pipeline.channels,
                             pipeline.extra_summary)
        lives = pipeline(arrays.curves, arrays.summary)
        fpnn, variance = lives.fpnn, lives.variance
        out[split] = (*rmse_mape(variance, arrays.life), *rmse_mape(fpnn, arrays.life))
    return out


def time_prediction(pipeline: BatteryLifePipeline, cells, count: int = 100, repeats: int = 5) -> float:
    """Seconds for `count` cells, from per-cycle curves to predicted lives (features + both models)."""
    chosen = [cells[i % len(cells)] for i in range(count)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        rows = pipeline.predict_cells(chosen)
        best = min(best, time.perf_counter() - start)
    assert all(r.error is None for r in rows)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, nargs="+", default=[10, 20, 30, 40, 100])
    parser.add_argument("--members", type=int, default=None, help="default: the CLI default")
    parser.add_argument("--steps", type=int, default=None, help="default: the CLI default")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (real MIT cells needed)")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cells = read_cells(args.data)
    rows, timing = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.cycles:
            options = BatteryTrainOptions(out=Path(tmp) / f"n{n}", n_cycles=n, progress=False)
            if args.members:
                options.members = args.members
            if args.steps:
                options.steps = args.steps
            start = time.perf_counter()
            checkpoint = train_battery(cells, options)["checkpoint"]
            seconds = time.perf_counter() - start
            pipeline = BatteryLifePipeline.from_checkpoint(checkpoint)
            result = score(pipeline, cells)
            rows.append((n, result, seconds))
            print(f"N={n}: trained in {seconds:.0f} s; primary test variance {result['test1'][0]:.0f} / "
                  f"{result['test1'][1]:.1f} %, FPNN {result['test1'][2]:.0f} / {result['test1'][3]:.1f} %", flush=True)
            if n == max(args.cycles):
                timing = time_prediction(pipeline, cells)
    print()
    print("Severson split, RMSE in cycles / MAPE in %; the variance model is log10 var dQ_{N,ref}(V) -> log10 life")
    print(f"{'N':>4} | {'variance train':>15} | {'FPNN train':>13} | {'variance test':>14} | {'FPNN test':>13} | "
          f"{'train s':>7}")
    for n, result, seconds in rows:
        tr, te = result["train"], result["test1"]
        print(f"{n:>4} | {tr[0]:6.0f} / {tr[1]:5.1f} | {tr[2]:4.0f} / {tr[3]:5.1f} | {te[0]:5.0f} / {te[1]:5.1f} | "
              f"{te[2]:4.0f} / {te[3]:5.1f} | {seconds:7.0f}")
    if timing is not None:
        print(f"\nprediction for 100 cells (N = {max(args.cycles)}, features + ensemble + variance model): "
              f"{timing:.2f} s on {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
