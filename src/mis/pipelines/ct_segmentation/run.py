"""File-level runner for `mis segment`: read -> pipeline -> write, as a job for the shared batch runner."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import mis
from mis.errors import InputError, UsageError
from mis.io.atomic import atomic_output, atomic_write_bytes, atomic_write_json
from mis.io.dicom_seg import SegSource, write_dicom_seg
from mis.io.files import source_target_pairs
from mis.io.nifti import write_nifti
from mis.io.volume import VolumeMeta, from_ras, read_volume, to_ras
from mis.pipelines.ct_segmentation.outputs import label_statistics, preview_png
from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem


OUTPUT_TYPES = ("nifti", "dicom-seg", "both")


@dataclass
class SegmentOptions:
    roi_subset: list[str] | None = None
    save_probabilities: bool = False
    statistics: bool = False
    preview: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    output_type: str = "nifti"              # nifti | dicom-seg | both
    dicom_reference: Path | None = None     # the DICOM series a NIfTI input came from (for DICOM SEG)

    @property
    def dicom_seg(self) -> bool:
        return self.output_type in ("dicom-seg", "both")


def sidecar(target: Path, suffix: str) -> Path:
    name = target.name
    for ending in (".nii.gz", ".nii"):
        if name.lower().endswith(ending):  # OUT.NII.GZ -> OUT.json, not OUT.NII.json
            return target.with_name(name[: -len(ending)] + suffix)
    return target.with_name(target.stem + suffix)


def plan_items(inputs: list[str], output: Path, options: SegmentOptions | None = None) -> list[WorkItem]:
    """One WorkItem per volume. `output` is a folder, or a file name when there is one input. With DICOM SEG output
    a NIfTI input needs the series it came from (--dicom-reference); without one its item fails at once."""
    options = options or SegmentOptions()
    if options.output_type not in OUTPUT_TYPES:
        raise UsageError(f"--output-type {options.output_type!r}: expected one of {', '.join(OUTPUT_TYPES)}")
    only_dicom = options.output_type == "dicom-seg"
    pairs = source_target_pairs(inputs, output, suffix=".dcm" if only_dicom else ".nii.gz",
                                file_suffixes=(".dcm",) if only_dicom else (".nii", ".nii.gz"))
    if options.dicom_reference is not None and len(pairs) != 1:
        raise UsageError(f"--dicom-reference names the series of one input; {len(pairs)} inputs were given")
    items = []
    for source, target, problem in pairs:
        if problem is None and options.dicom_seg and source.is_file() and options.dicom_reference is None:
            problem = (f"{source}: DICOM SEG output needs the DICOM series this scan came from; give "
                       "--dicom-reference FOLDER (or --output-type nifti)")
        items.append(WorkItem(str(source), source, target, problem))
    return items


def statistics_csv_path(output: Path) -> Path:
    """One CSV for the whole batch: in the output folder, or beside a single output file."""
    name = output.name.lower()
    if name.endswith((".nii", ".nii.gz", ".dcm")):
        return sidecar(output, "_statistics.csv")
    return output / "statistics.csv"


STATISTICS_COLUMNS = ("case", "organ", "label", "voxels", "volume_ml", "mean_hu", "std_hu", "touches_border")


def write_statistics_csv(path: Path, summary: RunSummary) -> int:
    """One row per organ per segmented case (pandas.read_csv-ready); returns the number of rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATISTICS_COLUMNS)
    rows = 0
    for result in summary.results:
        for organ, values in (result.info.get("statistics") or {}).items() if result.status == "done" else ():
            writer.writerow([result.source, organ, values["label"], values["voxels"], values["volume_ml"],
                             "" if values["mean_hu"] is None else values["mean_hu"],
                             "" if values["std_hu"] is None else values["std_hu"], values["touches_border"]])
            rows += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return rows


