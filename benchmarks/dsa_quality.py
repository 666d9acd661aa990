"""Interpolation quality of the shipped demo: every other frame (and 3 of 4) dropped and interpolated back,
PSNR and SSIM against linear blending and the nearest frame on the same frames in the same run.

Sequences: the real coronary angiography cine in ../shared/data/dsa (37 frames, 512 x 512, which the demo
never saw: it is trained on synthetic sequences only) and fresh synthetic DSA and coronary sequences from
seeds no training run uses.

    python benchmarks/dsa_quality.py [--synthetic 6] [--model PATH]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mis.pipelines.interpolate.evaluate import evaluate_sequence
from mis.pipelines.interpolate.pipeline import InterpolationPipeline
from mis.pipelines.interpolate.synthetic import make_sequence
from mis.registry import resolve_checkpoint
from mis.runtime.config import RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "dsa" / "xca_vukicevic_sample2" / "projection0"
FRESH_SEED = 20_000_000     # far from the training pool (seed * 100003 + k) and validation (10_000_000 + k) seeds


def write_synthetic(folder: Path, seed: int, kind: str) -> Path:
    frames = make_sequence(seed, kind=kind, size=(256, 256), frames=17).frames
    folder.mkdir(parents=True)
    for k, frame in enumerate(frames, start=1):
        Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(folder / f"frame_{k:03d}.png")
    return folder


def row(name: str, drop: int, scores: list[dict]) -> str:
    mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0] if k.endswith(("_psnr", "_ssim"))}
    return (f"| {name} | {drop} | {sum(s['gaps'] for s in scores)} | {mean['model_psnr']:.2f} | "
            f"{mean['linear_psnr']:.2f} | {mean['nearest_psnr']:.2f} | {mean['model_psnr'] - mean['linear_psnr']:+.2f} | "
            f"{mean['model_ssim']:.4f} | {mean['linear_ssim']:.4f} | {mean['nearest_ssim']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=6, help="fresh synthetic sequences per kind")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", args.model),
                                                     RuntimeConfig(device="cpu", quiet=True))
    print("| sequences | dropped per gap | gaps | PSNR model | PSNR linear | PSNR nearest | model - linear dB | "
          "SSIM model | SSIM linear | SSIM nearest |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if REAL.exists():
        for drop in (1, 3):
            print(row("real coronary XCA (37 frames, 512 px)", drop, [evaluate_sequence(pipeline, REAL, drop)]),
                  flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("dsa", "xca"):
            folders = [write_synthetic(Path(tmp) / f"{kind}{k}", FRESH_SEED + k, kind) for k in range(args.synthetic)]
            for drop in (1, 3):
                scores = [evaluate_sequence(pipeline, folder, drop) for folder in folders]
                print(row(f"fresh synthetic {kind.upper()} ({args.synthetic} x 17 frames, 256 px)", drop, scores),
                      flush=True)


if __name__ == "__main__":
    main()
