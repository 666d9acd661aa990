"""The seeded bad-input corpus: every class of broken, damaged, foreign or odd input that a user can hand to a
batch command, made on the fly by these functions (no committed binaries).

`tests/test_bad_inputs.py` runs each case through the real CLI next to a good input and checks the contract:
the exit code, one line on stderr naming the file and its problem, no traceback, no output for the bad item, the
good item done, and every input unchanged.

A case is (name, command, make, problem, kind):
- `command`: segment | vocode | mel | bwe | interpolate | seaice | count | battery (the batch commands) or model:<command> (a bad `--model`) or
  output:<command> (a bad `-o`);
- `make(folder) -> path`: writes the bad input below `folder` and returns what to pass on the command line (for
  seaice the bad raster of a pair: the SAR, or the MSI when the case's name starts with `msi_`);
- `problem`: a regular expression the error line must match;
- `kind`: "error" (the item fails, exit 1), "usage" (the whole command is refused, exit 2), "warning" (the item is
  done and a warning names it).
"""
from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

SEED = 1234


@dataclass(frozen=True)
class Case:
    name: str
    command: str
    make: Callable[[Path], Path]
    problem: str
    kind: str = "error"


CASES: list[Case] = []


def case(command: str, name: str, problem: str, kind: str = "error"):
    def register(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
        CASES.append(Case(name, command, make, problem, kind))
        return make
    return register


def add(command: str, name: str, make: Callable[[Path], Path], problem: str, kind: str = "error") -> None:
    CASES.append(Case(name, command, make, problem, kind))


# ---------------------------------------------------------------------------------------------- CT volumes

def ct_volume(shape=(24, 20, 16), seed=SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(40, 30, shape) - 1000 * (rng.random(shape) < 0.3)).astype(np.int16)


def nifti(path: Path, data: np.ndarray, affine=None, version: int = 1) -> Path:
    image_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = image_class(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    return path


def _good_nifti_bytes(compressed: bool = True) -> bytes:
    image = nib.Nifti1Image(ct_volume((40, 36, 30)), np.diag([2.0, 2.0, 2.0, 1.0]))
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if compressed else raw


for fraction in (0.1, 0.5, 0.9):
    add("segment", f"nifti_gz_truncated_{int(fraction * 100)}",
        lambda f, fr=fraction: _write(f / "cut.nii.gz", _good_nifti_bytes()[:int(len(_good_nifti_bytes()) * fr)]),
        "truncated or corrupt gzip stream")
for position in (0.3, 0.7):
    add("segment", f"nifti_gz_flipped_byte_{int(position * 100)}",
        lambda f, p=position: _write(f / "flip.nii.gz", _flip(_good_nifti_bytes(), p)), "truncated or corrupt gzip")
for fraction in (0.5, 0.9):
    add("segment", f"nifti_truncated_voxels_{int(fraction * 100)}",
        lambda f, fr=fraction: _write(f / "cut.nii", _good_nifti_bytes(False)[:int(len(_good_nifti_bytes(False)) * fr)]),
        "truncated")
add("segment", "nifti_2d", lambda f: nifti(f / "flat.nii.gz", ct_volume((20, 20, 1))[..., 0]), "2-D image")
add("segment", "nifti_4d", lambda f: nifti(f / "time.nii.gz", np.stack([ct_volume()] * 3, -1)), "4-D volume")
add("segment", "nifti_5d", lambda f: nifti(f / "five.nii.gz", ct_volume()[..., None, None].repeat(2, 3).repeat(2, 4)),
    "5-D volume")
add("segment", "nifti_single_slice", lambda f: nifti(f / "one.nii.gz", ct_volume((20, 20, 1))), "single slice")
add("segment", "nifti_tiny", lambda f: nifti(f / "tiny.nii.gz", ct_volume((4, 4, 4))), "too small")
add("segment", "nifti_some_nan", lambda f: nifti(f / "nan.nii.gz", _with(ct_volume().astype(np.float32), np.nan)),
    "NaN voxels")
add("segment", "nifti_all_nan", lambda f: nifti(f / "allnan.nii.gz", np.full((20, 20, 16), np.nan, np.float32)),
    "NaN")
add("segment", "nifti_inf", lambda f: nifti(f / "inf.nii.gz", _with(ct_volume().astype(np.float32), np.inf)),
    "infinite voxels")
add("segment", "nifti_complex64", lambda f: nifti(f / "complex.nii.gz", ct_volume().astype(np.complex64)),
    "complex-valued voxels")
add("segment", "nifti_rgb24",
    lambda f: nifti(f / "rgb.nii.gz", np.zeros((20, 20, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])),
    "not numbers|not a readable NIfTI|cannot read voxel data")
add("segment", "nifti_zero_spacing", lambda f: _edit_affine(nifti(f / "zero.nii", ct_volume()), 0, 0.0),
    "zero or degenerate voxel spacing")
add("segment", "nifti_singular_affine",
    lambda f: nifti(f / "singular.nii.gz", ct_volume(), np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0],
                                                                   [0, 0, 0, 1]], float)),
    "degenerate voxel spacing")
add("segment", "nifti_nan_affine", lambda f: _edit_affine(nifti(f / "nanaff.nii", ct_volume()), 0, float("nan")),
    "NaN|invalid affine")
add("segment", "nifti_empty_gz", lambda f: _write(f / "empty.nii.gz", b""), "empty file")
add("segment", "nifti_empty", lambda f: _write(f / "empty.nii", b""), "empty file")
add("segment", "nifti_text_gz", lambda f: _write(f / "notes.nii.gz", b"this is not an image\n" * 40),
    "not a NIfTI file")
add("segment", "nifti_text", lambda f: _write(f / "notes.nii", b"this is not an image\n" * 40), "not a NIfTI file")
add("segment", "nifti_random_bytes",
    lambda f: _write(f / "noise.nii", np.random.default_rng(SEED).bytes(4000)), "not a NIfTI file|not a readable")
