"""`mis demo`: every pipeline that exists, on sample_data/, with the shipped demo weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.errors import MisError
from mis.runtime.config import RuntimeConfig


def find_sample_data(start: Path | None = None) -> Path:
    """sample_data/ next to the source tree (editable install) or in the working directory."""
    candidates = [Path.cwd() / "sample_data", Path(__file__).resolve().parents[3] / "sample_data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise MisError("sample_data/ not found: run `mis demo` from the project folder")


def demo_ct(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    from mis.io.nifti import read_nifti
    from mis.pipelines.ct_segmentation.metrics import dice_hd95
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
    from mis.pipelines.ct_segmentation.run import SegmentOptions, plan_items, segment_files
    from mis.registry import resolve_checkpoint

    pipeline = CTSegmentationPipeline.from_checkpoint(resolve_checkpoint("ct_segmentation", None), runtime)
    inputs = sorted(str(p) for p in (sample / "ct").glob("*.nii.gz") if not p.name.endswith("_labels.nii.gz"))
    items = plan_items(inputs, out / "ct")
    summary = segment_files(pipeline, items, SegmentOptions(statistics=True, preview=True, overwrite=True),
                            workers=runtime.workers, progress=not runtime.quiet)
    rows = []
    for item, result in zip(items, summary.results):
        row = {"pipeline": "segment", "input": Path(item.key).name, "output": str(item.target),
               "status": result.status, "seconds": round(result.seconds, 2), "metric": ""}
        reference = Path(item.key.replace(".nii.gz", "_labels.nii.gz"))
        if result.status == "done" and reference.exists():
            pred, meta = read_nifti(item.target)
            ref, _ = read_nifti(reference)
            scores = dice_hd95(np.rint(pred).astype(int), np.rint(ref).astype(int), sorted(pipeline.labels),
                               meta.spacing, hd95=False)
            row["metric"] = f"mean Dice {np.mean([s['dice'] for s in scores.values()]):.3f}"
        elif result.status == "failed":
            row["metric"] = result.error
        rows.append(row)
    return rows


def demo_battery(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """Both shipped battery models on the synthetic sample cells (NPZ layout and a raw Arbin export)."""
    import time

    from mis.pipelines.battery.pipeline import BatteryLifePipeline
    from mis.pipelines.battery.plot import plot_cell
    from mis.pipelines.battery.run import predict_inputs, write_csv
    from mis.registry import WEIGHTS_DIR

    rows = []
    for n_cycles, name in ((100, "synthetic_cells.npz"), (40, "synthetic_arbin.csv")):
        start = time.perf_counter()
        source = sample / "battery" / name
        pipeline = BatteryLifePipeline.from_checkpoint(WEIGHTS_DIR / f"battery_fpnn_n{n_cycles}.safetensors", runtime)
        cells, predictions = predict_inputs(pipeline, [str(source)])
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


def demo_vocoder(sample: Path, out: Path, runtime: RuntimeConfig) -> list[dict]:
    """The shipped APNet on the sample mel (synthetic vowels), with its LSD against the sample WAV."""
    import time

    from mis.io.audio import read_audio, read_mel, write_wav
    from mis.pipelines.vocoder.evaluate import log_spectral_distance
    from mis.pipelines.vocoder.pipeline import VocoderPipeline, check_mel
    from mis.registry import resolve_checkpoint

    start = time.perf_counter()
    source = sample / "audio" / "synthetic_vowels.npy"
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None), runtime)
    wave = pipeline(check_mel(read_mel(source), pipeline.mel_config, str(source)))
    target = out / "audio" / "synthetic_vowels.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, wave, pipeline.sample_rate)
    reference, _ = read_audio(sample / "audio" / "synthetic_vowels.wav")
    lsd = log_spectral_distance(wave, reference, pipeline.mel_config)
    return [{"pipeline": "vocode", "input": source.name, "output": str(target), "status": "done",
             "seconds": round(time.perf_counter() - start, 2), "metric": f"LSD {lsd:.2f} dB (synthetic speech)"}]


DEMOS = {"ct_segmentation": demo_ct, "battery_life": demo_battery, "vocoder": demo_vocoder}


def run_demo(out: Path, runtime: RuntimeConfig) -> list[dict]:
    sample = find_sample_data()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, demo in DEMOS.items():
        rows.extend(demo(sample, out, runtime))
    return rows
