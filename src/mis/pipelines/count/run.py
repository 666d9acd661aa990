"""File-level glue for `mis count`: images (files, folders such as a video's frames, patterns) -> a count per image,
its density map (`<name>_density.npy`, float32 on the image's pixels, summing to the count) and an overlay
(`<name>_overlay.png`: the density as a heat map over the image, the count written on it), through the shared batch
runner (bad images reported and skipped, atomic writes, --skip-existing / --overwrite, torchrun sharding).
Images of the same size share batches (a video's frames); EXIF orientation is applied before counting.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.io.atomic import atomic_output, atomic_write_text
from mis.io.files import source_target_pairs
from mis.io.image import IMAGE, read_image, write_image
from mis.pipelines.count.pipeline import CountOutput, CountPipeline
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import OUTPUT_EXISTS, RunSummary, WorkItem

DENSITY_SUFFIX = "_density"
OVERLAY_SUFFIX = "_overlay.png"


@dataclass(kw_only=True)
class CountOptions:
    overlay: bool = True
    overwrite: bool = False


def overlay_path(density_target: Path) -> Path:
    """`<name>_density.npy` -> `<name>_overlay.png`; an -o file of another name, `x.npy` -> `x_overlay.png`."""
    name = density_target.name
    stem = name[: -len(DENSITY_SUFFIX + ".npy")] if name.endswith(DENSITY_SUFFIX + ".npy") else name[: -len(".npy")]
    return density_target.with_name(stem + OVERLAY_SUFFIX)


def is_own_overlay(source: Path, output: Path) -> bool:
    folder = output if output.suffix.lower() != ".npy" else output.parent
    return source.name.endswith(OVERLAY_SUFFIX) and source.parent.resolve() == folder.resolve()


def plan(inputs: list[str], output: Path, options: CountOptions, *, skip_existing: bool = False) -> list[WorkItem]:
    """One item per image, its target `<name>_density.npy` in the folder `output`; the overlay beside it is checked
    here, so that an image's outputs are never half replaced or half skipped."""
    items = []
    for source, target, problem in source_target_pairs(inputs, output, kinds=(IMAGE,), suffix=".npy",
                                                        stem_suffix=DENSITY_SUFFIX):
        if is_own_overlay(source, output):
            continue          # an earlier run's overlay in the folder being counted again is not a photo
        if problem is None and options.overlay and not options.overwrite:
            overlay = overlay_path(target)
            if overlay.exists() and not (skip_existing and target.exists()):
                problem = f"{overlay}: {OUTPUT_EXISTS}"
        items.append(WorkItem(str(source), source, target, problem))
    return items


def heat_overlay(image: np.ndarray, density: np.ndarray, count: float) -> np.ndarray:
    """uint8 [H, W, 3]: the image in gray, the density in an 'inferno' heat map blended where it is high, and the
    count written in the corner. The map is scaled to its 99.5th percentile so a few dense heads do not wash out
    the rest."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    gray = image.astype(np.float32)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    top = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else max(float(gray.max()), 1e-6)
    gray = np.clip(gray / top, 0, 1)
    positive = np.clip(density, 0, None)
    scale = float(np.percentile(positive, 99.5)) or float(positive.max()) or 1.0
    heat = np.clip(positive / scale, 0, 1)
    colours = colormaps["inferno"](heat)[..., :3].astype(np.float32)
    alpha = (0.25 + 0.65 * heat)[..., None]
    blended = (1 - alpha) * gray[..., None] + alpha * colours
    picture = Image.fromarray(np.round(blended * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    size = max(12, min(picture.size) // 12)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:                  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    text = f"count {count:.0f}"
    box = draw.textbbox((0, 0), text, font=font)
    pad = size // 4
    draw.rectangle((0, 0, box[2] + 2 * pad, box[3] + 2 * pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def write_density(target: Path, density: np.ndarray) -> Path:
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, density.astype(np.float32))
    return target


def count_job(pipeline: CountPipeline, options: CountOptions) -> BatchJob:
    def read(item: WorkItem):
        image, meta = read_image(item.source, alpha="refuse")
        return image, meta

    def compute(batch):
        outputs = pipeline.batch([image for image, _ in batch], [meta.path for _, meta in batch])
        return [(output, image) for output, (image, _) in zip(outputs, batch)]

    def write(item: WorkItem, result: tuple[CountOutput, np.ndarray]) -> dict:
        output, image = result
        written = [write_density(item.target, output.density)]
        if options.overlay:
            try:
                written.append(write_image(overlay_path(item.target), heat_overlay(image, output.density,
                                                                                   output.count)))
            except BaseException:
                item.target.unlink(missing_ok=True)       # an image's outputs are written whole or not at all
                raise
        return {"count": round(output.count, 2), "size": f"{image.shape[1]}x{image.shape[0]}",
                "overlay": str(written[1]) if len(written) > 1 else None}

    def same_size(a, b) -> bool:
        return a[0].shape == b[0].shape

    return BatchJob(read=read, compute=compute, write=write, batch_size=pipeline.batch_size, batchable=same_size,
                    description="count")


def count_files(pipeline: CountPipeline, inputs: list[str], output: Path, options: CountOptions,
                runtime: RuntimeConfig | None = None, *, skip_existing: bool = False) -> RunSummary | None:
    items = plan(inputs, output, options, skip_existing=skip_existing)
    return run_batch(items, lambda device: count_job(pipeline.on_device(device) if device else pipeline, options),
                     runtime or RuntimeConfig(quiet=True), skip_existing=skip_existing, overwrite=options.overwrite)


def write_counts_csv(path: Path, summary: RunSummary) -> Path:
    """image,count,status,error: one row per input, in the run's order (failed images keep their row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "count", "status", "error"])
    for result in summary.results:
        count = result.info.get("count")
        writer.writerow([result.source, "" if count is None else f"{count:.2f}", result.status, result.error or ""])
    return atomic_write_text(path, buffer.getvalue())
