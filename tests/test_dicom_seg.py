"""DICOM SEG output (`mis segment --output-type dicom-seg|both`) and the batch statistics CSV.

A seeded phantom is written as a real DICOM CT series (one file per slice), segmented by the shipped demo model,
and its SEG must open with highdicom, reference the source study, series, frame of reference and per frame the
right source slice, and read back (with pydicom alone, and with highdicom) into the NIfTI label map voxel for voxel.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from bad_inputs import dicom_slice
from mis.cli.main import app
from mis.io.dicom_seg import SegSource, read_dicom_seg
from mis.io.volume import read_volume

runner = CliRunner()
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def phantom_series(folder: Path, seed: int = 4242, frame_of_reference: str = "1.2.826.0.1.3680043.8.498.4242") -> Path:
    """A phantom as a DICOM CT series: slice k is the array's third axis, pixel (row r, col c) = volume[c, r, k]."""
    from mis.pipelines.ct_segmentation.phantom import make_phantom

    phantom = make_phantom(seed, shape=(72, 64, 40), spacing=(4.5, 4.5, 5.0), oblique=False, orientation="LPS")
    hu = np.clip(np.rint(phantom.image), -1024, 3071).astype(np.int16) + 1024   # stored values, intercept -1024
    affine = phantom.affine
    row_dir, col_dir = RAS_TO_LPS @ affine[:3, 0], RAS_TO_LPS @ affine[:3, 1]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    folder.mkdir(parents=True)
    for k in range(hu.shape[2]):
        position = RAS_TO_LPS @ (affine @ np.array([0, 0, k, 1.0]))[:3]
        dicom_slice(folder / f"CT{k:03d}.dcm", tuple(position), pixels=hu[:, :, k].T,
                    orientation=(*(row_dir / spacing[0]), *(col_dir / spacing[1])),
                    series_uid="1.2.826.0.1.3680043.8.498.4243", FrameOfReferenceUID=frame_of_reference,
                    PixelSpacing=[f"{spacing[1]:g}", f"{spacing[0]:g}"], SliceThickness=f"{spacing[2]:g}",
                    PatientID="PHANTOM-4242", PatientName="Phantom^Seed")
    return folder


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return phantom_series(tmp_path_factory.mktemp("dicom") / "CT_SERIES")


def labels_from_seg(seg_path: Path, series: Path) -> tuple[np.ndarray, dict[int, str]]:
    image, meta = read_volume(series)
    return read_dicom_seg(seg_path, SegSource(series, meta.extra["files"]), image.shape)


def test_dicom_input_gives_a_seg_that_reads_back_to_the_label_map(series, tmp_path):
    import highdicom as hd

    out = tmp_path / "out"
    result = runner.invoke(app, ["--json", "segment", str(series), "-o", str(out), "--output-type", "both"])
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    seg_path, nifti_path = out / "CT_SERIES_seg.dcm", out / "CT_SERIES_seg.nii.gz"
    assert item["dicom_seg"]["file"] == seg_path.name and nifti_path.exists()
    labels = np.asarray(nib.load(nifti_path).dataobj)
    assert len(np.unique(labels)) >= 4, "the demo model should find several organs on the phantom"

    # the SEG references the source series, study and frame of reference, frame by frame
    seg = hd.seg.segread(seg_path)
    source = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted(series.iterdir())]
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID and seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert seg.PatientID == "PHANTOM-4242"
    names = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert names == {int(k): v for k, v in item["dicom_seg"]["segments"].items()}
    liver = next(s for s in seg.SegmentSequence if s.SegmentLabel == "liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"   # SNOMED CT Liver
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Organ"
    referenced = {str(g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                  for g in seg.PerFrameFunctionalGroupsSequence}
    assert referenced <= {str(d.SOPInstanceUID) for d in source}

    # read back with pydicom alone: the same label map, voxel for voxel
    back, segment_names = labels_from_seg(seg_path, series)
    ids = {number: next(int(k) for k, v in json.loads((out / "CT_SERIES_seg.json").read_text())["labels"].items()
                        if v == name) for number, name in segment_names.items()}
    mapped = np.zeros_like(labels)
    for number, label in ids.items():
        mapped[back == number] = label
    np.testing.assert_array_equal(mapped, labels)

    # ... and with highdicom's own reader, by source instance
    image, meta = read_volume(series)
    uids = [str(pydicom.dcmread(str(series / f), stop_before_pixels=True).SOPInstanceUID) for f in meta.extra["files"]]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False)
    np.testing.assert_array_equal(np.transpose(frames, (2, 1, 0)), back)


def test_a_nifti_input_needs_its_reference_series(series, tmp_path):
    image, meta = read_volume(series)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.int16), meta.affine), scan)
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(scan), "-o", str(out), "--output-type", "dicom-seg"])
    assert result.exit_code == 1 and "--dicom-reference" in result.stderr and str(scan) in result.stderr
    assert not out.exists() or not any(out.iterdir())
    # with the series it came from: a SEG on that series, equal to the NIfTI result on the same scan
    result = runner.invoke(app, ["segment", str(scan), "-o", str(out), "--output-type", "both",
                                 "--dicom-reference", str(series)])
    assert result.exit_code == 0, result.output
    back, _ = labels_from_seg(out / "scan_seg.dcm", series)
    labels = np.asarray(nib.load(out / "scan_seg.nii.gz").dataobj)
    assert np.array_equal(back > 0, labels > 0)
    # a reference on another grid is refused for that input, with nothing written
    other = tmp_path / "other"
    shutil.copytree(series, other)
    for path in sorted(other.iterdir())[-3:]:
        path.unlink()
    result = runner.invoke(app, ["segment", str(scan), "-o", str(tmp_path / "out2"), "--output-type", "dicom-seg",
                                 "--dicom-reference", str(other)])
    assert result.exit_code == 1 and "does not lie on the grid of the reference series" in result.stderr
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_a_series_with_two_frames_of_reference_is_refused(series, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(series, mixed)
    first = sorted(mixed.iterdir())[0]
    dataset = pydicom.dcmread(str(first))
    dataset.FrameOfReferenceUID = "1.2.3.4.5.6"
    dataset.save_as(str(first), enforce_file_format=True)
    result = runner.invoke(app, ["segment", str(mixed), "-o", str(tmp_path / "out"), "--output-type", "dicom-seg"])
    assert result.exit_code == 1 and "inconsistent frame of reference" in result.stderr
    assert len([line for line in result.stderr.splitlines() if str(mixed) in line]) == 1


def test_statistics_csv_has_a_row_per_organ_per_case(tiny_ct_checkpoint, phantom_file, tmp_path):
    second = tmp_path / "case2.nii.gz"
    shutil.copy(phantom_file, second)
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(phantom_file), str(second), "-o", str(out), "--model",
                                 str(tiny_ct_checkpoint), "--statistics"])
    assert result.exit_code == 0, result.output
    with open(out / "statistics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    organs = json.loads((out / "case1_seg_statistics.json").read_text())
    assert len(rows) == 2 * len(organs)
    assert {r["case"] for r in rows} == {str(phantom_file), str(second)}
    first = next(r for r in rows if r["case"] == str(phantom_file) and r["organ"] == "liver")
    assert float(first["volume_ml"]) == organs["liver"]["volume_ml"] and first["touches_border"] in ("True", "False")
