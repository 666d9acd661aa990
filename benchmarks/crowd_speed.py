"""Crowd-counting speed on the CPU: M-SegNet vs M-SFANet images per second at 640 x 480 (the paper's point: M-SegNet,
without ASPP and CAN, is the fast one), one image at a time vs batches of 8 (a video's frames), for upstream's widths
(seeded weights: speed does not depend on training) and the shipped demos; and a 4000 x 3000 image counted in
1024 px tiles, its peak RSS against a 1000 x 750 image's and against the same image in one pass (the baseline without
tiling), each in a fresh process. What still grows with the image is its own arrays (the image, its normalised copy,
the density and attention maps on its pixels: about 33 bytes a pixel); the network's share is one batch of tiles.
The large scenes hold one person per 600 pixels, so their heads are the size the demos were trained on (a drawn
count would spread a few hundred people with 50 px heads over 4000 x 3000), and their true count is printed.

    python benchmarks/crowd_speed.py [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def pipeline_for(variant: str, preset: str):
    from mis.checkpoints import build_card
    from mis.models.sfanet import SFANet, SFANetConfig
    from mis.pipelines.count.pipeline import CountPipeline, preprocessing_for
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    if preset == "demo":
        name = {"m-sfanet": "count_msfanet_demo", "m-segnet": "count_msegnet_demo"}[variant]
        return CountPipeline.from_checkpoint(resolve_checkpoint("count", name), RuntimeConfig(batch_size=8))
    torch.manual_seed(0)
    config = SFANetConfig.paper(variant)
    card = build_card("sfanet", config.to_dict(), task="count", preprocessing=preprocessing_for(3))
    return CountPipeline(SFANet(config), card, batch_size=8)


def images_per_second(pipeline, images: list[np.ndarray], batched: bool, repeats: int) -> float:
    pipeline.batch(images[:1])                       # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if batched:
            pipeline.batch(images)
        else:
            for image in images:
                pipeline(image)
        times.append(time.perf_counter() - start)
    return len(images) / float(np.median(times))


PIXELS_PER_PERSON = 600   # a dense crowd at the demos' training scale (heads of 2-6 px radius)


def peak_rss(size: tuple[int, int], tile: int) -> dict:
    """In this fresh process: count one synthetic image of `size` with the demo M-SFANet in `tile` px tiles."""
    from mis.pipelines.count.pipeline import CountPipeline
    from mis.pipelines.count.synthetic import make_crowd_scene
    from mis.registry import resolve_checkpoint

    h, w = size
    scene = make_crowd_scene(7, height=h, width=w, count=h * w // PIXELS_PER_PERSON)
    image = scene.image
    pipeline = CountPipeline.from_checkpoint(resolve_checkpoint("count", "count_msfanet_demo"), tile=tile)
    start = time.perf_counter()
    count = pipeline(image).count
    return {"seconds": time.perf_counter() - start, "count": count, "truth": len(scene.points),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tiles": len(pipeline.layout(h, w)[2])}


def fresh(size: tuple[int, int], tile: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps([*size, tile]), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        h, w, tile = json.loads(args.one)
        print(json.dumps(peak_rss((h, w), tile)))
        return
    from mis.pipelines.count.synthetic import make_crowd_scene

    images = [make_crowd_scene(k, height=480, width=640).image for k in range(8)]
    print(f"640 x 480 images, {args.threads} threads, median of {args.repeats}\n")
    print("| network | widths | parameters | one by one img/s | batches of 8 img/s |")
    print("|---|---|---|---|---|")
    for preset in ("paper", "demo"):
        for variant in ("m-sfanet", "m-segnet"):
            pipeline = pipeline_for(variant, preset)
            parameters = sum(p.numel() for p in pipeline.model.parameters())
            single = images_per_second(pipeline, images, False, args.repeats)
            batched = images_per_second(pipeline, images, True, args.repeats)
            print(f"| {variant} | {preset} | {parameters / 1e6:.2f} M | {single:.2f} | {batched:.2f} |", flush=True)
    print("\n| image | tile px | tiles | seconds | count | true count | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for size, tile in (((750, 1000), 1024), ((3000, 4000), 1024), ((3000, 4000), 4096)):
        r = fresh(size, tile, args.threads)
        rows[size, tile] = r
        label = f"{size[1]} x {size[0]}"
        if "error" in r:
            print(f"| {label} | {tile} | failed: {r['error']} | | | | |")
        else:
            print(f"| {label} | {tile} | {r['tiles']} | {r['seconds']:.1f} | {r['count']:.1f} | {r['truth']} | "
                  f"{r['peak_mb']:.0f} |", flush=True)
    if all("peak_mb" in r for r in rows.values()):
        small, large = rows[(750, 1000), 1024]["peak_mb"], rows[(3000, 4000), 1024]["peak_mb"]
        whole = rows[(3000, 4000), 4096]["peak_mb"]
        print(f"\npeak RSS, 4000 x 3000 tiled / 1000 x 750: {large / small:.2f}x for 16x the pixels; "
              f"tiled / one pass: {large / whole:.2f}x")


if __name__ == "__main__":
    main()
