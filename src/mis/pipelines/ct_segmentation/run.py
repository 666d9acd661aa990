"""File-level runner for `mis segment`: read -> pipeline -> write, as a job for the shared batch runner."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.io.atomic import atomic_output, atomic_write_json
from mis.io.files import source_target_pairs
from mis.io.nifti import write_nifti
from mis.io.volume import read_volume, to_ras
from mis.pipelines.ct_segmentation.outputs import label_statistics, preview_png
from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem


@dataclass
class SegmentOptions:
    roi_subset: list[str] | None = None
    save_probabilities: bool = False
    statistics: bool = False
    preview: bool = False
    skip_existing: bool = False
    overwrite: bool = False


def sidecar(target: Path, suffix: str) -> Path:
    name = target.name
    for ending in (".nii.gz", ".nii"):
        if name.lower().endswith(ending):  # OUT.NII.GZ -> OUT.json, not OUT.NII.json
            return target.with_name(name[: -len(ending)] + suffix)
    return target.with_name(target.stem + suffix)


def plan_items(inputs: list[str], output: Path) -> list[WorkItem]:
    """One WorkItem per volume. `output` is a folder, or a file name when there is one input."""
    pairs = source_target_pairs(inputs, output, file_suffixes=(".nii", ".nii.gz"))
    return [WorkItem(str(source), source, target, problem) for source, target, problem in pairs]


def segment_files(pipeline: CTSegmentationPipeline, items: list[WorkItem], options: SegmentOptions,
                  runtime: RuntimeConfig | None = None) -> RunSummary | None:
    """Segment every item (torchrun shards, several GPUs each get a copy); None on non-zero ranks."""
    runtime = runtime or RuntimeConfig(quiet=True)
    return run_batch(items, lambda device: segment_job(pipeline.on_device(device) if device else pipeline, options),
                     runtime, skip_existing=options.skip_existing, overwrite=options.overwrite)


def segment_job(pipeline: CTSegmentationPipeline, options: SegmentOptions) -> BatchJob:
    labels_subset = pipeline.label_ids(options.roi_subset)  # fail early on unknown organ names
    names = {k: v for k, v in pipeline.labels.items() if k in labels_subset}

    def read(item: WorkItem):
        image, meta = read_volume(item.source)
        return image, meta

    def compute(batch):
        outputs = []
        for image, meta in batch:
            result = pipeline(image, meta, roi_subset=options.roi_subset,
                              return_probabilities=options.save_probabilities)
            outputs.append((image, meta, result))
        return outputs

    def write(item: WorkItem, output) -> dict:
        written: list[Path] = []

        def side(suffix: str) -> Path:  # a sidecar of this item, remembered so a failed item leaves none
            written.append(sidecar(item.target, suffix))
            return written[-1]

        try:
            return write_files(item, output, side)
        except BaseException:
            for path in written:  # no partial output: the sidecars go when the label map cannot be written
                path.unlink(missing_ok=True)
            raise

    def write_files(item: WorkItem, output, side) -> dict:
        image, meta, result = output
        target = item.target
        target.parent.mkdir(parents=True, exist_ok=True)
        info = dict(result.info)
        # what the reader noticed (no qform/sform, oblique, modality not CT, not HU) goes to the table and sidecar
        if meta.extra.get("warnings"):
            info["warning"] = "; ".join(meta.extra["warnings"])
        # sidecars first, the label map last: its presence means the item is complete (--skip-existing)
        atomic_write_json(side(".json"), {
            "source": item.key, "labels": {str(k): v for k, v in names.items()},
            "shape": list(image.shape), "affine": np.asarray(meta.affine).tolist(), **info})
        if options.statistics:
            stats = label_statistics(result.labels, image, meta, names)
            atomic_write_json(side("_statistics.json"), stats)
            info["organs_found"] = sum(1 for s in stats.values() if s["voxels"])
        if options.preview:
            image_ras, ras_affine, _ = to_ras(image, meta)
            labels_ras, _, _ = to_ras(result.labels, meta)
            spacing = tuple(float(v) for v in np.linalg.norm(ras_affine[:3, :3], axis=0))
            with atomic_output(side("_preview.png")) as tmp:
                preview_png(image_ras, labels_ras, spacing).save(tmp, format="PNG")
        if result.probabilities is not None:
            probs = np.moveaxis(result.probabilities, 0, -1)  # (X, Y, Z, K): NIfTI 4th axis = class
            write_nifti(side("_probabilities.nii.gz"), probs, meta, dtype=np.uint8)
        write_nifti(target, result.labels, meta, dtype=result.labels.dtype)
        return info

    return BatchJob(read=read, compute=compute, write=write, description="segment")
