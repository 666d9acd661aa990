"""Tests for mis.io.image and mis.io.frames: images, frame folders, multi-frame DICOM, NIfTI sequences, previews.

Synthetic data comes from seeded generators; the real angiography files in ../shared/data/dsa are read in place
(the tests skip when they are absent) and only ever copied into tmp_path.
"""
from __future__ import annotations

import filecmp
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

from mis.errors import InputError, UsageError
from mis.io import frames as frames_module
from mis.io.frames import (
    is_frame_folder,
    is_sequence_file,
    read_sequence,
    write_preview,
    write_sequence,
)
from mis.io.image import from_unit, read_image, to_unit, write_image

DSA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsa"
XCA = "xca_vukicevic_sample2/projection0"
PHANTOM = "phantom_xa_IM8.dcm"


def real(relative: str) -> Path:
    path = DSA / relative
    if not path.exists():
        pytest.skip(f"real test data not available: {path}")
    return path


def noise(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    high = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, high, size=shape, endpoint=True, dtype=dtype)


def frame_folder(folder: Path, names, shape=(6, 8), dtype=np.uint8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_image(folder / name, noise(shape, dtype, seed=i))
    return folder


def make_xa(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 8) -> Path:
    """An uncompressed classic XA multi-frame file (or a single frame when frames is 2-D)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.SeriesNumber = "XA", "Test^Sequence", "42", 3
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.FrameTime, ds.FrameIncrementPointer = 100, 0x00181063
    ds.set_pixel_data(frames, photometric, bits_stored)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_image_round_trip_is_exact(tmp_path, dtype, suffix):
    array = noise((9, 7), dtype)
    path = write_image(tmp_path / f"a{suffix}", array)
    back, meta = read_image(path)
    assert back.dtype == dtype and np.array_equal(back, array)
    assert (meta.bit_depth, meta.channels, meta.size) == (np.dtype(dtype).itemsize * 8, 1, (9, 7))


@pytest.mark.parametrize("dtype,bits", [(np.uint8, None), (np.uint16, None), (np.uint16, 12)])
def test_to_unit_and_back(tmp_path, dtype, bits):
    array = noise((5, 4), dtype) >> (16 - bits if bits else 0)
    path = write_image(tmp_path / "a.png", array.astype(dtype))
    stored, meta = read_image(path)
    meta.bits_stored = bits
    unit = to_unit(stored, meta)
    assert unit.dtype == np.float32 and 0.0 <= unit.min() and unit.max() <= 1.0
    assert unit.max() > 0.9   # 12 bits stored fill [0, 1], not [0, 1/16]
    assert np.array_equal(from_unit(unit, meta), stored)


def test_rgb_with_equal_channels_reads_as_gray(tmp_path):
    gray = noise((6, 5))
    write_image(tmp_path / "g.png", np.repeat(gray[..., None], 3, axis=2))
    array, meta = read_image(tmp_path / "g.png")
    assert array.shape == (6, 5) and np.array_equal(array, gray) and meta.was_gray_rgb
    rgb, meta = read_image(tmp_path / "g.png", gray=False)
    assert rgb.shape == (6, 5, 3) and meta.channels == 3


def test_real_dsa_png_is_gray():
    array, meta = read_image(real("DSA_a.png"), gray=True)
    assert array.shape == (1024, 1024) and array.dtype == np.uint8 and meta.was_gray_rgb


def test_colour_refused_when_gray_is_asked(tmp_path):
    path = write_image(tmp_path / "c.png", noise((6, 5, 3)))
    assert read_image(path)[0].shape == (6, 5, 3)
    with pytest.raises(InputError, match=r"c\.png: is colour \(R, G, B differ"):
        read_image(path, gray=True)


def test_alpha_refused_unless_dropped(tmp_path):
    rgba = noise((6, 5, 4))
    rgba[0, 0, 3] = 0   # one transparent pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"a\.png: has an alpha channel \(RGBA, 4 channels\)"):
        read_image(tmp_path / "a.png")
    array, meta = read_image(tmp_path / "a.png", alpha="drop")
    assert np.array_equal(array, rgba[..., :3]) and meta.had_alpha


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((16, 32), np.uint8)
    stored[:, 16:] = 200   # right half bright
    exif = Image.Exif()
    exif[0x0112] = 6   # displayed rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    array, meta = read_image(tmp_path / "o.jpg")
    assert meta.exif_orientation == 6 and array.shape == (32, 16)
    assert np.abs(array.astype(int) - np.rot90(stored, k=-1)).mean() < 3   # bright half now at the bottom


def test_palette_image_is_converted(tmp_path):
    Image.fromarray(noise((6, 5, 3))).quantize(8).save(tmp_path / "p.png")
    array, _ = read_image(tmp_path / "p.png")
    assert array.shape == (6, 5, 3) and array.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("pil_pads_truncated", [False, True])
def test_truncated_image_is_refused(tmp_path, monkeypatch, suffix, pil_pads_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pil_pads_truncated)
    data = write_image(tmp_path / f"full{suffix}", noise((40, 30))).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(InputError, match=rf"cut\{suffix}: is truncated or not a readable image"):
        read_image(cut)


def test_not_an_image_tiny_image_and_16_bit_colour(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels\n")
    with pytest.raises(InputError, match=r"notes\.png: is truncated or not a readable image"):
        read_image(tmp_path / "notes.png")
    write_image(tmp_path / "dot.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(InputError, match=r"dot\.png: image is 1x1 pixels"):
        read_image(tmp_path / "dot.png")
    (tmp_path / "rgb16.png").write_bytes(_png_rgb16(noise((3, 4, 3), np.uint16)))
    with pytest.raises(InputError, match="16-bit colour"):   # Pillow would silently keep 8 of 16 bits
        read_image(tmp_path / "rgb16.png")


def _png_rgb16(rgb: np.ndarray) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_failed_image_write_leaves_nothing(tmp_path, monkeypatch):
    def half_written(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "a.png", noise((4, 4)))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="JPEG"):
        write_image(tmp_path / "a.jpg", noise((4, 4), np.uint16))   # refused before anything is written
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- frame folders


def test_frame_folder_round_trip_keeps_naming_and_16_bits(tmp_path):
    names = ["seq_008.png", "seq_009.png", "seq_010.png"]
    folder = frame_folder(tmp_path / "in", names, dtype=np.uint16)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    (tmp_path / "in" / "._seq_011.png").write_bytes(b"macOS resource fork")   # hidden: never a frame
    assert is_frame_folder(folder) and not is_frame_folder(tmp_path)
    frames, meta = read_sequence(folder)
    assert frames.shape == (3, 6, 8) and frames.dtype == np.uint16
    assert meta.naming.name(0) == "seq_008.png" and meta.frame_time_ms is None
    out = np.concatenate([frames, frames[-1:] // 2])
    written = write_sequence(out, meta, tmp_path / "out", frame_time_ms=None)
    assert sorted(p.name for p in written.iterdir()) == [*names, "seq_011.png"]
    again, _ = read_sequence(written)
    assert np.array_equal(again, out)


def test_frame_folder_with_a_gap_names_the_missing_frame(tmp_path):
    folder = frame_folder(tmp_path / "gap", ["f1.png", "f2.png", "f4.png"])
    with pytest.raises(InputError, match=r"gap: frame 3 is missing \(f2\.png is followed by f4\.png\)"):
        read_sequence(folder)


def test_frame_folder_with_an_odd_size_names_the_file(tmp_path):
    folder = frame_folder(tmp_path / "sizes", ["f1.png", "f2.png"])
    write_image(folder / "f3.png", noise((6, 9)))
    with pytest.raises(InputError, match=r"f3\.png: frame is 9x6 but f1\.png is 8x6"):
        read_sequence(folder)


def test_frame_folder_with_mixed_bit_depths_and_one_frame(tmp_path):
    folder = frame_folder(tmp_path / "depths", ["f1.png", "f2.png"])
    write_image(folder / "f3.png", noise((6, 8), np.uint16))
    with pytest.raises(InputError, match=r"f3\.png: frame is 16-bit \(uint16\) but f1\.png is 8-bit"):
        read_sequence(folder)
    single = frame_folder(tmp_path / "single", ["f1.png"])
    with pytest.raises(InputError, match="one frame: nothing to interpolate between"):
        read_sequence(single)


def test_real_xca_folder_and_unchanged_jpeg_frames_are_copied(tmp_path):
    frames, meta = read_sequence(real(XCA))
    assert frames.shape == (37, 512, 512) and frames.dtype == np.uint8
    assert (meta.naming.prefix, meta.naming.width, meta.naming.suffix) == ("IM0_", 2, ".jpg")
    first = frames[:3]   # write three frames with one new frame between the first two
    out = np.stack([first[0], first[0] // 2 + first[1] // 2, first[1], first[2]])
    meta.frame_paths, meta.frame_count = meta.frame_paths[:3], 3
    target = write_sequence(out, meta, tmp_path / "out", frame_time_ms=None, inserted=[False, True, False, False])
    assert filecmp.cmp(target / "IM0_03.jpg", meta.frame_paths[1], shallow=False)   # not encoded again


def test_failed_folder_write_leaves_nothing(tmp_path, monkeypatch):
    folder = frame_folder(tmp_path / "in", ["f1.png", "f2.png", "f3.png"])
    frames, meta = read_sequence(folder)
    calls = []

    def failing(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        Path(path).write_bytes(b"frame")

    monkeypatch.setattr(frames_module, "write_image", failing)
    with pytest.raises(OSError, match="disk full"):
        write_sequence(frames, meta, tmp_path / "out", frame_time_ms=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_write_never_replaces_the_input_or_other_files(tmp_path):
    folder = frame_folder(tmp_path / "in", ["f1.png", "f2.png"])
    frames, meta = read_sequence(folder)
    with pytest.raises(UsageError, match="replace the input"):
        write_sequence(frames, meta, folder, frame_time_ms=None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "report.pdf").write_bytes(b"%PDF")
    with pytest.raises(UsageError, match="holds other files"):
        write_sequence(frames, meta, tmp_path / "busy", frame_time_ms=None)
    with pytest.raises(ValueError, match="uint8"):
        write_sequence(frames.astype(np.float32), meta, tmp_path / "out", frame_time_ms=None)


# --------------------------------------------------------------------------- DICOM


def test_real_phantom_dicom_reads():
    frames, meta = read_sequence(real(PHANTOM))
    assert frames.shape == (8, 512, 512) and frames.dtype == np.uint8 and meta.bit_depth == 8
    assert meta.frame_time_ms == pytest.approx(66.67, abs=0.01) and meta.frame_time_source == "FrameTime"
    assert meta.photometric == "MONOCHROME2" and "PixelData" not in meta.dicom


def test_truncated_dicom_is_refused(tmp_path):
    data = real(PHANTOM).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.dcm: is truncated"):
        read_sequence(cut)


def test_dicom_write_round_trip(tmp_path):
    frames, meta = read_sequence(real(PHANTOM))
    inserted = [i % 2 == 1 for i in range(15)]
    out = np.empty((15, 512, 512), np.uint8)
    out[::2] = frames
    out[1::2] = (frames[:-1].astype(np.uint16) + frames[1:]) // 2
    target = write_sequence(out, meta, tmp_path / "out.dcm", frame_time_ms=meta.frame_time_ms / 2,
                            inserted=inserted)
    ds = pydicom.dcmread(target)
    source = meta.dicom
    assert ds.NumberOfFrames == 15 and float(ds.FrameTime) == pytest.approx(float(source.FrameTime) / 2, rel=1e-4)
    assert ds.CineRate == ds.RecommendedDisplayFrameRate == 30 and ds.FrameIncrementPointer == 0x00181063
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientName == source.PatientName
    assert ds.PatientID == source.PatientID and ds.SeriesNumber != source.SeriesNumber
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and "2, 4, 6" in ds.DerivationDescription
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.StartTrim, ds.StopTrim, ds.RepresentativeFrameNumber) == (1, 15, 9)   # input frame 5 is now 9
    assert np.array_equal(ds.pixel_array, out)
    assert is_sequence_file(target)


def test_monochrome1_is_inverted_and_written_back(tmp_path):
    stored = noise((3, 4, 5), np.uint16) >> 4   # 12 bits stored
    path = make_xa(tmp_path / "m1", stored, "MONOCHROME1", bits_stored=12)
    assert is_sequence_file(path)   # no suffix: found by its DICM magic
    frames, meta = read_sequence(path)
    assert meta.inverted and meta.image.bits_stored == 12
    assert np.array_equal(frames, 4095 - stored)
    write_sequence(frames, meta, tmp_path / "out.dcm", frame_time_ms=100.0)
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    assert np.array_equal(ds.pixel_array, stored)


def test_single_frame_dicom_is_refused(tmp_path):
    path = make_xa(tmp_path / "one.dcm", noise((4, 5)))
    with pytest.raises(InputError, match=r"one\.dcm: single-frame DICOM"):
        read_sequence(path)


# --------------------------------------------------------------------------- NIfTI and previews


@pytest.mark.parametrize("shape,dtype", [((7, 5, 4), np.uint16), ((7, 5, 1, 4), np.int16)])
def test_nifti_round_trip(tmp_path, shape, dtype):
    data = (np.random.default_rng(0).random(shape) * 1000).astype(dtype)
    affine = np.array([[0.3, 0, 0, -10], [0, -0.3, 0, 5], [0, 0, 1, 2], [0, 0, 0, 1]])
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = 0.1
    nib.save(image, tmp_path / "seq.nii.gz")
    frames, meta = read_sequence(tmp_path / "seq.nii.gz")
    assert frames.shape == (4, 5, 7) and meta.frame_time_ms == pytest.approx(100.0)
    assert np.array_equal(frames[2], data.reshape(7, 5, 4)[:, :, 2].T)   # frame t = data[:, :, t].T
    write_sequence(frames, meta, tmp_path / "out.nii.gz", frame_time_ms=50.0)
    again, written = read_sequence(tmp_path / "out.nii.gz")
    assert np.array_equal(again, frames) and again.dtype == dtype and written.nifti_shape == shape
    assert np.allclose(written.affine, affine) and written.frame_time_ms == pytest.approx(50.0)


def test_gif_preview(tmp_path):
    frames = noise((5, 8, 9), np.uint16)
    path = write_preview(frames, tmp_path / "p.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.size == (9, 8) and gif.info["duration"] == 100
    with pytest.raises(UsageError, match="GIF"):
        write_preview(frames, tmp_path / "p.mp4", fps=10)
    assert sorted(os.listdir(tmp_path)) == ["p.gif"]


def test_io_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, mis.io.frames, mis.io.image; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_non_image_is_named_without_pillows_file_object(tmp_path):
    from mis.errors import InputError
    from mis.io.image import read_image

    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(InputError) as info:
        read_image(tmp_path / "notes.jpg")
    assert "notes.jpg" in str(info.value) and "not a readable image" in str(info.value)
    assert "object at 0x" not in str(info.value)
