"""Crowd-counting accuracy of the shipped demos on fresh synthetic scenes (seeds no training or validation used),
against the baseline that needs no training: predicting the training pool's mean count for every image. Also the
real ShanghaiTech Part A sample (170 heads), reported as it is: the demos never saw a real crowd.

The issue's goal: MAE <= 10 % of the mean count for the demo M-SFANet on fresh synthetic scenes.

    python benchmarks/crowd_quality.py [--scenes 60] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_SEED = 20_000_000
REAL_IMAGE = ROOT.parent / "shared" / "data" / "crowd" / "SHTA_test_IMG_4.jpg"
REAL_POINTS = ROOT.parent / "shared" / "data" / "crowd" / "SHTA_test_GT_IMG_4.mat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mis.checkpoints import read_card
    from mis.io.image import read_image
    from mis.io.points import read_points
    from mis.pipelines.count.density import count_metrics, density_from_points, game
    from mis.pipelines.count.pipeline import CountPipeline
    from mis.pipelines.count.synthetic import make_crowd_scene
    from mis.registry import resolve_checkpoint

    models = {name: resolve_checkpoint("count", name) for name in ("count_msfanet_demo", "count_msegnet_demo")}
    card = read_card(models["count_msfanet_demo"])
    h, w = card["training"]["synthetic_size"]
    seed = card["training"]["seed"]
    pool_counts = [len(make_crowd_scene(seed * 100_003 + k, height=h, width=w).points)
                   for k in range(card["training"]["synthetic_scenes"])]
    mean_count = float(np.mean(pool_counts))
    scenes = [make_crowd_scene(TEST_SEED + k, height=h, width=w) for k in range(args.scenes)]
    truth = [float(len(s.points)) for s in scenes]
    print(f"{args.scenes} fresh synthetic scenes {w}x{h}, mean count {np.mean(truth):.1f} (range {min(truth):.0f}-"
          f"{max(truth):.0f}); baseline: the training pool's mean count {mean_count:.1f} for every image\n")
    print("| model | MAE | MSE (RMSE) | MAE / mean count | GAME(1) | GAME(2) | s / image |")
    print("|---|---|---|---|---|---|---|")
    base = count_metrics([mean_count] * len(scenes), truth)
    print(f"| mean count (no training) | {base['mae']:.1f} | {base['rmse']:.1f} | "
          f"{100 * base['mae'] / np.mean(truth):.1f} % | | | |")
    real, per_scene = {}, {}
    for name, path in models.items():
        pipeline = CountPipeline.from_checkpoint(path)
        sigma = pipeline.card["preprocessing"].get("sigma", "fixed:5")
        start = time.perf_counter()
        outputs = [pipeline(s.image) for s in scenes]
        seconds = (time.perf_counter() - start) / len(scenes)
        metrics = count_metrics([o.count for o in outputs], truth)
        per_scene[name] = np.array([o.count for o in outputs])
        games = {level: np.mean([game(o.density, density_from_points(s.points, s.image.shape[:2], sigma), level)
                                 for o, s in zip(outputs, scenes)]) for level in (1, 2)}
        print(f"| {name} | {metrics['mae']:.1f} | {metrics['rmse']:.1f} | "
              f"{100 * metrics['mae'] / np.mean(truth):.1f} % | {games[1]:.1f} | {games[2]:.1f} | {seconds:.3f} |",
              flush=True)
        if REAL_IMAGE.exists():
            image, _ = read_image(REAL_IMAGE)
            real[name] = pipeline(image).count
    print_by_range(per_scene, np.array(truth), mean_count)
    if real:
        true_count = len(read_points(REAL_POINTS)[0])
        print(f"\nreal ShanghaiTech Part A IMG_4 ({true_count} heads, never seen): " +
              ", ".join(f"{name} {count:.1f}" for name, count in real.items()) +
              f"; the mean-count baseline says {mean_count:.1f}")


RANGES = ((0, 30), (30, 500), (500, 10 ** 9))   # sparse / medium / dense scenes


def print_by_range(per_scene: dict[str, np.ndarray], truth: np.ndarray, mean_count: float) -> None:
    """Where each model's error comes from: mean signed error (bias) and MAE per count range, and the range's share
    of the model's total absolute error."""
    print("\n| model | heads | scenes | mean count | bias | MAE | share of the absolute error |")
    print("|---|---|---|---|---|---|---|")
    rows = {"mean count (no training)": np.full(len(truth), mean_count), **per_scene}
    for name, counts in rows.items():
        error = counts - truth
        for low, high in RANGES:
            inside = (truth >= low) & (truth < high)
            if not inside.any():
                continue
            label = f"{low}-{high - 1}" if high < 10 ** 9 else f">= {low}"
            print(f"| {name} | {label} | {int(inside.sum())} | {truth[inside].mean():.0f} | "
                  f"{error[inside].mean():+.1f} | {np.abs(error[inside]).mean():.1f} | "
                  f"{np.abs(error[inside]).sum() / np.abs(error).sum():.0%} |")


if __name__ == "__main__":
    sys.exit(main())