add("segment", "nifti_gzip_named_nii", lambda f: _write(f / "packed.nii", _good_nifti_bytes()), "rename it to .nii.gz")
add("segment", "nifti_gzip_of_text", lambda f: _write(f / "text.nii.gz", gzip.compress(b"hello" * 200)),
    "not a NIfTI file|no valid NIfTI header")


@case("segment", "nifti2_declares_2e31_voxels", "declares .* voxels .* truncated file or a damaged header")
def _huge_nifti2(folder: Path) -> Path:
    path = nifti(folder / "huge.nii", ct_volume(), version=2)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8q", raw, 16, 3, 2 ** 11, 2 ** 10, 2 ** 10, 1, 1, 1, 1)   # dim[0..7]: 2**31 voxels
    return _write(path, bytes(raw))


@case("segment", "nifti1_declares_huge_dims", "declares .* voxels .* truncated file or a damaged header")
def _huge_nifti1(folder: Path) -> Path:
    path = nifti(folder / "big.nii", ct_volume())
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8h", raw, 40, 3, 30000, 30000, 3000, 1, 1, 1, 1)
    return _write(path, bytes(raw))


for suffix in (".nrrd", ".mha", ".mgz"):
    add("segment", f"unsupported_{suffix[1:]}", lambda f, s=suffix: _write(f / f"scan{s}", b"\0" * 600),
        f"unsupported format '{suffix}'")
add("segment", "nifti_without_suffix", lambda f: _write(f / "scan_noext", _good_nifti_bytes()), "rename it")
add("segment", "missing_file", lambda f: f / "nowhere.nii.gz", "no such file or directory")
add("segment", "glob_without_match", lambda f: Path(str(f / "*.nothing")), "no files match this pattern")
add("segment", "empty_folder", lambda f: _mkdir(f / "empty_series"), "empty folder")
add("segment", "folder_named_like_nifti", lambda f: _mkdir(f / "folder.nii.gz"), "empty folder|is a folder")


@case("segment", "symlink_loop", "symbolic link loop")
def _loop(folder: Path) -> Path:
    os.symlink(folder / "loop_b.nii.gz", folder / "loop_a.nii.gz")
    os.symlink(folder / "loop_a.nii.gz", folder / "loop_b.nii.gz")
    return folder / "loop_a.nii.gz"


@case("segment", "broken_symlink", "broken symbolic link")
def _broken(folder: Path) -> Path:
    os.symlink(folder / "gone.nii.gz", folder / "dangling.nii.gz")
    return folder / "dangling.nii.gz"


@case("segment", "fifo", "not a regular file")
def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.nii.gz")
    return folder / "pipe.nii.gz"


# ---- DICOM series (pydicom writes small synthetic CT slices)

