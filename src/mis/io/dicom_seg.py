"""DICOM SEG output for a label map on a DICOM CT series (highdicom), and reading one back. Imports no torch.

A segmentation of a DICOM input goes back to the PACS as a DICOM Segmentation object: one segment per label
with its name and a coded anatomic category and type (SNOMED CT), referencing the source series (study, series,
frame of reference, and per frame the source image it was derived from), so a viewer overlays it on the right
slices. Binary segments, empty frames left out (highdicom's default).

Array convention: the label map is in the series' volume axes as `io.dicom.read_dicom_series` returns them,
`volume[:, :, k] = slice_k.pixels.T`; frame k of the SEG is `labels[:, :, k].T` on source slice k.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError

# (SNOMED CT code, meaning) of the segmented property type, and of its category, for the organ names mis models
# use (TotalSegmentator's spellings included). Other names get the generic "Anatomical structure".
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical structure")
ORGAN = ("113343008", "Organ")
KNOWN_STRUCTURES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "liver": (("10200004", "Liver"), ORGAN),
    "spleen": (("78961009", "Spleen"), ORGAN),
    "kidney": (("64033007", "Kidney"), ORGAN),
    "kidney_right": (("9846003", "Right kidney"), ORGAN),
    "kidney_left": (("18639004", "Left kidney"), ORGAN),
    "lung": (("39607008", "Lung"), ORGAN),
    "lung_right": (("3341006", "Right lung"), ORGAN),
    "lung_left": (("44029006", "Left lung"), ORGAN),
    "spine": (("421060004", "Spinal column"), ANATOMICAL_STRUCTURE),
    "pancreas": (("15776009", "Pancreas"), ORGAN),
    "stomach": (("69695003", "Stomach"), ORGAN),
    "gallbladder": (("28231008", "Gallbladder"), ORGAN),
    "heart": (("80891009", "Heart"), ORGAN),
    "aorta": (("15825003", "Aorta"), ANATOMICAL_STRUCTURE),
    "urinary_bladder": (("89837001", "Urinary bladder"), ORGAN),
}


@dataclass(frozen=True)
class SegSource:
    """The DICOM series a segmentation is made on: its folder and its slice files in volume order (k = 0, 1 ...)."""
    folder: Path
    files: list[str]
    slice_spacing: float | None = None    # used as SliceThickness when the slices lack it (the SEG needs one)


def coded_structure(name: str):
    """(segmented property category, segmented property type) as highdicom coded concepts."""
    from highdicom.sr import CodedConcept

    structure, category = KNOWN_STRUCTURES.get(name.lower(), (ANATOMICAL_STRUCTURE, ANATOMICAL_STRUCTURE))
    return (CodedConcept(category[0], "SCT", category[1]), CodedConcept(structure[0], "SCT", structure[1]))


# Patient and study attributes a SEG copies from its source (DICOM type 2: present, possibly empty). Anonymised or
# synthetic series often lack them; the SEG then carries them empty, as the standard allows.
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "ReferringPhysicianName", "AccessionNumber")


def read_source_datasets(source: SegSource) -> list:
    """The series' headers in volume order (pixel data is not needed to describe the source images); in memory
    only, the files are never touched."""
    import pydicom

    datasets = []
    for name in source.files:
        path = source.folder / name
        try:
            dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any read problem is this file's
            raise InputError(path, f"cannot read the source slice for DICOM SEG ({type(exc).__name__}: {exc})") \
                from None
        for keyword in TYPE2_COPIED:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        if "SliceThickness" not in dataset and source.slice_spacing:
            dataset.SliceThickness = f"{source.slice_spacing:.6g}"
        datasets.append(dataset)
    return datasets


def write_dicom_seg(path: str | Path, labels: np.ndarray, source: SegSource, names: dict[int, str], *,
                    algorithm: str, version: str, series_description: str = "mis segmentation") -> dict[int, int]:
    """Write `labels` (volume axes of the series) as a DICOM SEG referencing `source`, atomically.

    Segment numbers are 1..N in label-id order (DICOM wants them consecutive; a --roi-subset skips ids), each
    labelled with its name. Returns {segment number: label id}."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from mis.io.atomic import atomic_output

    datasets = read_source_datasets(source)
    if labels.ndim != 3 or labels.shape[2] != len(datasets):
        raise ValueError(f"label map {labels.shape} does not match the series' {len(datasets)} slices")
    ids = sorted(names)
    frames = np.zeros((len(datasets), labels.shape[1], labels.shape[0]), dtype=np.uint16)
    for number, label in enumerate(ids, start=1):
        frames[np.transpose(labels, (2, 1, 0)) == label] = number
    algorithm_id = hd.AlgorithmIdentificationSequence(name=algorithm, version=version,
                                                      family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, label in enumerate(ids, start=1):
        category, structure = coded_structure(names[label])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[label], segmented_property_category=category,
            segmented_property_type=structure, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id))
    first = datasets[0]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=int(first.get("SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="mis", manufacturer_model_name=algorithm, software_versions=version,
        device_serial_number="0", series_description=series_description[:64])
    with atomic_output(path) as tmp:
        seg.save_as(str(tmp))
    return {number: label for number, label in enumerate(ids, start=1)}


def read_dicom_seg(path: str | Path, source: SegSource, shape: tuple[int, int, int]) -> tuple[np.ndarray, dict[int, str]]:
    """A DICOM SEG on `source` back into a label map of the series' volume `shape`, with pydicom alone:
    each frame's segment number and its source slice come from the per-frame functional groups.
    Returns (labels with segment numbers, {segment number: segment label})."""
    import pydicom

    seg = pydicom.dcmread(str(path))
    slice_of = {}
    for k, name in enumerate(source.files):
        header = pydicom.dcmread(str(source.folder / name), stop_before_pixels=True)
        slice_of[str(header.SOPInstanceUID)] = k
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    labels = np.zeros(shape, dtype=np.uint16)
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        labels[:, :, slice_of[uid]][frame.T.astype(bool)] = number
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    return labels, names
