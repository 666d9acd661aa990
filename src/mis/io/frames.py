"""Frame sequences (for DSA frame interpolation): read and write them in the format they came in. Imports no torch.

Three inputs, one array layout: `read_sequence` returns frames [T, H, W] (or [T, H, W, 3] for colour) in the
stored dtype, plus a `SequenceMeta` that `write_sequence` uses to write the result the same way:

- a folder of numbered image frames (IM0_01.jpg ... IM0_37.jpg) -> a new folder, same naming style;
- a multi-frame DICOM file (XA/XRF cine) -> a new derived multi-frame series in one file;
- a NIfTI file shaped (X, Y, T) or (X, Y, 1, T) -> a NIfTI file with the same affine.

NIfTI axes follow `mis.io.nifti` / `mis.io.dicom`: array axis 0 is the image column and axis 1 the row
(``volume[:, :, k] = pixel_array_k.T``), so ``frames[t] = data[:, :, t].T`` and writing transposes back:
a sequence read from NIfTI and written again is the same array with the same affine.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mis.errors import InputError, UsageError
from mis.io.atomic import atomic_output
from mis.io.files import real_path
from mis.io.image import ImageMeta, is_image_name, read_image, write_image
from mis.io.kinds import InputKind, visible_children

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")   # the last run of digits in a name: IM0_01.jpg -> 01
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MS_PER_UNIT = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}   # NIfTI xyzt time units
_NIFTI_DTYPES = ("uint8", "uint16", "int16", "float32")
_TIMING = ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate")


@dataclass(frozen=True)
class FrameNaming:
    """How the frames of a folder are named: prefix + number (zero-padded to width; 0: no padding) + suffix."""

    prefix: str   # "IM0_"
    width: int    # 2 for IM0_01.jpg
    suffix: str   # ".jpg"
    start: int    # the first frame's number (output frames are numbered from it too)

    def name(self, index: int) -> str:
        """The file name of frame `index` (0-based)."""
        return f"{self.prefix}{self.start + index:0{self.width}d}{self.suffix}"


@dataclass
class SequenceMeta:
    """Where a sequence came from and what writing it back in the same format needs.

    source: the folder or file read. format: "folder", "dicom" or "nifti".
    image: the first frame's ImageMeta (dtype, bit depth, bits stored, channels, size (H, W)).
    frame_count: T. frame_time_ms: time between frames, or None when the input does not say;
    frame_time_source: where it came from ("FrameTime", "FrameTimeVector", "CineRate",
    "RecommendedDisplayFrameRate", "pixdim[4] (sec)" ...).
    frame_paths, naming: the folder's frame files in order and their naming style (folder inputs).
    dicom: the DICOM header without PixelData (DICOM inputs), the template of the written series.
    frame_of_reference_uid, photometric: from the DICOM header (photometric as stored).
    inverted: MONOCHROME1 pixel data was inverted to MONOCHROME2 on reading (the writer inverts it back).
    affine, nifti_header, nifti_shape: the NIfTI input's geometry, header and stored shape.
    """

    source: Path
    format: str
    image: ImageMeta
    frame_count: int
    frame_time_ms: float | None = None
    frame_time_source: str | None = None
    frame_paths: list[Path] = field(default_factory=list)
    naming: FrameNaming | None = None
    dicom: Any = None
    frame_of_reference_uid: str | None = None
    photometric: str | None = None
    inverted: bool = False
    affine: np.ndarray | None = None
    nifti_header: Any = None
    nifti_shape: tuple[int, ...] | None = None

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the frames (8, 16 or 32), as `image.bit_depth`."""
        return self.image.bit_depth

    @property
    def dtype(self) -> str:
        return self.image.dtype


# --------------------------------------------------------------------------- detection


