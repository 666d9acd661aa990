"""File-level glue for `mis interpolate`: a pair of images, or whole sequences (numbered-frame folders,
multi-frame DICOM, NIfTI 2D+t), through the shared batch runner (bad items reported and skipped, atomic
writes, --skip-existing / --overwrite, torchrun sharding).

A sequence is written in its own format with the new frames in place: a folder of numbered frames in the
input's naming style, a new DICOM series (new UIDs, frame count and frame time updated, source tags kept), or
a NIfTI with the time step updated; 8- and 16-bit frames stay so. `--preview` adds an animated GIF.
"""
from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError, UsageError
from mis.io.files import check_output_location, input_stem, output_paths_for, path_key, resolve_each
from mis.io.frames import SEQUENCE, read_sequence, write_preview, write_sequence
from mis.io.image import ImageMeta, from_unit, read_image, to_unit, write_image
from mis.pipelines.interpolate.pipeline import InterpolationPipeline, keeps_every_input, sequence_plan
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import OUTPUT_EXISTS, RunSummary, WorkItem

@dataclass(kw_only=True)
class SequenceOptions:
    factor: int | None = None             # k: k - 1 new frames per gap
    times: tuple[float, ...] | None = None
    fps: float | None = None
    preview: bool = False
    overwrite: bool = False               # also for the preview GIF beside each output


def check_bit_depth(pipeline: InterpolationPipeline, image: ImageMeta, source: str | Path) -> None:
    """A 16-bit frame through a model trained on 8-bit ones would be scaled into a range it never saw. The
    message names the bits actually used (a 12-bit XA stores its pixels in 16-bit words)."""
    if image.bit_depth <= pipeline.bit_depth:
        return
    used = image.bits_stored if image.bits_stored and image.bits_stored < image.bit_depth else None
    depth = f"{used}-bit (stored in {image.bit_depth}-bit words)" if used else f"{image.bit_depth}-bit"
    hint = (f"use a {image.bit_depth}-bit model" if image.bit_depth == 16 else
            f"convert them to {pipeline.bit_depth}-bit integers")
    raise InputError(source, f"{depth} frames, but this model was trained on {pipeline.bit_depth}-bit frames: "
                     f"convert them to {pipeline.bit_depth}-bit or {hint}")


# ---- two images ---------------------------------------------------------------------------------------
def pair_names(first: Path, second: Path, times: Sequence[float]) -> list[str]:
    return [f"{input_stem(first)}_{input_stem(second)}_t{t:.3f}.png" for t in times]


def plan_pair(first: Path, second: Path, output: Path, times: Sequence[float], *, skip_existing: bool = False,
              overwrite: bool = False) -> list[WorkItem]:
    """One item writing one PNG per timestep into the folder `output`. The runner checks the first name; the
    others are checked here, so that a set is never half replaced or half skipped."""
    check_output_location(output)
    targets = [output / name for name in pair_names(first, second, times)]
    existing = [t for t in targets if t.exists()]
    problem = None
    if existing and not overwrite and not (skip_existing and len(existing) == len(targets)):
        problem = f"{existing[0]}: {OUTPUT_EXISTS}"
    return [WorkItem(f"{first.name} + {second.name}", first, targets[0], problem)]


def pair_job(pipeline: InterpolationPipeline, second: Path, times: tuple[float, ...]) -> BatchJob:
    def read(item: WorkItem):
        frames, metas = [], []
        for path in (item.source, second):
            image, meta = read_image(path)
            check_bit_depth(pipeline, meta, path)
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
        written = []
        try:
            for frame, name in zip(frames, names):
                written.append(write_image(item.target.parent / name, from_unit(frame, meta), bit_depth=meta.bit_depth))
        except BaseException:
            for path in written:            # a set of frames is written whole or not at all
                Path(path).unlink(missing_ok=True)
            raise
        return {"frames": len(names), "size": f"{frames.shape[2]}x{frames.shape[1]}"}

    return BatchJob(read=read, compute=compute, write=write, description="interpolate")


# ---- sequences ------------------------------------------------------------------------------------------
SEQUENCE_FILE_SUFFIXES = (".dcm", ".nii.gz", ".nii")


def sequence_suffix(source: Path) -> str:
    """The output's suffix: a sequence is written in its own format (a folder has none)."""
    if source.is_dir():
        return ""
    return ".nii.gz" if source.name.lower().endswith((".nii", ".nii.gz")) else ".dcm"


