"""CT sliding-window inference: `mis` vs MONAI `sliding_window_inference` with its defaults.

Same network (the shipped demo PCT-Net), same volume (the real example CT, resampled to the model
grid), same overlap. MONAI defaults: sw_batch_size 1, constant blending, no body crop, every
window through the network. Ours: body crop, air windows skipped, batched windows, Gaussian
blending. Each variant runs in its own subprocess so peak memory (max RSS) is comparable.
Also: end-to-end seconds for the example CT (read, segment, write) on this CPU (goal <= 10 s).
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
EXAMPLE_CT = ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator" / "example_ct.nii.gz"
SAMPLE_CT = ROOT / "sample_data" / "ct" / "phantom_abdomen.nii.gz"


def volume_path() -> Path:
    return EXAMPLE_CT if EXAMPLE_CT.exists() else SAMPLE_CT


def run_variant(variant: str, overlap: float, repeats: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from mis.io.volume import read_volume
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
    from mis.pipelines.ct_segmentation.preprocess import image_to_grid
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    window_batch = 1 if variant == "mis_b1" else 2
    pipeline = CTSegmentationPipeline.from_checkpoint(
        resolve_checkpoint("ct_segmentation", None),
        RuntimeConfig(device="cpu", precision="fp32", batch_size=window_batch), overlap=overlap)
    image, meta = read_volume(volume_path())
    grid, _ = image_to_grid(image, meta, pipeline.preprocessing)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, windows = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        if variant == "monai":
            with torch.no_grad():
                probs = sliding_window_inference(grid[None, None], pipeline.roi_size, 1,
                                                 lambda x: torch.softmax(pipeline.model(x), 1), overlap=overlap)
            labels = probs.argmax(1)
        elif variant in ("mis", "mis_b1"):
            probs, info = pipeline.grid_probabilities(image, meta)
            labels = probs.argmax(0)
            windows = info["windows"] - info["windows_skipped"]
        else:  # end to end: read + segment + write, as `mis segment` does for one file
            import tempfile

            from mis.io.nifti import write_nifti
            image, meta = read_volume(volume_path())
            result = pipeline(image, meta)
            with tempfile.TemporaryDirectory() as tmp:
                write_nifti(Path(tmp) / "seg.nii.gz", result.labels, meta)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "seconds": min(times), "peak_rss_mb": peak / 1024,
            "extra_rss_mb": (peak - baseline_rss) / 1024, "grid": list(grid.shape), "windows_run": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.overlap, args.repeats)))
        return
    results = {}
    for variant in ("monai", "mis", "mis_b1", "end_to_end"):
        done = subprocess.run([sys.executable, __file__, "--variant", variant, "--overlap", str(args.overlap),
                               "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    monai, ours, ours_b1, e2e = results["monai"], results["mis"], results["mis_b1"], results["end_to_end"]
    import torch
    print(f"volume: {volume_path().name}, model grid {monai['grid']}, overlap {args.overlap}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'inference':44s} {'seconds':>8s} {'peak RSS MB':>12s} {'windows run':>12s}")
    print(f"{'MONAI sliding_window_inference (defaults)':44s} {monai['seconds']:8.2f} {monai['peak_rss_mb']:12.0f} "
          f"{'all':>12s}")
    print(f"{'mis (crop + skip air + batched, Gaussian)':44s} {ours['seconds']:8.2f} {ours['peak_rss_mb']:12.0f} "
          f"{ours['windows_run']:12d}")
    print(f"{'mis --batch-size 1':44s} {ours_b1['seconds']:8.2f} {ours_b1['peak_rss_mb']:12.0f} "
          f"{ours_b1['windows_run']:12d}")
    for name, row in (("mis", ours), ("mis --batch-size 1", ours_b1)):
        print(f"throughput ratio {name}/MONAI: {monai['seconds'] / row['seconds']:.2f}x (goal >= 1.5x); peak memory "
              f"{row['peak_rss_mb'] - monai['peak_rss_mb']:+.0f} MB vs MONAI "
              f"({'not more' if row['peak_rss_mb'] <= monai['peak_rss_mb'] * 1.01 else 'MORE'})")
    print(f"end to end (read + segment + write) {volume_path().name}: {e2e['seconds']:.2f} s (goal <= 10 s)")


if __name__ == "__main__":
    main()