def is_sequence_file(path: str | Path) -> bool:
    """A .dcm, .nii or .nii.gz file, or a file without suffix that starts like DICOM ('DICM' at byte 128)."""
    p = Path(path)
    name = p.name.lower()
    if name.startswith(".") or not p.is_file():
        return False
    if name.endswith(_NIFTI_SUFFIXES) or name.endswith(".dcm"):
        return True
    return not p.suffix and _has_dicm_magic(p)


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_frame_folder(folder: str | Path) -> bool:
    """A folder holding at least one numbered image file (one alone is reported by the reader) (hidden files do not count)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    try:
        return len(_numbered_images(visible_children(folder))) >= 1
    except InputError:
        return False


SEQUENCE = InputKind("sequence", "frame sequence", "mis.io.frames:is_sequence_file",
                     folder_test="mis.io.frames:is_frame_folder", reader="mis.io.frames:read_sequence")


def _numbered_images(children: list[Path]) -> list[Path]:
    return [c for c in children if is_image_name(c) and _LAST_NUMBER.search(c.name) and c.is_file()]


# --------------------------------------------------------------------------- reading


def read_sequence(path: str | Path) -> tuple[np.ndarray, SequenceMeta]:
    """Frames [T, H, W] (or [T, H, W, 3]) in the stored dtype, and how to write them back (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        return _read_folder(path)
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return _read_nifti(path)
    if name.endswith(".dcm") or _has_dicm_magic(path):
        return _read_dicom(path)
    if is_image_name(path):
        raise InputError(path, "one image: nothing to interpolate between; pass the folder that holds the "
                         "numbered frames")
    raise InputError(path, "not a frame sequence (expected a folder of numbered frames, a multi-frame DICOM "
                     "file or a .nii/.nii.gz file)")


def _one_frame(path: Path) -> InputError:
    return InputError(path, "one frame: nothing to interpolate between")


# --- folder of numbered frames


def _read_folder(folder: Path) -> tuple[np.ndarray, SequenceMeta]:
    paths, naming = _frame_files(folder)
    frames, metas = [], []
    for p in paths:
        frame, meta = read_image(p)
        if metas:
            _check_same_kind(p, meta, metas[0])
        frames.append(frame)
        metas.append(meta)
    frames = _common_channels(frames, metas)
    first = replace(metas[0], channels=1 if frames[0].ndim == 2 else 3)
    meta = SequenceMeta(source=folder, format="folder", image=first, frame_count=len(frames),
                        frame_paths=paths, naming=naming)
    return np.stack(frames), meta


def _frame_files(folder: Path) -> tuple[list[Path], FrameNaming]:
    """The numbered image files in frame order, checked to be one contiguous run named one way."""
    children = visible_children(folder)   # hidden files (._IM0_01.jpg from macOS) are never frames
    images = [c for c in children if is_image_name(c) and c.is_file()]
    unnumbered = [c.name for c in images if not _LAST_NUMBER.search(c.name)]
    if unnumbered:
        raise InputError(folder, f"image file {unnumbered[0]} has no frame number; a frame folder holds only "
                         "numbered frames (non-image files are ignored)")
    if len(images) < 2:
        raise InputError(folder, "one frame: nothing to interpolate between" if images
                         else "no numbered image frames in this folder")
    parts = {c: _split_name(c.name) for c in images}
    styles = sorted({(prefix, suffix) for prefix, _, suffix in parts.values()})
    if len(styles) > 1:
        shown = ", ".join(f"{p}<n>{s}" for p, s in styles[:4])
        raise InputError(folder, f"frames named in {len(styles)} ways ({shown}); put one sequence in a folder")
    by_number: dict[int, Path] = {}
    for c, (_, digits, _) in parts.items():
        if int(digits) in by_number:
            raise InputError(folder, f"frame number {int(digits)} twice ({by_number[int(digits)].name} and {c.name})")
        by_number[int(digits)] = c
    numbers = sorted(by_number)
    for before, after in zip(numbers, numbers[1:]):
        if after != before + 1:
            raise InputError(folder, f"frame {before + 1} is missing ({by_number[before].name} is followed by "
                             f"{by_number[after].name}); the frames must be numbered without gaps")
    digits = [d for _, d, _ in parts.values()]
    padded = any(len(d) > 1 and d.startswith("0") for d in digits)
    prefix, suffix = styles[0]
    naming = FrameNaming(prefix, max(len(d) for d in digits) if padded else 0, suffix, numbers[0])
    return [by_number[n] for n in numbers], naming


def _split_name(name: str) -> tuple[str, str, str]:
    match = _LAST_NUMBER.search(name)
    return name[:match.start()], match.group(1), name[match.end():]


def _check_same_kind(path: Path, meta: ImageMeta, first: ImageMeta) -> None:
    first_name = Path(first.path).name
    if meta.size != first.size:
        raise InputError(path, f"frame is {meta.size[1]}x{meta.size[0]} but {first_name} is "
                         f"{first.size[1]}x{first.size[0]}; all frames must have the same size")
    if meta.dtype != first.dtype:
        raise InputError(path, f"frame is {meta.bit_depth}-bit ({meta.dtype}) but {first_name} is "
                         f"{first.bit_depth}-bit ({first.dtype}); all frames must have the same bit depth")


def _common_channels(frames: list[np.ndarray], metas: list[ImageMeta]) -> list[np.ndarray]:
    """Colour frames with some RGB files that happen to have R = G = B (a black frame): repeat those to RGB.
    A frame stored as grayscale among colour frames is a mixed folder."""
    if all(f.ndim == 2 for f in frames) or all(f.ndim == 3 for f in frames):
        return frames
    colour = next(m for f, m in zip(frames, metas) if f.ndim == 3)
    out = []
    for f, m in zip(frames, metas):
        if f.ndim == 2 and not m.was_gray_rgb:
            raise InputError(m.path, f"frame is grayscale but {Path(colour.path).name} is colour; all frames "
                             "must be one or the other")
        out.append(np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f)
    return out


# --- multi-frame DICOM


def _read_dicom(path: Path) -> tuple[np.ndarray, SequenceMeta]:
    ds = _dcmread(path)
    count = _frame_count(ds)
    if count < 2:
        raise InputError(path, "single-frame DICOM: one frame, nothing to interpolate between (a frame sequence "
                         "is a multi-frame file, e.g. an XA or XRF cine run)")
    if "PerFrameFunctionalGroupsSequence" in ds:
        raise InputError(path, "enhanced multi-frame DICOM (per-frame functional groups) is not supported; "
                         "export the run as a classic XA/XRF multi-frame file")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16):
        raise InputError(path, f"{bits}-bit pixel data is not supported (8 or 16 bits allocated)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):
        raise InputError(path, f"photometric interpretation {photometric or '(none)'} is not supported "
                         "(grayscale or RGB)")
    frames = _decode(path, ds)   # YBR colour comes back as RGB
    if frames.ndim < 3 or frames.shape[0] != count:
        raise InputError(path, f"pixel data holds shape {frames.shape}, not the {count} frames NumberOfFrames says")
    bits_stored = int(ds.get("BitsStored", bits) or bits)
    image = ImageMeta(path=str(path), format="DICOM", dtype=frames.dtype.name, bit_depth=bits,
                      channels=1 if frames.ndim == 3 else 3, was_gray_rgb=False, exif_orientation=1,
                      size=(int(frames.shape[1]), int(frames.shape[2])),
                      bits_stored=bits_stored if bits_stored < bits else None)
    inverted = photometric == "MONOCHROME1"
    if inverted:   # MONOCHROME1 shows low values white; a network trained on MONOCHROME2 data needs them flipped
        frames = _invert(frames, image)
    del ds.PixelData   # the header is the template of the written series
    frame_time, source = _dicom_frame_time(ds)
    meta = SequenceMeta(source=path, format="dicom", image=image, frame_count=count, frame_time_ms=frame_time,
                        frame_time_source=source, dicom=ds,
                        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
                        photometric=photometric, inverted=inverted)
    return frames, meta


def _dcmread(path: Path):
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a readable DICOM file"
        raise InputError(path, f"is truncated or not a readable DICOM file ({_short(exc)})") from None
    if "PixelData" not in ds:
        # pydicom drops a pixel data element cut off by the end of the file without a word; its tag tells
        if b"\xe0\x7f\x10\x00" in path.read_bytes():
            raise InputError(path, "is truncated: its pixel data is cut off")
        raise InputError(path, "DICOM file without pixel data (truncated, or not an image)")
    return ds


def _frame_count(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _decode(path: Path, ds) -> np.ndarray:
    """All frames; JPEG Lossless / JPEG 2000 need the pylibjpeg plugins (project dependencies)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.ascontiguousarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - a damaged stream raises anything from ValueError to RuntimeError
        raise InputError(path, f"pixel data cannot be decoded: truncated or damaged ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__


def _invert(frames: np.ndarray, image: ImageMeta) -> np.ndarray:
    """lo + hi - x over the stored bits' range: MONOCHROME1 <-> MONOCHROME2 (its own inverse)."""
    from mis.io.image import value_range

    lo, hi = (int(v) for v in value_range(image))
    return (lo + hi - np.clip(frames.astype(np.int64), lo, hi)).astype(frames.dtype)


def _dicom_frame_time(ds) -> tuple[float | None, str | None]:
    """Milliseconds between frames from FrameTime, the mean of FrameTimeVector (its first entry is the 0 of
    frame 1), or a rate in frames per second (CineRate, RecommendedDisplayFrameRate)."""
    frame_time = _positive(ds.get("FrameTime"))
    if frame_time:
        return frame_time, "FrameTime"
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(list(vector)) > 1:
        steps = [_positive(v) for v in list(vector)[1:]]
        if all(steps):
            return float(np.mean(steps)), "FrameTimeVector"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds.get(keyword))
        if rate:
            return 1000.0 / rate, keyword
    return None, None


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


# --- NIfTI


def _read_nifti(path: Path) -> tuple[np.ndarray, SequenceMeta]:
    from mis.io.nifti import _load   # the NIfTI module's loader: every nibabel failure is already an InputError

    img, voxel_bytes = _load(path)
    shape = tuple(int(s) for s in img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[2] == 1)):
        raise InputError(path, f"NIfTI of shape {shape}; a frame sequence is (X, Y, T) or (X, Y, 1, T)")
    if shape[-1] < 2:
        raise _one_frame(path)
    stored = img.get_data_dtype()
    if voxel_bytes is not None and int(np.prod(shape)) * stored.itemsize > voxel_bytes:
        raise InputError(path, "truncated file: fewer voxel bytes than the header declares")
    try:
        data = np.asanyarray(img.dataobj)   # stored dtype; float when the header scales the values
    except Exception as exc:  # noqa: BLE001 - nibabel raises OSError, EOFError, zlib.error, ValueError
        raise InputError(path, f"cannot read voxel data ({_short(exc)})") from None
    if data.dtype == np.float64:
        data = data.astype(np.float32)   # scaled values: float32 holds what a frame needs
    if data.dtype.name not in _NIFTI_DTYPES:
        raise InputError(path, f"voxels of type {data.dtype} are not supported ({', '.join(_NIFTI_DTYPES)})")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(path, "contains NaN or infinite values")
    frames = np.ascontiguousarray(data.reshape(shape[0], shape[1], shape[-1]).transpose(2, 1, 0))
    image = ImageMeta(path=str(path), format="NIfTI", dtype=frames.dtype.name, bit_depth=frames.itemsize * 8,
                      channels=1, was_gray_rgb=False, exif_orientation=1, size=(shape[1], shape[0]))
    frame_time, source = _nifti_frame_time(img.header)
    meta = SequenceMeta(source=path, format="nifti", image=image, frame_count=shape[-1], frame_time_ms=frame_time,
                        frame_time_source=source, affine=np.asarray(img.affine, dtype=np.float64),
                        nifti_header=img.header.copy(), nifti_shape=shape)
    return frames, meta


