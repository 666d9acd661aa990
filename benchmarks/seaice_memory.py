"""Sea-ice inference memory and speed on the CPU: peak RSS of `mis seaice` for a 2000 x 2000 and an 8000 x 8000
scene (the reference grid), each in a fresh process, and megapixels per second; against the baseline of whole-scene
in-memory inference (both rasters read and aligned in memory, then `pipeline(sar, msi)` on the arrays) at 2000 x 2000.

Both rasters are written at 40 m. The size comparison uses a tiny seeded network of the demo's family (widths 4-16)
with both sensors on the reference grid (ratio 1): memory and I/O are what is measured, not the network. At
2000 x 2000 the same tiny network with the MSI read onto a 4x finer grid (ratio 4, as the demo: 8000 px a side,
upsampled window by window) and the shipped demo itself are timed too.

    python benchmarks/seaice_memory.py [--sizes 2000 8000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def write_scene(folder: Path, size: int) -> tuple[Path, Path]:
    """A SAR (HH, HV dB) raster of size x size at 40 m and an MSI (4 bands, uint16 S2 DNs) at 40 m over the same
    extent, written in 512-row strips so writing never holds the scene."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(size)
    transform = from_origin(-1_500_000.0, 1_500_000.0, 40.0, 40.0)
    common = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:3031", "transform": transform,
              "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    sar, msi = folder / f"sar_{size}.tif", folder / f"msi_{size}.tif"
    with rasterio.open(sar, "w", count=2, dtype="float32", nodata=np.nan, **common) as s, \
            rasterio.open(msi, "w", count=4, dtype="uint16", nodata=0, **common) as m:
        s.descriptions, m.descriptions = ("HH", "HV"), ("B02", "B03", "B04", "B08")
        for row in range(0, size, 512):
            h = min(512, size - row)
            window = rasterio.windows.Window(0, row, size, h)
            ice = (np.sin(np.arange(size)[None, :] / 300.0 + row / 500.0) > 0).repeat(h, axis=0)
            hh = np.where(ice, -12.0, -22.0) + rng.normal(0, 1.5, (h, size))
            s.write(np.stack([hh, hh - 8]).astype(np.float32), window=window)
            dn = np.where(ice, 8000, 1500) + rng.integers(0, 300, (h, size))
            m.write(np.stack([dn] * 4).astype(np.uint16), window=window)
    return sar, msi


def measure(mode: str, size: int, folder: Path, network: str) -> dict:
    """network: "tiny" (ratio 1), "tiny4" (ratio 4) or "demo"."""
    """In this fresh process: one run, its seconds and peak RSS."""
    from contract_cases.seaice import load, make_checkpoint
    from mis.pipelines.seaice.pipeline import SeaIcePipeline
    from mis.pipelines.seaice.run import Pair, SceneOptions, open_scene, seaice_files
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    runtime = RuntimeConfig(device="cpu", quiet=True)
    if network.startswith("tiny"):
        pipeline = load(make_checkpoint(folder, ratio=4 if network == "tiny4" else 1), runtime)
        pipeline = SeaIcePipeline(pipeline.model, pipeline.card, patch=256, overlap=32)
    else:
        pipeline = SeaIcePipeline.from_checkpoint(resolve_checkpoint("seaice", None), runtime)
    sar, msi = folder / f"sar_{size}.tif", folder / f"msi_{size}.tif"
    start = time.perf_counter()
    if mode == "windowed":
        summary = seaice_files(pipeline, [Pair(sar, msi)], folder / f"out_{mode}_{size}_{network}", SceneOptions(),
                               runtime, overwrite=True)
        assert summary.results[0].status == "done", summary.results[0].error
    else:   # the baseline: both rasters aligned into memory, then the pipeline on arrays
        scene = open_scene(pipeline, Pair(sar, msi), SceneOptions())
        from rasterio.windows import Window

        sar_grid, msi_grid = (scene.fine, scene.grid) if pipeline.finer == "sar" else (scene.grid, scene.fine)
        sar_db, _ = scene.sar_reader.read(Window(0, 0, sar_grid.width, sar_grid.height))
        msi_dn, _ = scene.msi_reader.read(Window(0, 0, msi_grid.width, msi_grid.height))
        from mis.io.raster import s2_reflectance

        pipeline(sar_db, s2_reflectance(msi_dn, scene.msi_offset))
        scene.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "megapixels_per_s": size * size / 1e6 / seconds}


def fresh(mode: str, size: int, folder: Path, network: str) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps([mode, size, str(folder), network])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--quick", action="store_true", help="only the windowed tiny-network runs (the RSS ratio)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, size, folder, network = json.loads(args.one)
        print(json.dumps(measure(mode, size, Path(folder), network)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("| scene (reference grid) | network | mode | seconds | Mpx/s | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        rows = []
        for size in args.sizes:
            write_scene(folder, size)
            runs = [("windowed", "tiny")]
            if size <= 2000 and not args.quick:
                runs += [("whole scene in memory", "tiny"), ("windowed", "tiny4"), ("windowed", "demo")]
            for mode, network in runs:
                r = fresh("windowed" if mode == "windowed" else "memory", size, folder, network)
                rows.append((size, mode, network, r))
                if "error" in r:
                    print(f"| {size} x {size} | {network} | {mode} | failed: {r['error']} | | |", flush=True)
                else:
                    print(f"| {size} x {size} | {network} | {mode} | {r['seconds']:.1f} | {r['megapixels_per_s']:.2f} | "
                          f"{r['peak_mb']:.0f} |", flush=True)
        windowed = {s: r["peak_mb"] for s, m, n, r in rows if m == "windowed" and n == "tiny" and "peak_mb" in r}
        if len(windowed) == 2:
            small, large = sorted(windowed)
            print(f"\npeak RSS {large} / {small}: {windowed[large] / windowed[small]:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
