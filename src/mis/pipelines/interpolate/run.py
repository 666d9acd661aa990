"""File-level glue for `mis interpolate`: a pair of images, or whole sequences (numbered-frame folders,
multi-frame DICOM, NIfTI 2D+t), through the shared batch runner (bad items reported and skipped, atomic
writes, --skip-existing / --overwrite, torchrun sharding).

A sequence is written in its own format with the new frames in place: a folder of numbered frames in the
input's naming style, a new DICOM series (new UIDs, frame count and frame time updated, source tags kept), or
a NIfTI with the time step updated; 8- and 16-bit frames stay so. `--preview` adds an animated GIF.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.atomic import atomic_output
from mis.io.files import input_stem, output_paths_for, source_target_pairs
from mis.io.frames import SEQUENCE, read_sequence, write_preview, write_sequence
from mis.io.image import IMAGE, from_unit, read_image, to_unit, write_image
from mis.pipelines.interpolate.pipeline import InterpolationPipeline, check_times, sequence_plan
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem

SEQUENCE_SUFFIX = {"folder": "", "dicom": ".dcm", "nifti": ".nii.gz"}


@dataclass(kw_only=True)
class SequenceOptions:
    factor: int | None = None             # k: k - 1 new frames per gap
    times: tuple[float, ...] | None = None
    fps: float | None = None
    preview: bool = False


def check_bit_depth(pipeline: InterpolationPipeline, bit_depth: int, source: str | Path) -> None:
    """A 16-bit frame through a model trained on 8-bit ones would be scaled into a range it never saw."""
    if bit_depth > pipeline.bit_depth:
        raise InputError(source, f"{bit_depth}-bit frames, but this model was trained on {pipeline.bit_depth}-bit "
                         f"frames: convert them to {pipeline.bit_depth}-bit or use a {bit_depth}-bit model")


# ---- two images ---------------------------------------------------------------------------------------
def pair_names(first: Path, second: Path, times: Sequence[float]) -> list[str]:
    return [f"{input_stem(first)}_{input_stem(second)}_t{t:.3f}.png" for t in times]


def plan_pair(first: Path, second: Path, output: Path, times: Sequence[float]) -> list[WorkItem]:
    target = output / pair_names(first, second, times)[0]
    return [WorkItem(f"{first.name} + {second.name}", first, target)]


def pair_job(pipeline: InterpolationPipeline, second: Path, times: tuple[float, ...]) -> BatchJob:
    def read(item: WorkItem):
        frames, metas = [], []
        for path in (item.source, second):
            image, meta = read_image(path)
            check_bit_depth(pipeline, meta.bit_depth, path)
            frames.append(to_unit(image, meta))
            metas.append(meta)
        if metas[0].bit_depth != metas[1].bit_depth:
            raise InputError(second, f"{metas[1].bit_depth}-bit, but {item.source.name} is {metas[0].bit_depth}-bit")
        return frames, metas[0]

    def compute(batch):
        return [(pipeline(f0, f1, times, source=str(second)).frames, meta) for (f0, f1), meta in batch]

    def write(item: WorkItem, output) -> dict:
        frames, meta = output
        names = pair_names(item.source, second, times)
        for frame, name in zip(frames, names):
            write_image(item.target.parent / name, from_unit(frame, meta), bit_depth=meta.bit_depth)
        return {"frames": len(names), "size": f"{frames.shape[2]}x{frames.shape[1]}"}

    return BatchJob(read=read, compute=compute, write=write, description="interpolate")


# ---- sequences ------------------------------------------------------------------------------------------
def plan_sequences(inputs: list[str], output: Path) -> list[WorkItem]:
    """One item per sequence; the target is named after it with the suffix of its own format (decided when
    it is read, so the planned target carries no suffix unless -o names one file)."""
    pairs = source_target_pairs(inputs, output, kinds=(SEQUENCE,), suffix="", stem_suffix="_interp",
                                file_suffixes=(".dcm", ".nii.gz", ".nii"))
    items = []
    for source, target, problem in pairs:
        if not problem and target.suffix == "" and source.is_file():
            target = target.with_name(target.name + sequence_suffix(source))
        items.append(WorkItem(str(source), source, target, problem))
    return items


def sequence_suffix(source: Path) -> str:
    name = source.name.lower()
    return ".nii.gz" if name.endswith((".nii", ".nii.gz")) else ".dcm"


def output_frame_time(meta_time: float | None, plan: list[tuple[int, float]], count: int,
                      options: SequenceOptions) -> float | None:
    if options.fps:
        return 1000.0 / options.fps
    if meta_time is None:
        return None
    return meta_time * (count - 1) / (len(plan) - 1)   # the same duration over more frames (even for --times)


def sequence_job(pipeline: InterpolationPipeline, options: SequenceOptions) -> BatchJob:
    def read(item: WorkItem):
        frames, meta = read_sequence(item.source)
        check_bit_depth(pipeline, meta.bit_depth, item.source)
        plan = sequence_plan(len(frames), factor=options.factor, times=options.times, fps=options.fps,
                             frame_time_ms=meta.frame_time_ms, source=str(item.source))
        return frames, meta, plan

    def compute(batch):
        return [interpolate_sequence(pipeline, *entry) for entry in batch]

    def write(item: WorkItem, output) -> dict:
        frames, meta, plan, count = output
        inserted = [t > 0 for _, t in plan]
        frame_time = output_frame_time(meta.frame_time_ms, plan, count, options)
        target = write_sequence(frames, meta, item.target, frame_time_ms=frame_time, inserted=inserted)
        info = {"frames_in": count, "frames_out": len(frames), "inserted": int(sum(inserted)),
                "format": meta.format}
        if frame_time:
            info["frame_time_ms"] = round(frame_time, 3)
        if options.preview:
            preview = target.with_name(input_stem(target) + "_preview.gif")
            write_preview(frames, preview, fps=1000.0 / frame_time if frame_time else 10.0)
            info["preview"] = str(preview)
        return info

    return BatchJob(read=read, compute=compute, write=write, description="interpolate")


def interpolate_sequence(pipeline: InterpolationPipeline, frames: np.ndarray, meta, plan: list[tuple[int, float]]):
    """Stored frames -> the output sequence in the stored dtype (converted frame by frame: memory holds the
    input, the output and one batch of float frames)."""
    unit = np.stack([to_unit(frame, meta.image) for frame in frames])
    out = np.empty((len(plan), *frames.shape[1:]), dtype=frames.dtype)
    for k, frame in enumerate(pipeline.iter_sequence(unit, plan, source=str(meta.source))):
        out[k] = frame if plan[k][1] == 0 else from_unit(frame, meta.image)
    for k, (i, t) in enumerate(plan):
        if t == 0:
            out[k] = frames[i]   # the acquired frames exactly as stored
    return out, meta, plan, len(frames)


def interpolate_files(pipeline: InterpolationPipeline, items: list[WorkItem], job_options, runtime: RuntimeConfig,
                      *, second: Path | None = None, skip_existing: bool = False, overwrite: bool = False
                      ) -> RunSummary | None:
    """Pair mode when `second` is given (job_options: the timesteps), else sequences (a SequenceOptions)."""
    def build(device):
        p = pipeline.on_device(device) if device else pipeline
        return pair_job(p, second, job_options) if second is not None else sequence_job(p, job_options)

    return run_batch(items, build, runtime, skip_existing=skip_existing, overwrite=overwrite)