def _nifti_frame_time(header) -> tuple[float | None, str | None]:
    """pixdim[4] in the header's time unit (also for a 3-D (X, Y, T) file, whose third pixdim is spatial)."""
    unit = header.get_xyzt_units()[1]
    step = _positive(str(np.float32(header["pixdim"][4])))   # pixdim is float32: 0.1 s, not 0.100000001 s
    if step is None or unit not in _MS_PER_UNIT:
        return None, None
    return step * _MS_PER_UNIT[unit], f"pixdim[4] ({unit})"


# --------------------------------------------------------------------------- writing


def write_sequence(frames: np.ndarray, meta: SequenceMeta, target: str | Path, *, frame_time_ms: float | None,
                   inserted: Sequence[bool] | None = None, intervals_ms: Sequence[float] | None = None) -> Path:
    """Write `frames` in the input's format (see the module doc) and return the path written.

    frames: [T, H, W] (or [T, H, W, 3]) in the input's dtype and frame size. frame_time_ms: the new time between
    frames (None only when the input had none; a folder stores no frame time). inserted: per frame, True for frames that are not in the input
    (interpolated); it lets DICOM frame references (trim, mask frames ...) follow the input frames.
    intervals_ms: the T - 1 times between consecutive frames when they are not all equal (uneven --times): DICOM
    gets a FrameTimeVector pointed to by FrameIncrementPointer instead of one FrameTime; NIfTI, which holds one
    frame time, gets `frame_time_ms` (give their mean).
    Nothing is written unless all of it is: a folder is built next to the target and renamed.
    """
    target = Path(target)
    frames = np.asarray(frames)
    flags = _check_frames(frames, meta, inserted)
    if real_path(target) == real_path(meta.source):
        raise UsageError(f"{target}: the output would replace the input; choose another output path")
    if frame_time_ms is not None and not (np.isfinite(frame_time_ms) and frame_time_ms > 0):
        raise ValueError(f"frame_time_ms must be positive, got {frame_time_ms}")
    intervals = _check_intervals(intervals_ms, frame_time_ms, len(frames))
    if meta.format == "folder":
        return _write_folder(frames, meta, target, flags)
    if meta.format == "dicom":
        return _write_dicom(frames, meta, target, frame_time_ms, flags, intervals)
    if meta.format == "nifti":
        return _write_nifti(frames, meta, target, frame_time_ms)
    raise ValueError(f"unknown sequence format {meta.format!r}")