def dicom_slice(path: Path, position, pixels=None, series_uid="1.2.826.0.1.3680043.8.498.77", orientation=(1, 0, 0,
                0, 1, 0), modality="CT", sop_class=None, **extra) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.full((12, 10), 40, np.int16) if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9", series_uid
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 2, int(abs(position[2]) * 10) + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = ["1.5", "1.5"]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def dicom_series(folder: Path, positions, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, position in enumerate(positions):
        dicom_slice(folder / f"IM{k:04d}.dcm", position, **kw)
    return folder


def _series(n=8, step=3.0):
    return [(0.0, 0.0, step * k) for k in range(n)]


add("segment", "dicom_single_file", lambda f: dicom_slice(f / "lonely.dcm", (0, 0, 0)), "single|one slice|a series")
add("segment", "dicom_gap", lambda f: dicom_series(f / "gap", [p for k, p in enumerate(_series(10)) if k != 4]),
    "gap")
add("segment", "dicom_two_series",
    lambda f: (dicom_series(f / "two", _series(4)),
               dicom_series(f / "two", [(0, 0, 50.0 + 3 * k) for k in range(3)], series_uid="1.2.3.4.5"))[0],
    "2 DICOM series in one folder")
add("segment", "dicom_gantry_tilt",
    lambda f: dicom_series(f / "tilt", [(0.0, 0.8 * k, 3.0 * k) for k in range(6)]), "tilt")
add("segment", "dicom_duplicate_positions",
    lambda f: dicom_series(f / "dup", [(0, 0, 0), (0, 0, 3), (0, 0, 3), (0, 0, 6)]), "duplicate slice positions")


add("segment", "dicom_two_frames_of_reference",
    lambda f: (dicom_series(f / "for", _series(3), FrameOfReferenceUID="1.2.3.1"),
               dicom_series(f / "for2", [(0, 0, 9.0 + 3 * k) for k in range(3)], FrameOfReferenceUID="1.2.3.2"),
               [p.rename(f / "for" / f"B{p.name}") for p in sorted((f / "for2").iterdir())])[0],
    "inconsistent frame of reference")


@case("segment", "dicom_slice_sizes_differ", "inconsistent rows/columns")
def _sizes(folder: Path) -> Path:
    series = dicom_series(folder / "sizes", _series(4))
    dicom_slice(series / "odd.dcm", (0, 0, 12.0), pixels=np.zeros((8, 8), np.int16))
    return series


@case("segment", "dicom_truncated_slice", "truncated|cannot read|not a readable|pixel data")
def _truncated_slice(folder: Path) -> Path:
    series = dicom_series(folder / "cut", _series(5))
    raw = (series / "IM0002.dcm").read_bytes()
    (series / "IM0002.dcm").write_bytes(raw[: len(raw) - 150])
    return series


@case("segment", "dicom_without_pixels", "missing pixel data")
def _no_pixels(folder: Path) -> Path:
    import pydicom

    series = dicom_series(folder / "nopix", _series(4))
    ds = pydicom.dcmread(str(series / "IM0001.dcm"))
    del ds.PixelData
    ds.save_as(str(series / "IM0001.dcm"), enforce_file_format=True)
    return series


@case("segment", "dicomdir_as_file", "DICOMDIR")
def _dicomdir(folder: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"   # Media Storage Directory Storage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["dicomdir"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "MIS"
    ds.save_as(str(folder / "DICOMDIR"), enforce_file_format=True)
    return folder / "DICOMDIR"


add("segment", "folder_of_text_files",
    lambda f: (_mkdir(f / "notes"), _write(f / "notes" / "a.txt", b"x" * 300))[0], "empty folder|no DICOM")

# ------------------------------------------------------------------------------------------------ mels

def mel_array(bands=80, frames=40, seed=SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(-5.0, 1.5, (bands, frames)).clip(-11.0, 2.0).astype(np.float32)


def npy(path: Path, array) -> Path:
    np.save(path, array, allow_pickle=True)
    return path


for bands in (40, 128):
    add("vocode", f"mel_{bands}_bands", lambda f, b=bands: npy(f / f"m{b}.npy", mel_array(b)),
        f"has {bands} mel bands; this model expects 80")
add("vocode", "mel_transposed", lambda f: npy(f / "t.npy", mel_array().T), "looks like \\[frames, n_mels\\]")
add("vocode", "mel_linear", lambda f: npy(f / "lin.npy", np.exp(mel_array())), "linear \\(not log\\) mel")
add("vocode", "mel_decibels", lambda f: npy(f / "db.npy", 20 * mel_array() / np.log(10)),
    "below log|another log base|dB")
add("vocode", "mel_log10", lambda f: npy(f / "l10.npy", _log10_mel()), "log10 mel")
add("vocode", "mel_too_loud", lambda f: npy(f / "loud.npy", _with(mel_array(), 20.0)), "values reach")
add("vocode", "mel_nan", lambda f: npy(f / "nan.npy", _with(mel_array(), np.nan)), "NaN or infinite")
add("vocode", "mel_inf", lambda f: npy(f / "inf.npy", _with(mel_array(), -np.inf)), "NaN or infinite")
add("vocode", "mel_empty", lambda f: npy(f / "empty.npy", np.zeros((0, 0), np.float32)), "empty")
add("vocode", "mel_1d", lambda f: npy(f / "flat.npy", mel_array()[0]), "2-D")
add("vocode", "mel_3d", lambda f: npy(f / "cube.npy", np.stack([mel_array()] * 2)), "2-D")
add("vocode", "mel_one_frame", lambda f: npy(f / "one.npy", mel_array(80, 1)), "frame")
add("vocode", "mel_complex", lambda f: npy(f / "cplx.npy", mel_array().astype(np.complex64)), "numeric array")
add("vocode", "mel_bool", lambda f: npy(f / "bool.npy", mel_array() > 0), "numeric array")
add("vocode", "mel_strings", lambda f: npy(f / "str.npy", np.array([["a"] * 4] * 80)), "numeric array")
add("vocode", "mel_structured",
    lambda f: npy(f / "rec.npy", np.zeros((80, 4), dtype=[("a", "f4"), ("b", "f4")])), "numeric array")
add("vocode", "mel_pickled_objects", lambda f: npy(f / "obj.npy", np.array([{"a": 1}, None], dtype=object)),
    "pickled objects")
add("vocode", "mel_npz_archive", lambda f: _npz(f / "arch.npy", mel=mel_array()), "npz archive")
add("vocode", "mel_text_file", lambda f: _write(f / "text.npy", b"0.1 0.2 0.3\n" * 100), "not a .npy file")
add("vocode", "mel_wav_renamed", lambda f: _rename(_wav(f / "x.wav"), f / "x.npy"), "not a .npy file")
add("vocode", "mel_wav_given", lambda f: _wav(f / "speech.wav"), "audio file, not a mel")
add("vocode", "mel_empty_file", lambda f: _write(f / "zero.npy", b""), "not a .npy file|empty")
for fraction in (0.3, 0.8):
    add("vocode", f"mel_truncated_{int(fraction * 100)}",
        lambda f, fr=fraction: _truncate(npy(f / "cut.npy", mel_array(80, 400)), fr), "truncated")


@case("vocode", "mel_header_declares_terabytes", "declares shape .* truncated file or a damaged header")
def _terabyte_mel(folder: Path) -> Path:
    path = npy(folder / "huge.npy", mel_array(80, 10))
    raw = path.read_bytes().replace(b"(80, 10)", b"(80, 1000000000000)")
    return _write(path, raw)


@case("vocode", "mel_damaged_header", "damaged header|not a readable")
def _damaged_header(folder: Path) -> Path:
    path = npy(folder / "hdr.npy", mel_array())
    raw = bytearray(path.read_bytes())
    raw[20:40] = b"#" * 20
    return _write(path, bytes(raw))


@case("vocode", "mel_of_another_convention", "another mel convention .*hop_length 80 vs 256")
def _other_convention(folder: Path) -> Path:
    path = npy(folder / "take_mel.npy", mel_array())
    (folder / "take_mel.json").write_text(json.dumps({"mel": {"sample_rate": 16000, "hop_length": 80,
                                                              "win_length": 320, "n_fft": 1024, "n_mels": 80}}))
    return path


add("vocode", "mel_missing", lambda f: f / "absent.npy", "no such file or directory|not found")
add("vocode", "mel_symlink_loop", lambda f: _symlink_loop(f, "m.npy"), "symbolic link loop")

# ------------------------------------------------------------------------------------------------ audio

def speech(seconds=0.5, rate=22050, seed=SEED) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 160 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _wav(path: Path, samples=None, rate=22050, subtype="PCM_16") -> Path:
    import soundfile as sf

    sf.write(str(path), speech() if samples is None else samples, rate, subtype=subtype)
    return path


add("mel", "wav_empty_file", lambda f: _write(f / "empty.wav", b""), "empty|not a readable|cannot read|format")
add("mel", "wav_text", lambda f: _write(f / "notes.wav", b"hello world\n" * 50), "not a readable|format|audio")
for fraction in (0.3, 0.7):
    add("mel", f"wav_truncated_{int(fraction * 100)}",
        lambda f, fr=fraction: _truncate(_wav(f / "cut.wav"), fr), "truncated WAV")
add("mel", "wav_header_only", lambda f: _wav(f / "silent0.wav", np.zeros(0, np.float32)), "too short|no samples|empty")
add("mel", "wav_too_short", lambda f: _wav(f / "blip.wav", speech(0.01)), "too short")
add("mel", "wav_float_nan", lambda f: _wav(f / "nan.wav", _with(speech(), np.nan), subtype="FLOAT"),
    "NaN or infinite")
add("mel", "wav_float_inf", lambda f: _wav(f / "inf.wav", _with(speech(), np.inf), subtype="FLOAT"),
    "NaN or infinite")
add("mel", "flac_random_bytes", lambda f: _write(f / "noise.flac", np.random.default_rng(SEED).bytes(3000)),
    "not a readable|format|audio")
add("mel", "mp3_garbage", lambda f: _write(f / "song.mp3", b"ID3" + np.random.default_rng(SEED).bytes(2000)),
    "not a readable|format|audio")
add("mel", "wav_folder_named_like_audio", lambda f: _mkdir(f / "folder.wav"), "empty folder")
add("mel", "wav_missing", lambda f: f / "absent.wav", "no such file or directory|not found")
add("mel", "wav_corrupt_format_chunk", lambda f: _corrupt_fmt(_wav(f / "fmt.wav")), "not a readable|format|audio")
add("mel", "m4a_unsupported", lambda f: _write(f / "voice.m4a", b"\0\0\0 ftypM4A " + b"\0" * 400),
    "not a readable|format|audio")
add("mel", "wav_symlink_loop", lambda f: _symlink_loop(f, "w.wav"), "symbolic link loop")

# ------------------------------------------------------------------------------------- bandwidth extension
# (the corpus' tiny model extends 16 kHz audio to 48 kHz)

add("bwe", "bwe_wav_empty_file", lambda f: _write(f / "empty.wav", b""), "file is empty")
add("bwe", "bwe_wav_text", lambda f: _write(f / "notes.wav", b"hello world\n" * 50), "not a readable audio file")
add("bwe", "bwe_wav_truncated", lambda f: _truncate(_wav(f / "cut.wav", rate=16000), 0.5), "truncated WAV")
add("bwe", "bwe_wav_header_only", lambda f: _wav(f / "none.wav", np.zeros(0, np.float32), rate=16000),
    "no samples")
add("bwe", "bwe_wav_silent", lambda f: _wav(f / "quiet.wav", np.zeros(8000, np.float32), rate=16000), "silent")
add("bwe", "bwe_wav_nan", lambda f: _wav(f / "nan.wav", _with(speech(0.5, 16000), np.nan), 16000, "FLOAT"),
    "NaN or infinite")
add("bwe", "bwe_wav_eight_channels",
    lambda f: _wav(f / "octo.wav", np.repeat(speech(0.5, 16000)[:, None], 8, axis=1), rate=16000), "8 channels")
add("bwe", "bwe_wav_already_at_target_rate", lambda f: _wav(f / "wide.wav", speech(0.5, 48000), rate=48000),
    "already at 48000 Hz")
add("bwe", "bwe_wav_below_the_model_input_rate", lambda f: _wav(f / "phone.wav", speech(0.5, 8000), rate=8000),
    "at 8000 Hz.*trained for 8000 Hz")
add("bwe", "bwe_wav_missing", lambda f: f / "absent.wav", "no such file or directory|not found")
add("bwe", "bwe_wav_symlink_loop", lambda f: _symlink_loop(f, "b.wav"), "symbolic link loop")


@case("model:bwe", "model_of_vocoder_task_for_bwe", "checkpoint is for task 'vocoder'", kind="usage")
def _vocoder_for_bwe(folder: Path) -> Path:
    return Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "vocode.safetensors"


# ------------------------------------------------------------------------------------------ interpolation
# (the corpus' tiny model is grayscale and 8-bit; a good input is a folder of numbered 48 x 64 PNG frames)

def frame_stack(count=3, shape=(48, 64), dtype=np.uint8, seed=SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random(shape)
    top = np.iinfo(dtype).max
    return np.stack([(np.roll(base, k, axis=1) * top).astype(dtype) for k in range(count)])


def frame_folder(folder: Path, frames, numbers=None, suffix=".png", mode=None) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in zip(numbers or range(1, len(frames) + 1), frames):
        (Image.fromarray(frame, mode) if mode else Image.fromarray(frame)).save(folder / f"frame_{number:03d}{suffix}")
    return folder


def multiframe_dicom(path: Path, frames: np.ndarray, bits_stored: int = 8) -> Path:
    """A minimal uncompressed multi-frame XA file (pydicom), as an angiography system exports one (8-bit, or
    `bits_stored` > 8 in 16-bit words, as DSA systems store 10- and 12-bit pixels)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "XA", "Corpus^Case", "C1"
    ds.NumberOfFrames, ds.FrameTime = len(frames), 66.67
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = (8 if bits_stored <= 8 else 16), bits_stored
    ds.HighBit, ds.PixelRepresentation = bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(frames, np.uint8 if bits_stored <= 8 else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


add("interpolate", "frames_with_a_gap_in_numbering", lambda f: frame_folder(f / "gapseq", frame_stack(3), [1, 2, 4]),
    "frame 3 is missing")
add("interpolate", "frames_of_different_sizes",
    lambda f: frame_folder(f / "sizeseq", [*frame_stack(2), frame_stack(1, (40, 64))[0]]), "frame is 64x40 but")
add("interpolate", "frames_one_only", lambda f: frame_folder(f / "oneseq", frame_stack(1)), "one frame")
add("interpolate", "frames_rgba_with_transparency",
    lambda f: frame_folder(f / "rgbaseq", [np.dstack([x, x, x, np.where(x > 128, 255, 0).astype(np.uint8)])
                                           for x in frame_stack(2)], mode="RGBA"), "alpha channel")
add("interpolate", "frames_sixteen_bit_for_an_eight_bit_model",
    lambda f: frame_folder(f / "deepseq", frame_stack(3, dtype=np.uint16)), "16-bit frames, but this model")
add("interpolate", "frames_colour_for_a_grayscale_model",
    lambda f: frame_folder(f / "colourseq", [np.dstack([x, x[::-1], x]) for x in frame_stack(2)]), "colour")
add("interpolate", "frames_too_small", lambda f: frame_folder(f / "tinyseq", frame_stack(2, (8, 8))), "too small")
add("interpolate", "frames_truncated_png",
    lambda f: _truncate(frame_folder(f / "cutseq", frame_stack(3)) / "frame_002.png", 0.5).parent,
    "truncated|not a readable")
add("interpolate", "frames_text_named_png",
    lambda f: _write(frame_folder(f / "textseq", frame_stack(2)) / "frame_003.png", b"not an image\n" * 20).parent,
    "truncated|not a readable")
add("interpolate", "dicom_truncated",
    lambda f: _truncate(multiframe_dicom(f / "cut.dcm", frame_stack(4)), 0.6), "truncated")
add("interpolate", "dicom_text", lambda f: _write(f / "notes.dcm", b"hello\n" * 100), "not a readable DICOM|not DICOM")
add("interpolate", "dicom_twelve_bit_for_an_eight_bit_model",
    lambda f: multiframe_dicom(f / "deep.dcm", frame_stack(3).astype(np.uint16) * 16, bits_stored=12),
    r"12-bit \(stored in 16-bit words\) frames, but this model")
add("interpolate", "dicom_single_frame", lambda f: multiframe_dicom(f / "still.dcm", frame_stack(1)), "single-frame|one frame")
add("interpolate", "nifti_sequence_with_nan",
    lambda f: nifti(f / "nancine.nii.gz", np.where(np.arange(48 * 64 * 3).reshape(64, 48, 3) == 5, np.nan, 1.0)
                    .astype(np.float32)), "NaN")
add("interpolate", "nifti_volume_not_a_sequence",
    lambda f: nifti(f / "vol.nii.gz", np.zeros((16, 16, 4, 3), np.float32)), "frame sequence is")
add("interpolate", "sequence_missing", lambda f: f / "absent.dcm", "no such file or directory|not found")


@case("model:interpolate", "model_of_bwe_task_for_interpolate", "checkpoint is for task 'bwe'", kind="usage")
def _bwe_for_interpolate(folder: Path) -> Path:
    return Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "bwe.safetensors"



# ------------------------------------------------------------------------------------------------ sea ice
# A pair is a SAR and an MSI GeoTIFF (`mis seaice --pairs CSV`); the harness pairs a bad SAR with the good MSI and a
# bad MSI (cases named msi_*) with a copy of the good SAR.

def seaice_scene(folder: Path, seed: int = 3, size: int = 32, **options) -> dict[str, Path]:
    from mis.pipelines.seaice.synthetic import make_scene, write_scene_geotiffs

    return write_scene_geotiffs(make_scene(seed, coarse_size=size), folder, **options)


def _rewritten(source: Path, target: Path, data=None, **profile) -> Path:
    import rasterio

    with rasterio.open(source) as src:
        values = src.read() if data is None else data(src.read())
        with rasterio.open(target, "w", **{**src.profile, "count": values.shape[0], **profile}) as dst:
            dst.write(values)
    return target


def _scene_file(role: str, name: str, **options) -> Callable[[Path], Path]:
    """A raster made from a fresh synthetic scene's `role` file ("sar" or "msi")."""
    def make(folder: Path) -> Path:
        files = seaice_scene(folder / f"scene_{name}", **options)
        return _rewritten(files[role], folder / f"{name}.tif")
    return make


def _edited(role: str, name: str, data=None, **profile) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        files = seaice_scene(folder / f"scene_{name}")
        return _rewritten(files[role], folder / f"{name}.tif", data, **profile)
    return make


def _cut(role: str, name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        raw = seaice_scene(folder / f"scene_{name}")[role].read_bytes()
        return _write(folder / f"{name}.tif", raw[: len(raw) // 2])
    return make


def _png_as_tif(folder: Path) -> Path:
    from PIL import Image

    path = folder / "photo.tif"
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(path, format="PNG")
    return path


add("seaice", "sar_without_crs", _edited("sar", "nocrs", crs=None), "no coordinate reference system")
add("seaice", "sar_one_band_for_a_two_band_model", _edited("sar", "hhonly", lambda a: a[:1]), "1 SAR band")
add("seaice", "sar_text_named_tif", lambda f: _write(f / "notes.tif", b"not a raster\n" * 50), "not a readable raster")
add("seaice", "sar_truncated_tiff", _cut("sar", "cutsar"), "truncated|not a readable")
add("seaice", "sar_empty_file", lambda f: _write(f / "zero.tif", b""), "empty|not a readable")
add("seaice", "sar_all_nan", _edited("sar", "nansar", lambda a: np.full_like(a, np.nan)), "no finite SAR|all nodata")
add("seaice", "sar_png_without_georeference", _png_as_tif, "no coordinate reference system|not georeferenced")
add("seaice", "sar_missing", lambda f: f / "absent.tif", "no such file|not found|does not exist")
add("seaice", "sar_neither_db_nor_linear", _edited("sar", "dn", lambda a: np.full_like(a, 500.0)),
    "cannot tell whether the SAR values are dB or linear")
add("seaice", "msi_without_crs", _edited("msi", "msinocrs", crs=None), "no coordinate reference system")
add("seaice", "msi_far_from_the_sar", _scene_file("msi", "msifar", origin=(2_000_000.0, 2_000_000.0)), "no overlap")
add("seaice", "msi_three_bands_for_a_four_band_model", _edited("msi", "msirgb", lambda a: a[:3]), "3 MSI band")
add("seaice", "msi_all_nodata", _edited("msi", "msiempty", lambda a: np.zeros_like(a), nodata=0), "no data")
add("seaice", "msi_truncated_tiff", _cut("msi", "msicut"), "truncated|not a readable")
add("seaice", "msi_text_named_tif", lambda f: _write(f / "msinotes.tif", b"hello\n" * 50), "not a readable raster")


# ------------------------------------------------------------------------------------------------ crowd counting
def crowd_image(path: Path, size=(48, 64), seed: int = SEED, mode: str | None = None, array=None) -> Path:
    from PIL import Image

    from mis.pipelines.count.synthetic import make_crowd_scene

    image = make_crowd_scene(seed, height=max(size[0], 16), width=max(size[1], 16)).image[:size[0], :size[1]] \
        if array is None else array
    (Image.fromarray(image, mode) if mode else Image.fromarray(image)).save(path)
    return path


def _truncated_jpeg(folder: Path) -> Path:
    raw = crowd_image(folder / "full.jpg").read_bytes()
    return _write(folder / "cutphoto.jpg", raw[: len(raw) // 3])


def _transparent_png(folder: Path) -> Path:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = 128
    return crowd_image(folder / "glass.png", array=rgba)


def _nan_tiff(folder: Path) -> Path:
    return crowd_image(folder / "nanshot.tif", array=np.full((40, 40), np.nan, np.float32))


add("count", "image_truncated_jpeg", _truncated_jpeg, "truncated|not a readable")
add("count", "image_one_pixel", lambda f: crowd_image(f / "dot.png", size=(1, 1)), "too small")
add("count", "image_rgba_with_transparency", _transparent_png, "transparen|alpha")
add("count", "image_text_named_jpg", lambda f: _write(f / "caption.jpg", b"a crowd\n" * 40), "not a readable|not an image")
add("count", "image_empty_file", lambda f: _write(f / "blank.png", b""), "empty|not a readable")
add("count", "image_float_nan", _nan_tiff, "NaN")
add("count", "image_missing", lambda f: f / "absent.png", "no such file|not found|does not exist")


@case("model:count", "model_of_seaice_task_for_count", "checkpoint is for task 'seaice'", kind="usage")
def _seaice_for_count(folder: Path) -> Path:
    return Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "seaice.safetensors"

# ------------------------------------------------------------------------------------------------ battery

N_CYCLES = 20   # the tiny battery model's window


def arbin_cell(path: Path, seed=7, cycles=25, transform=None) -> Path:
    from mis.pipelines.battery.synthetic import synthetic_cell, write_arbin_csv

    write_arbin_csv(synthetic_cell(seed, n_cycles=cycles, name=path.stem), path, points=120)
    if transform is not None:
        lines = path.read_text().splitlines()
        path.write_text("\n".join(transform(lines)) + "\n")
    return path


def _csv_rows(transform):
    """Apply `transform(header, rows) -> lines` to an Arbin CSV split into its header and data rows."""
    return lambda lines: transform(lines[0], lines[1:])


add("battery", "csv_empty", lambda f: _write(f / "empty.csv", b""), "file is empty")
add("battery", "csv_header_only", lambda f: arbin_cell(f / "head.csv", transform=lambda lines: lines[:1]),
    "no data rows")
add("battery", "csv_missing_columns",
    lambda f: arbin_cell(f / "cols.csv", transform=_csv_rows(lambda h, rows: [h.replace("Voltage", "Volts")] + rows)),
    "missing column|no cycle")
add("battery", "csv_not_a_number",
    lambda f: arbin_cell(f / "nan_text.csv", transform=_csv_rows(lambda h, rows: [h, rows[0].replace(
        rows[0].split(",")[2], "high"), *rows[1:]])), "not a number")
add("battery", "csv_fractional_cycles",
    lambda f: arbin_cell(f / "frac.csv", transform=_csv_rows(lambda h, rows: [h] + [_cycle_plus(h, r, 0.5)
                                                                                   for r in rows])),
    "not a whole number")
add("battery", "csv_text", lambda f: _write(f / "story.csv", b"once upon a time\n" * 20),
    "Q\\(V\\)|not|column|unknown|cycle")
add("battery", "csv_few_cycles", lambda f: arbin_cell(f / "short.csv", cycles=12), "needs the first 20 cycles")
add("battery", "csv_capacity_in_mAh",
    lambda f: arbin_cell(f / "mah.csv", transform=_csv_rows(lambda h, rows: [h] + [
        _scale_column(r, h.split(",").index("Discharge_Capacity"), 1000.0) for r in rows])),
    "is the file in mAh|capacity|outside")
add("battery", "csv_non_utf8_header", lambda f: _write(f / "latin.csv", "Zyklus;Strom;Spannung\n".encode("utf-16")),
    "not text in UTF-8|missing column|unknown|Q\\(V\\)|not")
add("battery", "csv_newline_in_heading",
    lambda f: arbin_cell(f / "nl.csv", transform=_csv_rows(lambda h, rows: ['"Cycle\nIndex"' + h[h.index(","):]]
                                                           + rows)), "missing column|Cycle_Index|no Arbin header")
add("battery", "unknown_suffix", lambda f: _write(f / "cells.xyz", b"1,2,3\n"), "unknown battery data format")
add("battery", "npz_truncated", lambda f: _truncate(_mit_npz(f / "cut.npz"), 0.5), "not a readable .npz|corrupt")
add("battery", "npz_missing_arrays", lambda f: _npz(f / "partial.npz", qdlin=np.zeros((1, 30, 1000))),
    "missing array")
add("battery", "npz_wrong_shapes",
    lambda f: _npz(f / "shapes.npz", qdlin=np.zeros((1, 30, 10)), voltage=np.linspace(3.5, 2.0, 1000),
                   cycles=np.arange(2, 32)), "shape|points|voltage")
add("battery", "npz_infinite_curves",
    lambda f: _mit_npz(f / "inf.npz", fill=np.inf), "NaN|infinite|corrupt|outside|finite")
add("battery", "npz_nan_curves", lambda f: _mit_npz(f / "nan.npz", fill=np.nan), "NaN|corrupt|finite")
add("battery", "npz_text", lambda f: _write(f / "text.npz", b"not a zip\n" * 30), "not a readable .npz")
add("battery", "beep_malformed_json", lambda f: _write(f / "cell.json", b'{"summary": [1, 2'),
    "not valid JSON|malformed|JSON")
add("battery", "beep_json_list", lambda f: _write(f / "list.json", b"[1, 2, 3]"), "BEEP|JSON|object|summary")
add("battery", "beep_missing_curves", lambda f: _write(f / "summary_only.json", json.dumps(
    {"summary": {"cycle_index": [1, 2, 3], "discharge_capacity": [1.1, 1.1, 1.09]}}).encode()),
    "no Q\\(V\\)|cycles_interpolated|summary")
add("battery", "maccor_without_rows", lambda f: _write(f / "cell.001", b"Today's Date\t01/01/2020\nRec#\tCyc#\tStep\t"
                                                                         b"Test (Sec)\tAmps\tVolts\tState\n"),
    "no data|rows|Maccor|column")
add("battery", "battery_missing", lambda f: f / "absent.csv", "no such file or directory|not found")


@case("battery", "non_utf8_cycle_lives", "not UTF-8")
def _latin_lives(folder: Path) -> Path:
    """The MIT Qdlin CSV layout: `train_cell1.csv` with its life on line 1 of `train_cycle_lives.csv`."""
    from mis.pipelines.battery.synthetic import synthetic_cell

    cell = synthetic_cell(3, 30, name="train_cell1")
    np.savetxt(folder / "train_cell1.csv", cell.qd.T, delimiter=",")
    (folder / "train_cycle_lives.csv").write_bytes("vie\xe9\n".encode("latin-1"))
    return folder / "train_cell1.csv"


@case("battery", "csv_nan_capacity_rows", "missing, filled from neighbouring cycles", kind="warning")
def _nan_capacity(folder: Path) -> Path:
    def blank_capacity(header: str, rows: list[str]) -> list[str]:
        column = header.split(",").index("Discharge_Capacity")
        cycle_column = header.split(",").index("Cycle_Index")
        out = [header]
        for row in rows:
            cells = row.split(",")
            if cells[cycle_column] == "5" and float(cells[column] or 0) > 0:
                cells[column] = ""
            out.append(",".join(cells))
        return out

    return arbin_cell(folder / "gappy.csv", transform=_csv_rows(blank_capacity))


# ---------------------------------------------------------------------------------------------- --model

def tampered(command: str, edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    """A copy of the command's good tiny checkpoint with its card edited (the weights and their sha unchanged)."""
    def make(folder: Path) -> Path:
        source = Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / f"{command}.safetensors"
        return _edit_card(source, folder / "tampered.safetensors", edit)
    return make


def _set(path: str, value):
    def edit(card: dict) -> None:
        node = card
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def _delete(key: str):
    return lambda card: card.pop(key)


for command, name, edit, problem in [
    ("segment", "card_without_config", _delete("config"), "no 'config'"),
    ("segment", "card_labels_as_list", _set("labels", ["liver", "spleen"]), "'labels' is a JSON list"),
    ("segment", "card_spacing_zero", _set("preprocessing.spacing", [0.0, 0.0, 0.0]), "spacing must be finite and > 0"),
    ("segment", "card_spacing_negative", _set("preprocessing.spacing", [-2.0, 2.0, 2.0]), "spacing must be finite"),
    ("segment", "card_spacing_text", _set("preprocessing.spacing", "4mm"), "spacing must be a list"),
    ("segment", "card_reversed_hu_window", _set("preprocessing.intensity_window", [1000.0, -1000.0]),
     "intensity_window .* reversed"),
    ("segment", "card_huge_network", _set("config.feature_chns", [4096, 8192, 16384, 32768, 65536]),
     "weights do not fit the card's network"),
    ("segment", "card_unknown_family", _set("family", "resnet9000"), "unknown model family 'resnet9000'"),
    ("segment", "card_another_task", _set("task", "vocoder"), "checkpoint is for task 'vocoder'"),
    ("segment", "card_label_beyond_classes", _set("labels", {"1": "liver", "40": "moon"}), "outside the network"),
    ("segment", "card_bad_input_size", _set("config.input_size", [16, 0, 32]),
     "input_size|network config is invalid|do not fit"),
    ("segment", "card_is_a_list", lambda card: card.clear() or card.update({"__list__": True}), "is a JSON list"),
    ("vocode", "card_hop_zero", _set("preprocessing.mel.hop_length", 0), "hop_length must be an integer >= 1"),
    ("vocode", "card_fmax_above_nyquist", _set("preprocessing.mel.fmax", 40000.0), "fmax"),
    ("vocode", "card_mel_missing", _set("preprocessing", {}), "mel convention\\) is missing"),
    ("vocode", "card_mel_unknown_key", _set("preprocessing.mel.colour", "blue"), "unknown MelConfig keys"),
    ("vocode", "card_of_ct_task", _set("task", "ct_segmentation"), "checkpoint is for task 'ct_segmentation'"),
    ("battery", "card_without_normaliser", _set("preprocessing.normalizer", None), "normaliser"),
    ("battery", "card_voltage_grid_flat", _set("preprocessing.voltage_grid", {"start": 3.0, "stop": 3.0,
                                                                              "points": 10}), "voltage_grid"),
]:
    add(f"model:{command}", name, tampered(command, edit), problem, kind="usage")

for command in ("segment", "vocode", "battery"):
    add(f"model:{command}", f"model_text_file_{command}", lambda f: _write(f / "weights.safetensors", b"hello" * 50),
        "not a safetensors checkpoint", kind="usage")
    add(f"model:{command}", f"model_missing_{command}", lambda f: f / "nowhere.safetensors",
        "neither a file nor a shipped checkpoint", kind="usage")


@case("model:segment", "model_truncated", "not a safetensors checkpoint", kind="usage")
def _truncated_model(folder: Path) -> Path:
    source = Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "segment.safetensors"
    return _write(folder / "cut.safetensors", source.read_bytes()[:5000])


@case("model:segment", "model_weights_edited", "sha256", kind="usage")
def _edited_weights(folder: Path) -> Path:
    source = Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "segment.safetensors"
    raw = bytearray(source.read_bytes())
    raw[-64] ^= 0xFF
    return _write(folder / "edited.safetensors", bytes(raw))


@case("model:segment", "model_without_card", "no mis card", kind="usage")
def _no_card(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(folder / "plain.safetensors"))
    return folder / "plain.safetensors"


@case("model:segment", "model_card_not_json", "not valid JSON", kind="usage")
def _card_not_json(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(folder / "bad_card.safetensors"), metadata={"mis_card": "{broken"})
    return folder / "bad_card.safetensors"


@case("model:vocode", "model_of_battery_task", "checkpoint is for task 'battery_life'", kind="usage")
def _battery_for_vocode(folder: Path) -> Path:
    return Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "battery.safetensors"


@case("model:battery", "model_of_vocoder_task", "checkpoint is for task 'vocoder'", kind="usage")
def _vocoder_for_battery(folder: Path) -> Path:
    return Path(os.environ["MIS_CORPUS_CHECKPOINTS"]) / "vocode.safetensors"


# -------------------------------------------------------------------------------------------------- -o

@case("output:segment", "output_below_a_file", "is a file, not a folder", kind="usage")
def _below_file(folder: Path) -> Path:
    _write(folder / "existing_file.txt", b"keep me")
    return folder / "existing_file.txt" / "out"


@case("output:segment", "output_symlink_loop", "symbolic link loop", kind="usage")
def _output_loop(folder: Path) -> Path:
    return _symlink_loop(folder, "outdir")


@case("output:vocode", "output_below_a_file_vocode", "is a file, not a folder", kind="usage")
def _below_file_vocode(folder: Path) -> Path:
    _write(folder / "notes.txt", b"keep me")
    return folder / "notes.txt" / "wavs"


@case("output:mel", "output_below_a_file_mel", "is a file, not a folder", kind="usage")
def _below_file_mel(folder: Path) -> Path:
    _write(folder / "readme.md", b"keep me")
    return folder / "readme.md" / "mels"


# ------------------------------------------------------------------------------------------------ helpers

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _edit_affine(path: Path, column: int, value: float) -> Path:
    """Set the first row's `column` of a NIfTI-1 file's sform and qform spacing to `value` (nibabel would not
    write such a header itself); the file stays readable up to the affine."""
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 280 + 4 * column, value)       # srow_x
    struct.pack_into("<f", raw, 80 + 4 * column, value)        # pixdim[1 + column]
    return _write(path, bytes(raw))


def _flip(data: bytes, position: float) -> bytes:
    raw = bytearray(data)
    index = int(len(raw) * position)
    raw[index] ^= 0x5A
    return bytes(raw)


def _with(array: np.ndarray, value: float) -> np.ndarray:
    array = array.copy()
    array.flat[len(array.flat) // 3] = value
    return array


def _truncate(path: Path, fraction: float) -> Path:
    raw = path.read_bytes()
    return _write(path, raw[: int(len(raw) * fraction)])


def _rename(path: Path, target: Path) -> Path:
    path.rename(target)
    return target


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _log10_mel() -> np.ndarray:
    """A magnitude mel in log10 with ESPnet's floor (-5 = log10(1e-5)): values sit on a whole-number floor."""
    mel = mel_array() / np.log(10)
    mel[:, :8] = -5.0
    return mel.astype(np.float32)


def _corrupt_fmt(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[20:36] = b"\xff" * 16   # the fmt chunk's format, channels, rate ...
    return _write(path, bytes(raw))


def _symlink_loop(folder: Path, name: str) -> Path:
    first, second = folder / f"loop1_{name}", folder / f"loop2_{name}"
    os.symlink(second, first)
    os.symlink(first, second)
    return first


def _cycle_plus(header: str, row: str, delta: float) -> str:
    column = header.split(",").index("Cycle_Index")
    cells = row.split(",")
    cells[column] = f"{float(cells[column]) + delta:g}" if cells[column] else cells[column]
    return ",".join(cells)


def _scale_column(row: str, column: int, factor: float) -> str:
    cells = row.split(",")
    if cells[column]:
        cells[column] = f"{float(cells[column]) * factor:g}"
    return ",".join(cells)


def _mit_npz(path: Path, fill: float | None = None) -> Path:
    from mis.pipelines.battery.synthetic import as_npz_arrays, synthetic_cell

    arrays = as_npz_arrays([synthetic_cell(5, 30, name="c1")])
    if fill is not None:
        arrays["qdlin"] = arrays["qdlin"].astype(np.float64)
        arrays["qdlin"][0, 3:9, 100:400] = fill
    return _npz(path, **arrays)


def _edit_card(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Rewrite a safetensors file with its mis card edited: the tensor bytes stay as they are."""
    raw = source.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    card = json.loads(header["__metadata__"]["mis_card"])
    edit(card)
    header["__metadata__"]["mis_card"] = json.dumps(list(card) if card.get("__list__") else card)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return _write(target, len(encoded).to_bytes(8, "little") + encoded + raw[8 + size:])
