"""DSA interpolation on the real 1024x1024 cerebral pair on the CPU: seconds and peak memory for N = 1 and
N = 3 new frames, with the encoder run once per pair (mis, the paper's one-pass multi-frame interpolation)
vs once per new frame (the baseline: a two-frame interpolator called N times).

Each measurement runs in a fresh process, so its peak RSS is its own. Networks: the shipped demo (grayscale)
and the paper's configuration (62.3 M parameters, 3 channels, seeded random weights: speed and memory do not
depend on the weights). Both modes give the same frames (checked to 1e-5 in tests/test_interpolate.py).

    python benchmarks/dsa_speed.py [--repeats 2] [--threads 2] [--skip-paper]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIR = ROOT.parent / "shared" / "data" / "dsa"


def measure(network: str, n: int, once: bool, repeats: int, threads: int) -> dict:
    """In this (fresh) process: load, one warm-up, `repeats` timed calls; the median and the peak RSS."""
    import statistics

    import numpy as np
    import torch

    from mis.checkpoints import build_card
    from mis.io.image import read_image, to_unit
    from mis.models.garamost import GaraMoSt, GaraMoStConfig
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline, even_times
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    torch.set_num_threads(threads)
    frames = []
    for name in ("DSA_a.png", "DSA_b.png"):
        image, meta = read_image(PAIR / name)
        frames.append(to_unit(image, meta))
    if network == "demo":
        pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", None),
                                                         RuntimeConfig(device="cpu", quiet=True),
                                                         reuse_encoder=once)
    else:
        torch.manual_seed(0)
        config = GaraMoStConfig.paper(n)
        card = build_card("garamost", config.to_dict(), task="interpolate", preprocessing={"bit_depth": 8})
        pipeline = InterpolationPipeline(GaraMoSt(config), card, reuse_encoder=once)
    times = even_times(n)
    runs = []
    for k in range(repeats + 1):
        start = time.perf_counter()
        out = pipeline(frames[0], frames[1], times).frames
        if k:
            runs.append(time.perf_counter() - start)
    assert out.shape == (n, 1024, 1024) and np.isfinite(out).all()
    return {"seconds": statistics.median(runs), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in pipeline.model.parameters())}


def in_fresh_process(network: str, n: int, once: bool, repeats: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps([network, n, once]), "--repeats", str(repeats),
               "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        network, n, once = json.loads(args.one)
        print(json.dumps(measure(network, n, once, args.repeats, args.threads)))
        return
    if not (PAIR / "DSA_a.png").exists():
        sys.exit(f"the real pair is not at {PAIR}")
    networks = ["demo"] + ([] if args.skip_paper else ["paper"])
    print(f"real 1024x1024 DSA pair, {args.threads} threads, median of {args.repeats} after a warm-up\n")
    print("| network | parameters | N | encoder once per pair s | once per frame s | speed-up | peak MB once | "
          "peak MB per frame |")
    print("|---|---|---|---|---|---|---|---|")
    for network in networks:
        for n in (1, 3):
            once = in_fresh_process(network, n, True, args.repeats, args.threads)
            each = in_fresh_process(network, n, False, args.repeats, args.threads)
            print(f"| {network} | {once['parameters'] / 1e6:.2f} M | {n} | {once['seconds']:.2f} | "
                  f"{each['seconds']:.2f} | {each['seconds'] / once['seconds']:.2f}x | {once['peak_mb']:.0f} | "
                  f"{each['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