def _check_intervals(intervals_ms: Sequence[float] | None, frame_time_ms: float | None,
                     count: int) -> list[float] | None:
    if intervals_ms is None:
        return None
    intervals = [float(v) for v in intervals_ms]
    if frame_time_ms is None:
        raise ValueError("intervals_ms needs frame_time_ms (their mean, for the formats that hold one frame time)")
    if len(intervals) != count - 1 or not all(np.isfinite(v) and v > 0 for v in intervals):
        raise ValueError(f"intervals_ms must be {count - 1} positive times, got {intervals_ms}")
    return intervals


def _check_frames(frames: np.ndarray, meta: SequenceMeta, inserted: Sequence[bool] | None) -> list[bool] | None:
    image = meta.image
    expected = (image.size if image.channels == 1 else (*image.size, 3))
    if frames.ndim != len(expected) + 1 or tuple(frames.shape[1:]) != tuple(expected) or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, {', '.join(map(str, expected))}] like the input, got {frames.shape}")
    if frames.dtype != np.dtype(image.dtype):
        raise ValueError(f"frames are {frames.dtype} but the input is {image.dtype}; convert them with from_unit")
    if inserted is None:
        return None
    flags = [bool(f) for f in inserted]
    if len(flags) != len(frames):
        raise ValueError(f"inserted has {len(flags)} flags for {len(frames)} frames")
    if flags.count(False) != meta.frame_count:
        raise ValueError(f"inserted marks {flags.count(False)} input frames but the input has {meta.frame_count}")
    return flags