def plan_sequences(inputs: list[str], output: Path) -> list[WorkItem]:
    """One item per sequence, its target named after it in its own format (`<name>_interp/`, `.dcm`,
    `.nii.gz`), or `-o` itself when it names one file of the input's format. Arguments that do not resolve,
    targets that clash or would replace an input, and earlier outputs found among the inputs are handled as
    `source_target_pairs` does for other commands."""
    check_output_location(output)
    resolved = resolve_each(inputs, (SEQUENCE,))
    sources = [Path(r.path) if isinstance(r, InputError) else r for r in resolved]
    names_one_file = output.name.lower().endswith(SEQUENCE_FILE_SUFFIXES)
    if names_one_file and len(sources) > 1:
        raise UsageError(f"-o {output} names one file but there are {len(sources)} inputs; give a folder")
    if names_one_file:
        targets = [output]
    else:
        stems = output_paths_for(sources, output, suffix="", stem_suffix="_interp")
        targets = [t.with_name(t.name + sequence_suffix(s)) for t, s in zip(stems, sources)]
    own_outputs = {path_key(t) for t in targets} if len(targets) > 1 else set()
    counts = Counter(path_key(t) for t in targets)
    items = []
    for source, target, found in zip(sources, targets, resolved):
        if path_key(source) in own_outputs:
            continue       # an earlier run's output in the input folder
        problem = str(found) if isinstance(found, InputError) else None
        if problem is None and names_one_file and sequence_suffix(source) != _file_suffix(output):
            problem = (f"{source}: -o {output.name} is not the input's format (a sequence is written as "
                       f"{'a folder of frames' if source.is_dir() else 'a ' + sequence_suffix(source) + ' file'})")
        elif problem is None and path_key(source) == path_key(target):
            problem = f"{source}: the output would replace the input; choose another -o"
        elif problem is None and counts[path_key(target)] > 1:
            problem = f"{source}: another input would write the same output {target.name}; rename one of them"
        items.append(WorkItem(str(source), source, target, problem, folder_output=source.is_dir()))
    return items


def _file_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith((".nii", ".nii.gz")) else ".dcm"


def output_frame_time(meta_time: float | None, plan: list[tuple[int, float]], count: int,
                      options: SequenceOptions) -> float | None:
    if options.fps:
        return 1000.0 / options.fps
    if meta_time is None:
        return None
    return meta_time * (count - 1) / (len(plan) - 1)   # the same duration over more frames (the mean for --times)


def output_intervals(meta_time: float | None, plan: list[tuple[int, float]], options: SequenceOptions
                     ) -> list[float] | None:
    """The time between each pair of output frames on the input's time line, when --times spaces them unevenly
    (None otherwise: one frame time says it all)."""
    if options.fps or meta_time is None or options.times is None:
        return None
    positions = np.array([i + t for i, t in plan], dtype=np.float64)
    intervals = np.diff(positions) * meta_time
    return None if np.allclose(intervals, intervals[0], rtol=1e-6, atol=0) else intervals.tolist()


def preview_path(target: Path) -> Path:
    return target.with_name(input_stem(target) + "_preview.gif")


def sequence_job(pipeline: InterpolationPipeline, options: SequenceOptions) -> BatchJob:
    def read(item: WorkItem):
        if options.preview and preview_path(item.target).exists() and not options.overwrite:
            raise InputError(preview_path(item.target), OUTPUT_EXISTS)
        frames, meta = read_sequence(item.source)
        check_bit_depth(pipeline, meta.image, item.source)
        plan = sequence_plan(len(frames), factor=options.factor, times=options.times, fps=options.fps,
                             frame_time_ms=meta.frame_time_ms, source=str(item.source))
        return frames, meta, plan

    def compute(batch):
        return [interpolate_sequence(pipeline, *entry) for entry in batch]

    def write(item: WorkItem, output) -> dict:
        frames, meta, plan, count = output
        # which output frames are new, when every acquired frame is kept once (not when --fps drops some)
        inserted = [t > 0 for _, t in plan] if keeps_every_input(plan, count) else None
        frame_time = output_frame_time(meta.frame_time_ms, plan, count, options)
        intervals = output_intervals(meta.frame_time_ms, plan, options)
        target = write_sequence(frames, meta, item.target, frame_time_ms=frame_time, inserted=inserted,
                                intervals_ms=intervals)
        info = {"frames_in": count, "frames_out": len(frames), "inserted": sum(t > 0 for _, t in plan),
                "format": meta.format}
        if frame_time:
            info["frame_time_ms"] = round(frame_time, 3)    # the mean where --times spaces frames unevenly
        if intervals:
            info["frame_times_uneven"] = True
        if options.preview:
            try:
                unit = np.stack([to_unit(frame, meta.image) for frame in frames])
                write_preview(unit, preview_path(target), fps=1000.0 / frame_time if frame_time else 10.0)
            except BaseException:
                remove_output(target)        # the item failed: leave no half of it
                raise
            info["preview"] = str(preview_path(target))
        return info

    return BatchJob(read=read, compute=compute, write=write, description="interpolate")


def remove_output(target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def interpolate_sequence(pipeline: InterpolationPipeline, frames: np.ndarray, meta, plan: list[tuple[int, float]]):
    """Stored frames -> the output sequence in the stored dtype, new frames converted one at a time."""
    unit = np.stack([to_unit(frame, meta.image) for frame in frames])
    out = np.empty((len(plan), *frames.shape[1:]), dtype=frames.dtype)
    for k, frame in enumerate(pipeline.iter_sequence(unit, plan, source=str(meta.source))):
        i, t = plan[k]
        out[k] = frames[i] if t == 0 else from_unit(frame, meta.image)   # acquired frames exactly as stored
    return out, meta, plan, len(frames)


def interpolate_files(pipeline: InterpolationPipeline, items: list[WorkItem], job_options, runtime: RuntimeConfig,
                      *, second: Path | None = None, skip_existing: bool = False, overwrite: bool = False
                      ) -> RunSummary | None:
    """Pair mode when `second` is given (job_options: the timesteps), else sequences (a SequenceOptions)."""
    def build(device):
        p = pipeline.on_device(device) if device else pipeline
        return pair_job(p, second, job_options) if second is not None else sequence_job(p, job_options)

    return run_batch(items, build, runtime, skip_existing=skip_existing, overwrite=overwrite)
