"""Tests for mis.io: atomic writes, NIfTI and DICOM reading, RAS reorientation, input resolution."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mis.errors import InputError
from mis.io.atomic import atomic_output, atomic_write_bytes, atomic_write_json, atomic_write_text
from mis.io.dicom import is_dicom_file, read_dicom_series
from mis.io.files import output_path_for, output_paths_for, resolve_inputs
from mis.io.nifti import read_nifti, write_nifti
from mis.io.volume import VolumeMeta, from_ras, looks_like_hu, ras_shape, read_volume, to_ras

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ct"


def real(rel: str) -> Path:
    p = (DATA / rel).resolve()
    if not p.exists():
        pytest.skip(f"real test data not available: {p}")
    return p


def make_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=None) -> Path:
    affine = np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(data if dtype is None else data.astype(dtype)), affine)
    nib.save(img, str(path))
    return path


def ct_like(shape=(12, 10, 8), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    return a


# --------------------------------------------------------------------------- atomic


def test_atomic_output_success_and_suffix(tmp_path):
    target = tmp_path / "sub" / "case.001_seg.nii.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".case.001_seg.tmp-") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    assert sorted(os.listdir(target.parent)) == ["case.001_seg.nii.gz"]


def test_atomic_output_exception_leaves_nothing(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    # an existing target is kept untouched on failure
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new-partial")
            raise ValueError
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.nii.gz"]


def test_atomic_write_helpers(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "n": np.int64(3), "nan": float("nan"),
                                             "arr": np.arange(3), "p": tmp_path})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text("utf-8") == "héllo"
    obj = json.loads((tmp_path / "a.json").read_text())
    assert obj == {"x": 1.5, "n": 3, "nan": None, "arr": [0, 1, 2], "p": str(tmp_path)}
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.json", "a.txt"]


# --------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_keeps_affine_shape_dtype(tmp_path):
    affine = np.array([[-0.8, 0.0, 0.0, 90.0], [0.0, -0.9, 0.0, 120.0], [0.0, 0.0, 2.5, -60.0], [0, 0, 0, 1]])
    src = make_nifti(tmp_path / "ct.nii.gz", ct_like(), affine)
    arr, meta = read_nifti(src)
    assert arr.dtype == np.float32 and arr.shape == (12, 10, 8)
    assert meta.kind == "nifti" and meta.shape == (12, 10, 8)
    np.testing.assert_allclose(meta.affine, affine)
    np.testing.assert_allclose(meta.spacing, (0.8, 0.9, 2.5))
    np.testing.assert_array_equal(arr, ct_like().astype(np.float32))

    labels = (arr > 0).astype(np.uint8) * 3
    out = write_nifti(tmp_path / "out" / "ct_seg.nii.gz", labels, meta)
    img = nib.load(str(out))
    assert img.shape == meta.shape
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine)
    assert int(img.header["sform_code"]) == int(meta.header["sform_code"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)
    assert sorted(os.listdir(out.parent)) == ["ct_seg.nii.gz"]

    with pytest.raises(ValueError):
        write_nifti(tmp_path / "bad.nii.gz", labels[:, :, :4], meta)
    assert not (tmp_path / "bad.nii.gz").exists()


def test_nifti_scaled_header_is_reset_on_output(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(2.5, -1000.0)
    img.set_qform(img.affine, code=1)
    nib.save(img, str(tmp_path / "scaled.nii"))
    arr, meta = read_nifti(tmp_path / "scaled.nii")
    np.testing.assert_allclose(arr, data * 2.5 - 1000.0)
    assert meta.extra["scl_slope"] == 2.5
    out = write_nifti(tmp_path / "seg.nii.gz", (data % 3).astype(np.uint8), meta)
    back = nib.load(str(out))
    assert back.dataobj.slope == 1.0 and back.dataobj.inter == 0.0
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data % 3)
    assert int(back.header["qform_code"]) == 1


def test_nifti_4d_with_singleton_is_squeezed(tmp_path):
    p = make_nifti(tmp_path / "t1.nii.gz", ct_like()[..., None])
    arr, meta = read_nifti(p)
    assert arr.shape == meta.shape == (12, 10, 8)


@pytest.mark.parametrize(
    "name,make,problem",
    [
        ("four_d.nii.gz", lambda p: make_nifti(p, np.zeros((10, 10, 10, 3), np.int16)),
         "4-D volume (shape 10x10x10x3); expected a 3-D CT"),
        ("two_d.nii.gz", lambda p: make_nifti(p, np.zeros((10, 10), np.int16)), "2-D image"),
        ("slice.nii.gz", lambda p: make_nifti(p, np.zeros((10, 10, 1), np.int16)), "single slice"),
        ("nan.nii.gz", lambda p: make_nifti(p, np.full((4, 4, 4), np.nan, np.float32)), "all voxels are NaN"),
        ("somenan.nii.gz", lambda p: make_nifti(p, np.where(np.arange(64).reshape(4, 4, 4) < 5, np.nan, -900.0)
                                                .astype(np.float32)), "contains 5 NaN voxels"),
        ("inf.nii.gz", lambda p: make_nifti(p, np.where(np.arange(64).reshape(4, 4, 4) == 0, np.inf, -900.0)
                                            .astype(np.float32)), "contains 1 infinite voxels"),
        ("text.nii.gz", lambda p: p.write_text("this is not an image\n" * 40), "not a NIfTI file"),
        ("text.nii", lambda p: p.write_text("this is not an image\n" * 40), "not a NIfTI file"),
        ("empty.nii.gz", lambda p: p.write_bytes(b""), "empty file"),
    ],
)
def test_nifti_bad_inputs(tmp_path, name, make, problem):
    p = tmp_path / name
    make(p)
    with pytest.raises(InputError) as exc:
        read_volume(p)
    assert problem in exc.value.problem
    assert str(p) in str(exc.value)


def test_truncated_gzip(tmp_path):
    p = make_nifti(tmp_path / "cut.nii.gz", ct_like((30, 30, 20)))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as exc:
        read_nifti(p)
    assert exc.value.problem == "truncated or corrupt gzip stream"
    assert str(p) in str(exc.value)


def test_truncated_uncompressed(tmp_path):
    p = make_nifti(tmp_path / "cut.nii", ct_like((30, 30, 20)))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_nifti(p)


def test_missing_and_other_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path / "empty")
    assert exc.value.problem == "empty folder: no DICOM or NIfTI files"
    assert str(tmp_path / "empty") in str(exc.value)
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    with pytest.raises(InputError, match="not a NIfTI file or DICOM series"):
        read_volume(tmp_path / "notes.txt")
    # a valid NIfTI without the extension is recognised and the user told to rename it
    make_nifti(tmp_path / "ct.nii.gz", ct_like())
    shutil.copy(tmp_path / "ct.nii.gz", tmp_path / "ct_noext")
    with pytest.raises(InputError, match="rename"):
        read_volume(tmp_path / "ct_noext")


def test_looks_like_hu():
    rng = np.random.default_rng(1)
    assert looks_like_hu(rng.uniform(-1024, 2000, (8, 8, 8))) is None
    assert "8-bit" in looks_like_hu(rng.integers(0, 256, (8, 8, 8)).astype(np.float32))
    assert "no values below -500" in looks_like_hu(rng.uniform(-50, 800, (8, 8, 8)))
    assert "no negative" in looks_like_hu(rng.uniform(0, 4000, (8, 8, 8)))
    assert "normalised" in looks_like_hu(rng.uniform(-1, 1, (8, 8, 8)))


# --------------------------------------------------------------------------- orientation


def _check_to_ras(arr: np.ndarray, meta: VolumeMeta) -> None:
    arr_ras, ras_aff, inverse = to_ras(arr, meta)
    assert nib.aff2axcodes(ras_aff) == ("R", "A", "S")
    assert arr_ras.shape == ras_shape(meta)
    assert arr_ras.flags.c_contiguous
    # the same voxel sits at the same world position
    rng = np.random.default_rng(2)
    for _ in range(20):
        v = np.array([rng.integers(0, s) for s in meta.shape] + [1])
        world = meta.affine @ v
        u = np.rint(np.linalg.solve(ras_aff, world)[:3]).astype(int)
        assert arr_ras[tuple(u)] == arr[tuple(v[:3])]
    back = inverse(arr_ras)
    assert back.shape == meta.shape
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(from_ras(arr_ras, meta), arr)
    # trailing channel axes ride along
    stacked = np.stack([arr, -arr], axis=-1)
    s_ras, _, _ = to_ras(stacked, meta)
    np.testing.assert_array_equal(from_ras(s_ras, meta), stacked)


def test_to_ras_round_trip_lps_and_permuted():
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    lps = np.array([[-1.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, 30], [0, 0, 0, 1]])
    meta = VolumeMeta(affine=lps, shape=arr.shape, spacing=(1, 2, 3), source="x", kind="nifti")
    assert meta.axcodes == ("L", "P", "S")
    _check_to_ras(arr, meta)
    # i -> Superior, j -> Left, k -> Posterior
    perm = np.array([[0, -2.0, 0, 5], [0, 0, -3.0, 6], [1.0, 0, 0, 7], [0, 0, 0, 1]])
    meta2 = VolumeMeta(affine=perm, shape=arr.shape, spacing=(1, 2, 3), source="x", kind="nifti")
    assert meta2.axcodes == ("S", "L", "P")
    _check_to_ras(arr, meta2)
    assert ras_shape(meta2) == (5, 6, 4)


def test_to_ras_real_oblique_ct_pitch():
    arr, meta = read_volume(real("niivue-images/CT_pitch.nii.gz"))
    assert meta.shape == (175, 248, 58)
    assert meta.is_oblique and "not Hounsfield" in meta.extra["not_hu"]
    arr_ras, ras_aff, inverse = to_ras(arr, meta)
    np.testing.assert_array_equal(inverse(arr_ras), arr)
    np.testing.assert_allclose(np.abs(np.linalg.det(ras_aff)), np.abs(np.linalg.det(meta.affine)))


def test_to_ras_real_lps_mr():
    arr, meta = read_volume(real("totalsegmentator/example_mr_sm.nii.gz"))
    assert meta.axcodes == ("L", "P", "S")
    _check_to_ras(arr, meta)


# --------------------------------------------------------------------------- DICOM (synthetic)


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position,
    orientation=(1, 0, 0, 0, 1, 0),
    pixel_spacing=(0.7, 0.5),
    series_uid="1.2.826.0.1.3680043.8.498.1",
    instance=1,
    slope=1.0,
    intercept=-1024.0,
    extra: dict | None = None,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 2
    ds.SeriesDescription = "synthetic"
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.SliceThickness = "9"  # deliberately wrong: must not be used for spacing
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def slice_pixels(k: int, rows: int = 6, cols: int = 4) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:cols]
    return (1000 * k + 10 * r + c).astype(np.int16)


def write_series(folder: Path, positions, seed=0, **kw) -> list[Path]:
    """Slices k=0.. at ``positions[k]``, written under shuffled names with random instance numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = rng.permutation(len(positions))
    instances = rng.permutation(np.arange(1, 10 * len(positions)))[: len(positions)]
    paths = []
    for k, pos in enumerate(positions):
        paths.append(write_slice(folder / f"IM{names[k]:04d}", slice_pixels(k), pos,
                                 instance=int(instances[k]), **kw))
    return paths