# --- folder


def _write_folder(frames: np.ndarray, meta: SequenceMeta, target: Path, inserted: list[bool] | None) -> Path:
    naming = meta.naming
    width = max(naming.width, len(str(naming.start + len(frames) - 1))) if naming.width else 0
    naming = replace(naming, width=width)   # 99 padded frames that become 197 need a third digit
    sources = {} if inserted is None else dict(zip(np.flatnonzero(~np.asarray(inserted)), meta.frame_paths))
    with _atomic_folder(target, naming) as tmp:
        for index, frame in enumerate(frames):
            source = sources.get(index)
            if source is not None and _same_pixels(source, frame):
                shutil.copyfile(source, tmp / naming.name(index))   # a JPEG encoded again would lose detail again
            else:
                write_image(tmp / naming.name(index), frame, bit_depth=meta.image.bit_depth)
    return target


def _same_pixels(path: Path, frame: np.ndarray) -> bool:
    stored, _ = read_image(path, gray=None if frame.ndim == 2 else False)
    return stored.shape == frame.shape and np.array_equal(stored, frame)


@contextlib.contextmanager
def _atomic_folder(target: Path, naming: FrameNaming) -> Iterator[Path]:
    """A hidden temporary folder next to `target`, renamed onto it when the block succeeds, deleted when it
    fails. An existing target is replaced only when it holds nothing but frames named this way (an earlier
    output): a folder of other files is never deleted."""
    if target.exists():
        _check_replaceable(target, naming)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
            os.replace(target, old)   # two renames: the target is the old or the new folder, never a mix
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(target: Path, naming: FrameNaming) -> None:
    if not target.is_dir():
        raise UsageError(f"{target}: exists and is not a folder; choose another output path")
    for child in target.iterdir():
        style = _split_name(child.name) if _LAST_NUMBER.search(child.name) else ("", "", "")
        if not (child.is_file() and (style[0], style[2]) == (naming.prefix, naming.suffix)):
            raise UsageError(f"{target}: the output folder exists and holds other files ({child.name}); "
                             "choose a new folder")


