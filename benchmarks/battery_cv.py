"""Cross-validation on the Severson training cells only: FPNN vs linear baselines, test split untouched.

Judges a modelling idea without looking at the primary test (41 cells are few, so every idea
should be judged here first). K-fold over cells, repeated with several fold assignments; every
model sees the same folds. Models:

- variance: Severson's log10 var dQ_{N,ref}(V) -> log10 life (the baseline shipped in every card);
- summary linear: least squares of log10 life on the FPNN's six summary features (Severson's
  "discharge model" family, without regularisation);
- PCR: BatteryML's best MATR1 model, principal-component regression on the flattened dQ(V) matrix
  of every cycle (here cycles 2..N x 250 voltage points, reference cycle N // 10);
- FPNN: the `mis train battery` defaults (ensemble of 5), skipped with --no-fpnn (about 6 min per
  fold assignment on 2 cores).

--screen adds "summary linear + one candidate feature" rows (other dQ pairs, dQ/dV peak shift, the
charge time implied by the charging policy, ...): ideas for the summary stream, judged before any
of them reaches the network.

    python benchmarks/battery_cv.py                     # 5 folds x 2 assignments, N = 100
    python benchmarks/battery_cv.py --no-fpnn --screen --fold-seeds $(seq 0 19)
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mis.io.battery import read_cells
from mis.pipelines.battery.baseline import VarianceModel, rmse_mape
from mis.pipelines.battery.features import cell_window, dq_dv
from mis.pipelines.battery.pipeline import standardised_predictions
from mis.pipelines.battery.preprocess import BatteryArrays, stack_cells
from mis.pipelines.battery.train import BatteryTrainOptions, fit_ensemble

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/battery/mit_severson_qdlin_train_test1_cycles2-100.npz"


def fold_labels(count: int, folds: int, seed: int) -> np.ndarray:
    labels = np.arange(count) % folds
    np.random.default_rng(seed).shuffle(labels)
    return labels


def _least_squares(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-12
    design = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    weights = np.linalg.lstsq(design, y_train, rcond=None)[0]
    return np.c_[(x_test - mean) / std, np.ones(len(x_test))] @ weights


def variance_model(train: BatteryArrays, test: BatteryArrays, options: BatteryTrainOptions) -> np.ndarray:
    return VarianceModel.fit(train.summary[:, 0], train.life).predict(test.summary[:, 0])


def summary_linear(train: BatteryArrays, test: BatteryArrays, options: BatteryTrainOptions) -> np.ndarray:
    return 10.0 ** _least_squares(train.summary, np.log10(train.life), test.summary)


def pcr(train: BatteryArrays, test: BatteryArrays, options: BatteryTrainOptions, components: int = 12) -> np.ndarray:
    """Principal components of the flattened dQ(V) matrices (train-fold PCA), then least squares."""
    x_train = train.curves[:, 1].reshape(len(train), -1).astype(np.float64)
    x_test = test.curves[:, 1].reshape(len(test), -1).astype(np.float64)
    mean = x_train.mean(0)
    basis = np.linalg.svd(x_train - mean, full_matrices=False)[2][:components]
    return 10.0 ** _least_squares((x_train - mean) @ basis.T, np.log10(train.life), (x_test - mean) @ basis.T)


def policy_charge_time(policy: str) -> float:
    """Minutes from 0 to 80 % state of charge for an MIT two-step policy such as '5.4C(40%)-3.6C'."""
    c1, switch, c2 = map(float, re.match(r"([\d.]+)C\(([\d.]+)%\)-([\d.]+)C", policy).groups())
    switch /= 100.0
    return 60.0 * (switch / c1 + max(0.8 - switch, 0.0) / c2)


def candidate_features(cells, n_cycles: int, policies: list[str]) -> dict[str, np.ndarray]:
    """One value per cell for each screened feature, from the full 1000-point curves of cycles 2..N."""
    voltage = cells[0].voltage
    windows = [cell_window(cell, n_cycles, voltage).qd for cell in cells]   # [T, 1000] each, row 0 = cycle 2
    last, ref, middle = n_cycles - 2, max(n_cycles // 10, 2) - 2, n_cycles // 2 - 2

    def log_var(rows):
        return np.log10(np.array([np.var(rows(w)) for w in windows]))

    def peak_voltage(row):
        return voltage[np.argmax(np.abs(dq_dv(row[None], voltage, 25)[0]))]

    return {
        "log var dQ(N-2)": log_var(lambda w: w[last] - w[0]),
        "log var dQ(N-N/2)": log_var(lambda w: w[last] - w[middle]),
        "log var dQ(N/2-ref)": log_var(lambda w: w[middle] - w[ref]),
        "mean dQ(N-ref)": np.array([np.mean(w[last] - w[ref]) for w in windows]),
        "V at min dQ(N-ref)": np.array([voltage[np.argmin(w[last] - w[ref])] for w in windows]),
        "dQ/dV peak shift": np.array([peak_voltage(w[last]) - peak_voltage(w[ref]) for w in windows]),
        "policy charge time": np.array([policy_charge_time(p) for p in policies]),
    }


def with_feature(values: np.ndarray, positions: dict[str, int]):
    """summary linear on the six summary features plus one screened feature (looked up by cell name)."""
    def predict(train: BatteryArrays, test: BatteryArrays, options: BatteryTrainOptions) -> np.ndarray:
        extra = lambda a: values[[positions[name] for name in a.names]][:, None]  # noqa: E731
        x_train, x_test = np.c_[train.summary, extra(train)], np.c_[test.summary, extra(test)]
        return 10.0 ** _least_squares(x_train, np.log10(train.life), x_test)
    return predict


def fpnn(train: BatteryArrays, test: BatteryArrays, options: BatteryTrainOptions) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        options.out = Path(tmp)
        model, normalizer, _ = fit_ensemble(train, options)
    return normalizer.life(standardised_predictions(model, normalizer, test.curves, test.summary))


def cross_validate(arrays: BatteryArrays, predict, folds: int, seed: int, n_cycles: int) -> tuple[float, float]:
    labels = fold_labels(len(arrays), folds, seed)
    predicted = np.zeros(len(arrays))
    for fold in range(folds):
        held_out = labels == fold
        options = BatteryTrainOptions(out=Path("."), n_cycles=n_cycles, progress=False)
        predicted[held_out] = predict(arrays.take(~held_out), arrays.take(held_out), options)
    return rmse_mape(predicted, arrays.life)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--no-fpnn", action="store_true")
    parser.add_argument("--screen", action="store_true", help="also screen candidate summary features")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (real MIT cells needed)")
        return 0
    cells = [c for c in read_cells(args.data) if c.split == "train"]
    arrays = stack_cells(cells, args.cycles, cells[0].voltage)
    models = {"variance (Severson)": variance_model, "summary linear": summary_linear, "PCR, 12 components": pcr}
    if args.screen:
        positions = {name: i for i, name in enumerate(arrays.names)}
        policies = [c.meta["charging_policy"] for c in cells]
        for name, values in candidate_features(cells, args.cycles, policies).items():
            models[f"+ {name}"] = with_feature(values, positions)
    if not args.no_fpnn:
        models["FPNN (mis defaults)"] = fpnn
    print(f"{args.folds}-fold cross-validation on {len(arrays)} training cells, N = {args.cycles}, "
          f"fold assignments {args.fold_seeds}; RMSE in cycles / MAPE in %")
    print(f"{'model':>24} | {'RMSE':>6} | {'MAPE':>6} | RMSE over assignments | seconds")
    for name, predict in models.items():
        start = time.perf_counter()
        scores = np.array([cross_validate(arrays, predict, args.folds, seed, args.cycles) for seed in args.fold_seeds])
        spread = (" ".join(f"{r:.0f}" for r in scores[:, 0]) if len(scores) <= 3 else
                  f"{scores[:, 0].min():.0f}-{scores[:, 0].max():.0f}, sd {scores[:, 0].std():.1f}")
        print(f"{name:>24} | {scores[:, 0].mean():6.1f} | {scores[:, 1].mean():6.1f} | {spread:<21} | "
              f"{time.perf_counter() - start:7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