def test_synthetic_axial_series_sorted_by_position(tmp_path):
    z = [10.0 + 2.5 * k for k in range(5)]
    write_series(tmp_path / "s", [(-20.0, -30.0, zk) for zk in z], slope=2.0, intercept=-1000.0)
    (tmp_path / "s" / "README").write_text("not dicom")
    (tmp_path / "s" / ".hidden").write_bytes(b"\x00" * 300)
    arr, meta = read_volume(tmp_path / "s")
    assert meta.kind == "dicom" and arr.dtype == np.float32
    assert arr.shape == meta.shape == (4, 6, 5)  # (columns, rows, slices)
    # derived by hand: LPS x/y negated; i (column) 0.5 mm along +x(L), j (row) 0.7 mm along +y(P)
    expected = np.array([
        [-0.5, 0.0, 0.0, 20.0],
        [0.0, -0.7, 0.0, 30.0],
        [0.0, 0.0, 2.5, 10.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(meta.affine, expected, atol=1e-6)
    np.testing.assert_allclose(meta.spacing, (0.5, 0.7, 2.5))
    for k in range(5):
        np.testing.assert_array_equal(arr[:, :, k], slice_pixels(k).T * 2.0 - 1000.0)
    assert meta.extra["skipped_files"] == ["README"]
    assert meta.extra["n_slices"] == 5


def test_synthetic_sagittal_series_affine(tmp_path):
    # rows along +y (posterior), columns down -z (inferior): normal = (1,0,0) x ... = (-1, 0, 0)
    xs = [5.0, 2.0, -1.0, -4.0]
    write_series(tmp_path / "sag", [(x, -50.0, 80.0) for x in xs], orientation=(0, 1, 0, 0, 0, -1), seed=3)
    arr, meta = read_dicom_series(tmp_path / "sag")
    # sorted along the normal (-x): x = 5, 2, -1, -4; step (-3, 0, 0) LPS -> (+3, 0, 0) RAS
    expected = np.array([
        [0.0, 0.0, 3.0, -5.0],
        [-0.5, 0.0, 0.0, 50.0],
        [0.0, -0.7, 0.0, 80.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(meta.affine, expected, atol=1e-6)
    for k in range(4):
        np.testing.assert_array_equal(arr[:, :, k], slice_pixels(k).T - 1024.0)


def test_synthetic_gantry_tilt_is_refused(tmp_path):
    t = np.tan(np.radians(15))
    write_series(tmp_path / "tilt", [(0.0, 2.5 * k * t, 2.5 * k) for k in range(5)])
    with pytest.raises(InputError, match="gantry tilt"):
        read_volume(tmp_path / "tilt")
    write_series(tmp_path / "tag", [(0.0, 0.0, 2.5 * k) for k in range(5)], extra={"GantryDetectorTilt": "12"})
    with pytest.raises(InputError, match="gantry tilt of 12 degrees"):
        read_volume(tmp_path / "tag")


def test_synthetic_two_series_in_one_folder(tmp_path):
    write_series(tmp_path / "mix", [(0, 0, k) for k in range(3)], series_uid="1.2.3.1")
    for k in range(2):
        write_slice(tmp_path / "mix" / f"B{k}", slice_pixels(k), (0, 0, k), series_uid="1.2.3.2")
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path / "mix")
    assert "2 DICOM series in one folder" in exc.value.problem
    assert "pass one series folder" in exc.value.problem


def test_synthetic_inconsistent_and_missing_pixels(tmp_path):
    write_series(tmp_path / "sizes", [(0, 0, k) for k in range(3)])
    write_slice(tmp_path / "sizes" / "odd", np.zeros((8, 8), np.int16), (0, 0, 3))
    with pytest.raises(InputError, match="inconsistent rows/columns"):
        read_volume(tmp_path / "sizes")
    paths = write_series(tmp_path / "nopix", [(0, 0, k) for k in range(3)])
    ds = pydicom.dcmread(str(paths[1]))
    del ds.PixelData
    ds.save_as(str(paths[1]), enforce_file_format=True)
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path / "nopix")
    assert exc.value.problem == "missing pixel data" and exc.value.path == str(paths[1])
    write_series(tmp_path / "dup", [(0, 0, 0), (0, 0, 1), (0, 0, 1), (0, 0, 2)])
    with pytest.raises(InputError, match="duplicate slice positions"):
        read_volume(tmp_path / "dup")


def test_compressed_series(tmp_path):
    from pydicom.uid import JPEG2000Lossless, RLELossless

    paths = write_series(tmp_path / "rle", [(0, 0, 2.0 * k) for k in range(3)])
    for p in paths:
        ds = pydicom.dcmread(str(p))
        ds.compress(RLELossless)
        ds.save_as(str(p), enforce_file_format=True)
    arr, meta = read_volume(tmp_path / "rle")
    np.testing.assert_array_equal(arr[:, :, 2], slice_pixels(2).T - 1024.0)
    assert "RLE" in meta.extra["transfer_syntax"]

    (tmp_path / "j2k").mkdir()
    paths = [write_slice(tmp_path / "j2k" / f"s{k}", slice_pixels(k, 40, 36), (0, 0, 2.0 * k)) for k in range(3)]
    try:
        for p in paths:
            ds = pydicom.dcmread(str(p))
            ds.compress(JPEG2000Lossless)
            ds.save_as(str(p), enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no JPEG 2000 encoder here: {exc}")
    arr, meta = read_volume(tmp_path / "j2k")
    assert "2000" in meta.extra["transfer_syntax"]
    np.testing.assert_array_equal(arr[:, :, 1], slice_pixels(1, 40, 36).T - 1024.0)
    # corrupt compressed data -> a clear error naming the slice
    ds = pydicom.dcmread(str(paths[0]))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 40])
    ds.save_as(str(paths[0]), enforce_file_format=True)
    with pytest.raises(InputError, match="cannot decode compressed pixel data") as exc:
        read_volume(tmp_path / "j2k")
    assert exc.value.path == str(paths[0])


def test_is_dicom_file(tmp_path):
    p = write_slice(tmp_path / "a", slice_pixels(0), (0, 0, 0))
    assert is_dicom_file(p)
    (tmp_path / "b.txt").write_text("x" * 300)
    assert not is_dicom_file(tmp_path / "b.txt")
    assert not is_dicom_file(tmp_path)
    # a raw data set without preamble / file meta (old-style) is still recognised and readable
    ds = pydicom.dcmread(str(p))
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    ds.save_as(str(tmp_path / "raw"), implicit_vr=True, little_endian=True)
    assert (tmp_path / "raw").read_bytes()[:2] == b"\x08\x00" and is_dicom_file(tmp_path / "raw")
    write_slice(tmp_path / "b", slice_pixels(1), (0, 0, 1))
    (tmp_path / "b.txt").unlink()
    p.unlink()  # "raw" replaces "a" at the same position
    arr, meta = read_dicom_series(tmp_path)
    assert arr.shape == (4, 6, 2) and sorted(meta.extra["files"]) == ["b", "raw"]


# --------------------------------------------------------------------------- DICOM (real)


def test_real_monai_series_is_non_contiguous():
    folder = real("monai/CT_DICOM")
    with pytest.raises(InputError) as exc:
        read_volume(folder)
    assert "non-contiguous" in exc.value.problem
    assert "7106" in exc.value.problem


def test_real_monai_series_without_outlier(tmp_path):
    folder = real("monai/CT_DICOM")
    dst = tmp_path / "CT_DICOM"
    dst.mkdir()
    for name in ("7136", "7166", "7196"):
        shutil.copy(folder / name, dst / name)
    arr, meta = read_volume(dst)
    assert arr.shape == (16, 16, 3)
    assert meta.spacing[2] == pytest.approx(1.25, abs=1e-4)
    assert meta.spacing[0] == pytest.approx(0.488281, abs=1e-6)
    np.testing.assert_allclose(meta.affine[:3, 3], [125.0, 128.100006, 103.019997], atol=1e-4)
    assert meta.extra["rescale_intercept"] == [-1024.0]
    assert arr.min() >= -1024


def test_dicom_to_nifti_output_geometry(tmp_path):
    write_series(tmp_path / "s", [(10.0 + 2.5 * k, -30.0, 20.0) for k in range(4)], orientation=(0, 1, 0, 0, 0, -1))
    arr, meta = read_volume(tmp_path / "s")
    out = write_nifti(tmp_path / "s_seg.nii.gz", (arr > 0).astype(np.uint8), meta)
    img = nib.load(str(out))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(img.affine, meta.affine, atol=1e-5)
    json.dumps(meta.summary())


def test_real_nifti_header_codes_kept(tmp_path):
    arr, meta = read_volume(real("totalsegmentator/example_ct.nii.gz"))
    assert arr.shape == (122, 101, 112) and meta.extra.get("not_hu") is None
    out = write_nifti(tmp_path / "seg.nii.gz", (arr > 200).astype(np.uint8), meta)
    img = nib.load(str(out))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 2)
    np.testing.assert_array_equal(img.affine, meta.affine)


def test_real_single_slice_files():
    with pytest.raises(InputError, match="single slice, not a volume"):
        read_volume(real("pydicom/CT_small.dcm"))
    with pytest.raises(InputError, match="single slice, not a volume"):
        read_volume(real("monai/CT_DICOM") / "7106")


# --------------------------------------------------------------------------- files


def test_resolve_inputs(tmp_path):
    nif = tmp_path / "nif"
    nif.mkdir()
    for name in ("b.nii.gz", "a.nii", "c.txt"):
        (nif / name).write_bytes(b"x")
    write_series(tmp_path / "study" / "p2" / "s1", [(0, 0, k) for k in range(2)])
    write_series(tmp_path / "study" / "p1" / "CT", [(0, 0, k) for k in range(2)])
    write_series(tmp_path / "study" / "p2" / "CT", [(0, 0, k) for k in range(2)])

    assert resolve_inputs([str(nif)]) == [nif / "a.nii", nif / "b.nii.gz"]
    assert resolve_inputs([str(tmp_path / "study" / "p1" / "CT")]) == [tmp_path / "study" / "p1" / "CT"]
    series = resolve_inputs([str(tmp_path / "study")])
    assert series == [tmp_path / "study" / "p1" / "CT", tmp_path / "study" / "p2" / "CT",
                      tmp_path / "study" / "p2" / "s1"]
    got = resolve_inputs([str(nif / "*.nii*"), str(nif / "b.nii.gz"), str(nif)])
    assert got == [nif / "a.nii", nif / "b.nii.gz"]
    with pytest.raises(InputError, match="empty folder: no DICOM files"):
        resolve_inputs([str(nif)], kinds=("dicom",))
    with pytest.raises(InputError, match="no such file"):
        resolve_inputs([str(tmp_path / "missing.nii.gz")])
    with pytest.raises(InputError, match="no files match"):
        resolve_inputs([str(tmp_path / "*.nrrd")])
    (tmp_path / "void").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        resolve_inputs([str(tmp_path / "void")])

    outs = output_paths_for(series, tmp_path / "out")
    assert [o.name for o in outs] == ["p1_CT_seg.nii.gz", "p2_CT_seg.nii.gz", "s1_seg.nii.gz"]


def test_output_path_for(tmp_path):
    out = tmp_path / "out"
    assert output_path_for(Path("/d/case.001.nii.gz"), out) == out / "case.001_seg.nii.gz"
    assert output_path_for(Path("/d/ct.NII"), out) == out / "ct_seg.nii.gz"
    assert output_path_for(Path("/d/x.nii.gz"), out, suffix=".json", stem_suffix="") == out / "x.json"
    (tmp_path / "CT_DICOM").mkdir()
    assert output_path_for(tmp_path / "CT_DICOM", out) == out / "CT_DICOM_seg.nii.gz"


def test_io_imports_no_torch():
    import subprocess

    code = ("import sys, mis.io.volume, mis.io.nifti, mis.io.dicom, mis.io.files, mis.io.atomic; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_a_damaged_gzip_checksum_is_refused(tmp_path):
    """nibabel stops at the last voxel byte and never checks the gzip trailer; the reader must."""
    p = make_nifti(tmp_path / "crc.nii.gz", ct_like((30, 30, 20)))
    raw = bytearray(p.read_bytes())
    raw[-8] ^= 0x55  # first byte of the CRC-32 trailer
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError) as exc:
        read_nifti(p)
    assert exc.value.problem == "truncated or corrupt gzip stream"


def test_a_cd_export_with_a_dicomdir_is_found_below_its_folder(tmp_path):
    series = tmp_path / "cd" / "PT0" / "SE0"
    series.mkdir(parents=True)
    for z in range(3):
        write_slice(series / f"IM{z}", slice_pixels(z), (0, 0, 2.0 * z), instance=z + 1)
    index = Dataset()
    index.file_meta = FileMetaDataset()
    index.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    index.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    index.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    index.DirectoryRecordSequence = []
    index.save_as(str(tmp_path / "cd" / "DICOMDIR"), enforce_file_format=True)
    assert resolve_inputs([tmp_path / "cd"]) == [series]
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path / "cd" / "DICOMDIR")
    assert "DICOMDIR" in exc.value.problem


def test_folders_and_globs_expand_in_natural_order(tmp_path):
    for name in ("c10", "c2", "c1", "c11"):
        make_nifti(tmp_path / f"{name}.nii.gz", ct_like())
    expected = ["c1", "c2", "c10", "c11"]
    assert [p.name.split(".")[0] for p in resolve_inputs([tmp_path])] == expected
    assert [p.name.split(".")[0] for p in resolve_inputs([str(tmp_path / "c*.nii.gz")])] == expected


def test_pretraining_skips_label_maps_beside_the_scans(tmp_path):
    from mis.pipelines.ct_segmentation.pretrain import PretrainOptions, unlabeled_volumes
    from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING

    make_nifti(tmp_path / "case.nii.gz", ct_like((20, 18, 16)))
    make_nifti(tmp_path / "case_labels.nii.gz", (np.arange(20 * 18 * 16).reshape(20, 18, 16) % 7).astype(np.uint8))
    said = []
    volumes = unlabeled_volumes(PretrainOptions(out=tmp_path / "run", inputs=[str(tmp_path)]),
                                DEFAULT_PREPROCESSING, said.append)
    assert len(volumes) == 1 and any("case_labels.nii.gz" in line and "label map" in line for line in said)