# --- DICOM


def _write_dicom(frames: np.ndarray, meta: SequenceMeta, target: Path, frame_time_ms: float | None,
                 inserted: list[bool] | None, intervals: list[float] | None = None) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    source = meta.dicom
    ds = copy.deepcopy(source)
    # Vendor tags often hold one value per frame (GE's per-frame kVp, mAs, distances); with new frames they
    # would be wrong, and a derived object need not carry them.
    ds.remove_private_tags()
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths", "SmallestImagePixelValue",
                    "LargestImagePixelValue", "PixelPaddingRangeLimit"):
        if keyword in ds:
            delattr(ds, keyword)
    _set_identity(ds, source, generate_uid)
    _set_derivation(ds, source, inserted, len(frames))
    _set_timing(ds, meta, frame_time_ms, len(frames), intervals)
    _renumber_frames(ds, inserted, meta.frame_count, len(frames))

    pixels = _invert(frames, meta.image) if meta.inverted else frames   # back to the stored MONOCHROME1
    photometric = "RGB" if frames.ndim == 4 else meta.photometric
    bits_stored = meta.image.bits_stored or meta.image.bit_depth
    if pixels.dtype.kind == "u" and pixels.size and int(pixels.max()) >= 2 ** bits_stored:
        raise ValueError(f"frame values up to {int(pixels.max())} do not fit the input's {bits_stored} bits stored")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian   # uncompressed: every viewer reads it
    ds.set_pixel_data(np.ascontiguousarray(pixels), photometric, bits_stored, generate_instance_uid=False)
    ds.NumberOfFrames = len(frames)   # set_pixel_data drops it for a single frame; the module needs it
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.preamble = b"\0" * 128
    with atomic_output(target) as tmp:
        pydicom.dcmwrite(str(tmp), ds, enforce_file_format=True)
    return target


def _set_identity(ds, source, generate_uid) -> None:
    """A new series and instance in the same study, patient and frame of reference."""
    now = datetime.now()
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(source.get("SeriesNumber", 0) or 0) + 1000   # as mis' DICOM SEG output does
    ds.InstanceNumber = 1
    old = str(source.get("SeriesDescription", "") or "").strip()
    ds.SeriesDescription = (f"{old} (interpolated by mis)" if old else "interpolated by mis")[:64]
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")


def _set_derivation(ds, source, inserted: list[bool] | None, count: int) -> None:
    from pydicom.dataset import Dataset

    image_type = [str(v) for v in (source.get("ImageType") or [])]
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]   # XA keeps value 3 (SINGLE PLANE / BIPLANE A)
    ds.DerivationDescription = _derivation_text(inserted, count)
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [reference]
    if "LossyImageCompression" not in ds:   # once lossy, always lossy: a JPEG baseline source stays marked
        uid = source.file_meta.get("TransferSyntaxUID") if hasattr(source, "file_meta") else None
        if uid is not None and getattr(uid, "is_compressed", False) and not _is_lossless(uid):
            ds.LossyImageCompression = "01"


def _is_lossless(uid) -> bool:
    """Transfer syntaxes say it in their names: 'JPEG Lossless ...', 'RLE Lossless', 'Encapsulated Uncompressed'."""
    name = uid.name.lower()
    return "lossless" in name or "uncompressed" in name