def seg_source(item: WorkItem, labels: np.ndarray, meta: VolumeMeta, options: SegmentOptions
               ) -> tuple[np.ndarray, SegSource]:
    """The series a DICOM SEG references and the label map on its grid: the input's own series, or for a NIfTI
    input the --dicom-reference series, which must lie on the same grid."""
    if meta.kind == "dicom":
        return labels, SegSource(Path(meta.source), list(meta.extra["files"]), meta.extra.get("slice_spacing"))
    _, reference = read_volume(options.dicom_reference)
    if reference.kind != "dicom":
        raise InputError(options.dicom_reference, "--dicom-reference must be a DICOM series folder")
    labels_ras, ras_affine, _ = to_ras(labels, meta)
    reference_ras, reference_affine, _ = to_ras(np.zeros(reference.shape, np.uint8), reference)
    if labels_ras.shape != reference_ras.shape or not np.allclose(ras_affine, reference_affine, atol=0.01):
        raise InputError(item.source, f"does not lie on the grid of the reference series {options.dicom_reference} "
                         f"(shape {tuple(meta.shape)} vs {tuple(reference.shape)}, or another position or spacing): "
                         "a DICOM SEG must match its source slices")
    return from_ras(labels_ras, reference), SegSource(Path(reference.source), list(reference.extra["files"]),
                                                      reference.extra.get("slice_spacing"))


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
            return write_files(item, output, side, written)
        except BaseException:
            for path in written:  # no partial output: the sidecars go when the label map cannot be written
                path.unlink(missing_ok=True)
            raise

    def write_files(item: WorkItem, output, side, written: list[Path]) -> dict:
        image, meta, result = output
        target = item.target
        target.parent.mkdir(parents=True, exist_ok=True)
        info = dict(result.info)
        # what the reader noticed (no qform/sform, oblique, modality not CT, not HU) and what the pipeline noticed
        # (a partial scan) go to the table, the JSON and the sidecar
        warnings = [*meta.extra.get("warnings", []), *info.pop("warnings", [])]
        if warnings:
            info["warning"] = "; ".join(warnings)
        seg = None
        if options.dicom_seg:   # resolved first, so the sidecar can say what the SEG holds
            seg_labels, source = seg_source(item, result.labels, meta, options)
            seg = (seg_labels, source, target if options.output_type == "dicom-seg" else sidecar(target, ".dcm"))
            info["dicom_seg"] = {"file": seg[2].name, "references_series": str(source.folder),
                                 "segments": {str(n): names[label] for n, label in enumerate(sorted(names), 1)}}
        # sidecars first, the label map last: its presence means the item is complete (--skip-existing)
        atomic_write_json(side(".json"), {
            "source": item.key, "labels": {str(k): v for k, v in names.items()},
            "shape": list(image.shape), "affine": np.asarray(meta.affine).tolist(), **info})
        if options.statistics:
            stats = label_statistics(result.labels, image, meta, names)
            atomic_write_json(side("_statistics.json"), stats)
            info["organs_found"] = sum(1 for s in stats.values() if s["voxels"])
            info["statistics"] = stats   # for the batch's statistics.csv
        if options.preview:
            image_ras, ras_affine, _ = to_ras(image, meta)
            labels_ras, _, _ = to_ras(result.labels, meta)
            spacing = tuple(float(v) for v in np.linalg.norm(ras_affine[:3, :3], axis=0))
            with atomic_output(side("_preview.png")) as tmp:
                preview_png(image_ras, labels_ras, spacing).save(tmp, format="PNG")
        if result.probabilities is not None:
            probs = np.moveaxis(result.probabilities, 0, -1)  # (X, Y, Z, K): NIfTI 4th axis = class
            write_nifti(side("_probabilities.nii.gz"), probs, meta, dtype=np.uint8)
        if seg is not None:
            seg_labels, source, seg_path = seg
            if seg_path != target:
                written.append(seg_path)   # a side output: removed if the label map cannot be written
            write_dicom_seg(seg_path, seg_labels, source, names, version=mis.__version__,
                            algorithm=f"mis PCT-Net {str(pipeline.card.get('sha256', ''))[:8]}")
        if options.output_type != "dicom-seg":
            write_nifti(target, result.labels, meta, dtype=result.labels.dtype)
        return info

    return BatchJob(read=read, compute=compute, write=write, description="segment")