def _derivation_text(inserted: list[bool] | None, count: int) -> str:
    if inserted is None:
        return f"Frame rate changed by mis frame interpolation ({count} frames); which frames are new is not recorded"
    new = [i + 1 for i, flag in enumerate(inserted) if flag]
    text = f"Frames {_ranges(new)} of {count} interpolated by mis; the others are the source frames"
    if len(text) > 1024:   # ST holds 1024 characters
        text = f"{len(new)} of {count} frames interpolated by mis (frames {new[0]}..{new[-1]}, too many to list)"
    return text


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 5 -> '1-3, 5'."""
    if not numbers:
        return "none"
    runs, start = [], numbers[0]
    for before, after in zip(numbers, [*numbers[1:], None]):
        if after != before + 1:
            runs.append(f"{start}" if start == before else f"{start}-{before}")
            start = after
    return ", ".join(runs)


FRAME_TIME_TAG, FRAME_TIME_VECTOR_TAG = 0x00181063, 0x00181065


def _set_timing(ds, meta: SequenceMeta, frame_time_ms: float | None, count: int,
                intervals: list[float] | None = None) -> None:
    """FrameTime and the attributes that repeat it (FrameTimeVector, CineRate, RecommendedDisplayFrameRate)
    made to agree with the new frame time; FrameIncrementPointer is kept as it is. With `intervals` (given when
    they are uneven) the timing is a FrameTimeVector (0, then each interval) and FrameIncrementPointer points to
    it (FrameTime, which would claim one regular rate, is removed); the rates say the mean."""
    from pydicom.valuerep import DSfloat

    if frame_time_ms is None:
        if any(k in ds for k in _TIMING):
            raise ValueError("the input DICOM has a frame time; pass the new frame_time_ms")
        return
    pointers = [int(p) for p in _values(ds.get("FrameIncrementPointer"))]
    if intervals is not None:
        ds.FrameTimeVector = [DSfloat(0.0)] + [DSfloat(v, auto_format=True) for v in intervals]
        if "FrameTime" in ds:
            del ds.FrameTime
        pointers = [FRAME_TIME_VECTOR_TAG if p == FRAME_TIME_TAG else p for p in pointers]
        ds.FrameIncrementPointer = pointers if FRAME_TIME_VECTOR_TAG in pointers else FRAME_TIME_VECTOR_TAG
        _set_rates(ds, frame_time_ms)
        return
    if "FrameTime" in ds or FRAME_TIME_TAG in pointers or "FrameTimeVector" not in ds:
        ds.FrameTime = DSfloat(frame_time_ms, auto_format=True)
    if "FrameTimeVector" in ds:
        ds.FrameTimeVector = [DSfloat(0.0)] + [DSfloat(frame_time_ms, auto_format=True)] * (count - 1)
    _set_rates(ds, frame_time_ms)


def _set_rates(ds, frame_time_ms: float) -> None:
    rate = max(1, round(1000.0 / frame_time_ms))   # both are IS: whole frames per second
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if keyword in ds:
            setattr(ds, keyword, rate)


# Attributes holding 1-based frame numbers, and attributes holding one value per frame (positioner and table
# increments of a rotational or stepping run). Input frame k moves to new number `position[k] + 1`.
_FRAME_NUMBERS = ("StartTrim", "StopTrim", "RepresentativeFrameNumber", "FrameNumbersOfInterest")
_FRAMES_OF_INTEREST = ("FrameNumbersOfInterest", "FrameOfInterestDescription", "FrameOfInterestType")
_INCREMENTS = ("PositionerPrimaryAngleIncrement", "PositionerSecondaryAngleIncrement", "TableVerticalIncrement",
               "TableLongitudinalIncrement", "TableLateralIncrement")


def _renumber_frames(ds, inserted: list[bool] | None, old_count: int, new_count: int) -> None:
    """Make frame references follow the input frames to their new numbers. Without `inserted` they cannot be
    mapped and are removed (a wrong reference is worse than none), except trims covering the whole run."""
    if inserted is None:
        _drop_frame_references(ds, old_count, new_count)
        return
    position = np.flatnonzero(~np.asarray(inserted, dtype=bool))   # new index of each input frame

    def new_number(number) -> int:
        return int(position[min(max(int(number), 1), old_count) - 1]) + 1

    for keyword in _FRAME_NUMBERS:
        if keyword in ds:
            values = [new_number(v) for v in _values(ds.get(keyword))]
            setattr(ds, keyword, values if len(values) > 1 else values[0])
    for item in ds.get("MaskSubtractionSequence") or []:
        for keyword in ("MaskFrameNumbers", "ApplicableFrameRange"):
            if keyword in item:
                setattr(item, keyword, [new_number(v) for v in _values(item.get(keyword))])
    for keyword in _INCREMENTS:
        values = _values(ds.get(keyword))
        if len(values) == old_count:
            setattr(ds, keyword, _resample_increments([float(v) for v in values], position, new_count))


def _values(value) -> list:
    """A DICOM value as a list: [] when absent, [v] for one value, the values of a multi-valued element."""
    from pydicom.multival import MultiValue

    if value is None:
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _resample_increments(values: list[float], position: np.ndarray, count: int) -> list:
    """Per-frame increments -> positions, linearly interpolated at the new frames, -> increments again."""
    from pydicom.valuerep import DSfloat

    positions = np.cumsum(values)
    new_positions = np.interp(np.arange(count), position, positions)
    return [DSfloat(float(v), auto_format=True) for v in np.diff(new_positions, prepend=0.0)]


def _drop_frame_references(ds, old_count: int, new_count: int) -> None:
    whole_run = int(ds.get("StartTrim", 1) or 1) == 1 and int(ds.get("StopTrim", old_count) or old_count) == old_count
    for keyword in ("StartTrim", "StopTrim"):
        if keyword in ds:
            if whole_run:
                setattr(ds, keyword, 1 if keyword == "StartTrim" else new_count)
            else:
                delattr(ds, keyword)
    for keyword in ("RepresentativeFrameNumber", *_FRAMES_OF_INTEREST, "MaskSubtractionSequence",
                    "RecommendedViewingMode", *_INCREMENTS):
        if keyword in ds:
            delattr(ds, keyword)


# --- NIfTI


def _write_nifti(frames: np.ndarray, meta: SequenceMeta, target: Path, frame_time_ms: float | None) -> Path:
    import nibabel as nib

    data = frames.transpose(2, 1, 0)   # [T, H, W] -> (X, Y, T): the inverse of reading
    if len(meta.nifti_shape) == 4:
        data = data[:, :, None, :]
    header = meta.nifti_header.copy()
    header.set_data_dtype(frames.dtype)
    header.set_slope_inter(1.0, 0.0)   # frames hold the values themselves, in the input's dtype
    header["descrip"] = b"frames interpolated by mis"
    space_unit, time_unit = header.get_xyzt_units()
    if frame_time_ms is not None and time_unit not in _MS_PER_UNIT:
        time_unit = "msec"
        header.set_xyzt_units(space_unit, time_unit)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(np.ascontiguousarray(data), meta.affine, header=header)
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    image.set_sform(meta.affine, code=sform_code or 2)   # the affine the frames were read with, exactly
    image.set_qform(meta.affine if qform_code else None, code=qform_code)
    if frame_time_ms is not None:   # after the image is made: it rewrites pixdim from the data shape
        image.header["pixdim"][4] = frame_time_ms / _MS_PER_UNIT[time_unit]
    with atomic_output(target) as tmp:
        nib.save(image, str(tmp))
    return target


# --------------------------------------------------------------------------- preview


def write_preview(frames: np.ndarray, target: str | Path, fps: float) -> Path:
    """An animated GIF of the frames (looping), written atomically, for a quick look in any browser.

    frames: [T, H, W] or [T, H, W, 3]; uint8 as they are, other integers scaled from their dtype's range, float
    taken as [0, 1] (pass `to_unit(frames, meta)` for 12-bit DICOM). GIF only: an MP4 needs an encoder (ffmpeg
    or PyAV), which this environment does not have. GIF stores durations in 10 ms steps, and Pillow merges
    identical consecutive frames into one longer frame.
    """
    from PIL import Image

    target = Path(target)
    if target.suffix.lower() != ".gif":
        raise UsageError(f"{target}: previews are animated GIFs (.gif); MP4 needs an encoder that is not installed")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[3] != 3) or len(frames) == 0:
        raise ValueError(f"frames must be [T, H, W] or [T, H, W, 3], got shape {frames.shape}")
    images = [Image.fromarray(frame) for frame in _as_uint8(frames)]
    duration = max(10, round(1000.0 / fps / 10) * 10)
    with atomic_output(target) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return target


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype.kind == "f":
        if not np.isfinite(frames).all():
            raise ValueError("frames contain NaN or infinite values")
        unit = np.clip(frames, 0.0, 1.0)
    elif frames.dtype.kind in "iu":
        info = np.iinfo(frames.dtype)
        unit = (frames.astype(np.float64) - info.min) / (float(info.max) - info.min)
    else:
        raise ValueError(f"frames of dtype {frames.dtype} cannot be previewed")
    return np.rint(unit * 255.0).astype(np.uint8)
