"""DICOM CT series reading: one folder, one series -> a 3-D HU volume with a RAS affine.

Slices are ordered by the projection of ImagePositionPatient onto the slice normal (never by
InstanceNumber or SliceLocation/SliceThickness). Gaps, duplicate positions, gantry tilt, mixed
series, inconsistent sizes and missing pixel data are refused with one clear InputError.

Array axes follow NIfTI files from dcm2niix/nibabel: (i, j, k) = (column, row, slice), i.e.
``volume[:, :, k] = pixel_array_k.T``. The affine maps (i, j, k) to RAS+ millimetres (DICOM
patient coordinates are LPS, so the first two rows are negated). Imports no torch.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mis.errors import InputError
from mis.io.geometry import VolumeMeta, add_warning, check_affine, looks_like_hu

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DEFER_SIZE = 4096  # bytes: larger element values (the pixel data) are read only when used
_GAP_FACTOR = 1.5  # a spacing this many times the median is a gap (missing slices)
_TILT_DEGREES = 0.1  # slice positions further than this off the normal: gantry tilt / shear
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NOT_DICOM_SUFFIXES = {
    ".nii", ".gz", ".json", ".txt", ".md", ".csv", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
    ".npy", ".npz", ".xml", ".html", ".pdf", ".zip", ".py", ".sh", ".nrrd", ".mha", ".mhd", ".mgz",
}


# --------------------------------------------------------------------------- detection


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file: 'DICM' at offset 128, else a pydicom parse that finds
    real DICOM elements (old files without the 128-byte preamble)."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 132 or p.suffix.lower() in _NOT_DICOM_SUFFIXES or head[:2] == b"\x1f\x8b":
        return False
    # A DICOM data set without preamble starts with a group 0x0002/0x0008 tag, little endian.
    if head[1:2] != b"\x00" or head[0:1] not in (b"\x02", b"\x08"):
        return False
    ds = _try_read(p, force=True, stop_before_pixels=True)
    return ds is not None and _has_dicom_content(ds)


def _has_dicom_content(ds: Dataset) -> bool:
    try:
        return any(t in ds for t in ("SOPClassUID", "Rows", "Modality", "StudyInstanceUID"))
    except Exception:  # noqa: BLE001 - garbage parsed with force=True
        return False


def _try_read(path: Path, force: bool, stop_before_pixels: bool = False) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(
                str(path), force=force, stop_before_pixels=stop_before_pixels, defer_size=_DEFER_SIZE
            )
    except Exception:  # noqa: BLE001 - any parse failure means "not a readable DICOM"
        return None


def _read_dataset(path: Path) -> Dataset | None:
    """Full (pixel data deferred) read of a DICOM file, or None when it is not DICOM."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    has_preamble = len(head) == 132 and head[128:132] == b"DICM"
    ds = _try_read(path, force=not has_preamble)
    if ds is None:
        if has_preamble:
            raise InputError(path, "corrupt DICOM file (cannot be parsed)")
        return None
    if not has_preamble and not _has_dicom_content(ds):
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:  # raw data set without file meta
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return ds


def _is_image(ds: Dataset) -> bool:
    """Image storage objects only: not DICOMDIR, structured reports, RT structures, ..."""
    if str(ds.get("SOPClassUID", "")) == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return False
    return "Rows" in ds and "Columns" in ds


def single_file_problem(path: str | Path) -> str:
    """The InputError problem text for a single DICOM file given instead of a series folder."""
    ds = _try_read(Path(path), force=True, stop_before_pixels=True)
    frames = 1
    if ds is not None:
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            frames = 1
    media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if Path(path).name.upper() == "DICOMDIR" or media_class == _DICOMDIR_SOP_CLASS or (
            ds is not None and "DirectoryRecordSequence" in ds):
        return "a DICOMDIR (the index of a CD/DVD export), not an image; pass its folder (the series below it are found)"
    if frames > 1:
        return (
            f"multi-frame DICOM file ({frames} frames) is not supported; "
            "convert it to NIfTI first (e.g. with dcm2niix)"
        )
    return "single slice, not a volume (pass the folder that holds the whole DICOM series)"


# --------------------------------------------------------------------------- reading


@dataclass
class _Slice:
    path: Path
    ds: Dataset
    position: np.ndarray  # ImagePositionPatient (LPS mm)
    along: float = 0.0  # projection onto the slice normal


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    if keyword not in ds or ds.get(keyword) is None:
        raise InputError(path, f"missing {keyword}")
    try:
        values = np.array([float(v) for v in ds.get(keyword)], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"invalid {keyword} ({ds.get(keyword)!r})") from exc
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise InputError(path, f"invalid {keyword} ({ds.get(keyword)!r})")
    return values


def _describe_series(uid: str, slices: list[_Slice]) -> str:
    ds = slices[0].ds
    number = ds.get("SeriesNumber", "?")
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    label = f"series {number}" + (f" '{desc}'" if desc else "")
    return f"{label}: {len(slices)} file(s)"


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read one DICOM series folder as a float32 HU volume (i=column, j=row, k=slice) + metadata.

    Hidden files and non-DICOM files (README, DICOMDIR, ...) are skipped; subfolders are not read.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "no such file or directory")
    if not folder.is_dir():
        raise InputError(folder, "not a folder (a DICOM series is read from its folder)")
    try:
        entries = sorted(c for c in folder.iterdir() if not c.name.startswith("."))
    except PermissionError as exc:
        raise InputError(folder, "permission denied") from exc
    files = [c for c in entries if c.is_file()]

    series: dict[str, list[_Slice]] = {}
    skipped: list[str] = []
    for f in files:
        if f.stat().st_size == 0:
            skipped.append(f.name)
            continue
        ds = _read_dataset(f)
        if ds is None or not _is_image(ds):
            skipped.append(f.name)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        series.setdefault(uid, []).append(_Slice(path=f, ds=ds, position=np.zeros(3)))

    if not series:
        if any(c.is_dir() for c in entries):
            raise InputError(folder, "no DICOM images in this folder (only in subfolders); pass one series folder")
        raise InputError(folder, "empty folder: no DICOM or NIfTI files" if not files else "no DICOM images in folder")
    if len(series) > 1:
        parts = [_describe_series(uid, s) for uid, s in sorted(series.items(), key=lambda kv: -len(kv[1]))]
        shown = "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")
        raise InputError(
            folder,
            f"{len(series)} DICOM series in one folder ({shown}); pass one series folder "
            "(put each series in its own folder)",
        )
    uid, slices = next(iter(series.items()))
    return _assemble(folder, uid, slices, skipped)


def _assemble(folder: Path, uid: str, slices: list[_Slice], skipped: list[str]) -> tuple[np.ndarray, VolumeMeta]:
    first = slices[0].ds
    for s in slices:
        frames = s.ds.get("NumberOfFrames", 1)
        try:
            frames = int(frames or 1)
        except (TypeError, ValueError):
            frames = 1
        if frames > 1:
            raise InputError(
                s.path,
                f"multi-frame DICOM file ({frames} frames) is not supported; "
                "convert it to NIfTI first (e.g. with dcm2niix)",
            )
    if len(slices) == 1:
        raise InputError(folder, "single slice, not a volume (the series has only one image)")

    # Same image size, pixel spacing and orientation for every slice.
    frames_of_reference = {str(s.ds.get("FrameOfReferenceUID", "") or "") for s in slices} - {""}
    if len(frames_of_reference) > 1:
        raise InputError(folder, f"inconsistent frame of reference: {len(frames_of_reference)} FrameOfReferenceUIDs "
                         "in one series (slices from different patient positionings cannot form one volume)")
    sizes = {(int(s.ds.Rows), int(s.ds.Columns)) for s in slices}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise InputError(folder, f"inconsistent rows/columns in one series (image sizes {shown})")
    rows, cols = sizes.pop()
    spp = int(first.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise InputError(folder, f"colour images ({spp} samples per pixel), not a CT series")
    spacings = np.array([_floats(s.ds, "PixelSpacing", 2, s.path) for s in slices])
    if np.ptp(spacings, axis=0).max() > 1e-4 * max(1.0, spacings.max()):
        raise InputError(folder, "inconsistent PixelSpacing between slices of one series")
    row_spacing, col_spacing = (float(v) for v in spacings[0])
    if row_spacing <= 0 or col_spacing <= 0:
        raise InputError(folder, f"invalid PixelSpacing {row_spacing}, {col_spacing}")
    iops = np.array([_floats(s.ds, "ImageOrientationPatient", 6, s.path) for s in slices])
    if np.abs(iops - iops[0]).max() > 1e-4:
        n_orient = len({tuple(np.round(o, 4)) for o in iops})
        raise InputError(
            folder, f"slices with {n_orient} different orientations (ImageOrientationPatient) in one series"
        )
    row_dir, col_dir = iops[0][:3], iops[0][3:]  # direction of increasing column index / row index
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir)) < 1e-6:
        raise InputError(folder, "invalid ImageOrientationPatient (zero vector)")
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise InputError(folder, "invalid ImageOrientationPatient (row and column directions not orthogonal)")
    normal = np.cross(row_dir, col_dir)

    for s in slices:
        s.position = _floats(s.ds, "ImagePositionPatient", 3, s.path)
        s.along = float(s.position @ normal)
    slices.sort(key=lambda s: (s.along, s.path.name))

    # Gantry tilt declared in the header.
    tilts = {round(float(s.ds.get("GantryDetectorTilt", 0) or 0), 3) for s in slices}
    tilt_tag = max(tilts, key=abs)
    if abs(tilt_tag) > 0.01:
        raise InputError(
            folder,
            f"gantry tilt of {tilt_tag:g} degrees (GantryDetectorTilt): the slices form a sheared volume; "
            "correct the tilt first (e.g. convert with dcm2niix, which resamples tilted series)",
        )

    along = np.array([s.along for s in slices])
    gaps = np.diff(along)
    median = float(np.median(gaps))
    names = [s.path.name for s in slices]
    dup = np.flatnonzero(gaps < max(1e-3, 1e-3 * abs(median)))
    if len(dup):
        i = int(dup[0])
        raise InputError(
            folder,
            f"duplicate slice positions: {len(dup) + 1} or more slices share a position "
            f"(e.g. {names[i]} and {names[i + 1]}); several acquisitions in one series?",
        )
    big = int(np.argmax(gaps))
    if gaps[big] > _GAP_FACTOR * median:
        raise InputError(
            folder,
            f"non-contiguous series: gap of {gaps[big]:.2f} mm between slices {names[big]} and {names[big + 1]} "
            f"(median spacing {median:.3g} mm); missing slices?",
        )
    small = int(np.argmin(gaps))
    if gaps[small] * _GAP_FACTOR < median:
        raise InputError(
            folder,
            f"non-uniform slice spacing: {gaps[small]:.3g} mm between slices {names[small]} and {names[small + 1]} "
            f"(median spacing {median:.3g} mm)",
        )

    # Gantry tilt (or any shear) seen in the positions: they must move along the normal.
    p0, p_last = slices[0].position, slices[-1].position
    offsets = np.array([s.position - p0 for s in slices])
    perp = offsets - np.outer(offsets @ normal, normal)
    perp_max = float(np.linalg.norm(perp, axis=1).max())
    span = float(along[-1] - along[0])
    tilt_deg = float(np.degrees(np.arctan2(perp_max, span)))
    if perp_max > 0.05 and tilt_deg > _TILT_DEGREES:
        raise InputError(
            folder,
            f"gantry tilt: slice positions are {tilt_deg:.2f} degrees off the slice normal (sheared volume); "
            "correct the tilt first (e.g. convert with dcm2niix, which resamples tilted series)",
        )

    # Affine in DICOM LPS, then RAS+.
    step = (p_last - p0) / (len(slices) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: along a row = increasing column index
    lps[:3, 1] = col_dir * row_spacing  # j: down a column = increasing row index
    lps[:3, 2] = step
    lps[:3, 3] = p0
    affine = _LPS_TO_RAS @ lps
    check_affine(folder, affine)

    volume = np.empty((cols, rows, len(slices)), dtype=np.float32)
    slopes, intercepts = set(), set()
    for k, s in enumerate(slices):
        pix = _pixel_array(s)
        if pix.shape != (rows, cols):
            raise InputError(s.path, f"pixel data shape {pix.shape} does not match Rows x Columns {rows}x{cols}")
        slope = float(s.ds.get("RescaleSlope", 1) or 1)
        intercept = float(s.ds.get("RescaleIntercept", 0) or 0)
        slopes.add(slope)
        intercepts.add(intercept)
        volume[:, :, k] = (pix.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T
    if not np.all(np.isfinite(volume)):
        raise InputError(folder, "pixel data contains NaN or infinite values")

    ts = first.file_meta.TransferSyntaxUID
    modality = str(first.get("Modality", "") or "")
    extra: dict[str, Any] = {
        "series_uid": uid,
        "series_number": _plain(first.get("SeriesNumber")),
        "series_description": str(first.get("SeriesDescription", "") or ""),
        "modality": modality,
        "manufacturer": str(first.get("Manufacturer", "") or ""),
        "n_slices": len(slices),
        "files": names,
        "skipped_files": skipped,
        "study_uid": str(first.get("StudyInstanceUID", "") or ""),
        "frame_of_reference_uid": next(iter(frames_of_reference), ""),
        "transfer_syntax": f"{ts.name} ({ts})" if isinstance(ts, UID) else str(ts),
        "rescale_slope": sorted(slopes),
        "rescale_intercept": sorted(intercepts),
        "slice_spacing": float(np.linalg.norm(step)),
        "slice_thickness": _plain(first.get("SliceThickness")),
        "warnings": [],
    }
    meta = VolumeMeta(
        affine=affine,
        shape=volume.shape,
        spacing=(col_spacing, row_spacing, float(np.linalg.norm(step))),
        source=str(folder),
        kind="dicom",
        header=None,
        extra=extra,
    )
    if modality and modality.upper() != "CT":
        add_warning(meta, f"modality is {modality}, not CT")
    if "RescaleIntercept" not in first and modality.upper() == "CT":
        add_warning(meta, "no RescaleIntercept: values may be raw stored values, not HU")
    if abs(median - np.linalg.norm(step)) > 0.01 * median:
        add_warning(meta, "slice spacing varies slightly; using the mean spacing")
    not_hu = looks_like_hu(volume)
    if not_hu:
        extra["not_hu"] = not_hu
        add_warning(meta, not_hu)
    return volume, meta


def _plain(value: Any) -> Any:
    """DICOM value -> plain Python (float/int/str/None) for JSON-friendly metadata."""
    if value is None:
        return None
    for cast in (int, float):
        try:
            v = cast(value)
            if cast is float or str(v) == str(value).strip():
                return v
        except (TypeError, ValueError):
            continue
    return str(value)


def _pixel_array(s: _Slice) -> np.ndarray:
    ds = s.ds
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(s.path, "missing pixel data")
    ts = ds.file_meta.TransferSyntaxUID
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder/plugin errors come in many types
        detail = " ".join(str(exc).split())[:200]
        if getattr(ts, "is_compressed", False):
            hint = _decoder_hint(ts)
            raise InputError(
                s.path, f"cannot decode compressed pixel data ({ts.name}){hint}: {detail}"
            ) from exc
        raise InputError(s.path, f"corrupt or truncated pixel data: {detail}") from exc
    return np.asarray(arr)


def _decoder_hint(ts: UID) -> str:
    try:
        import pylibjpeg  # noqa: F401
    except ImportError:
        return "; install a decoder: pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg"
    if "2000" in ts.name:
        try:
            import openjpeg  # noqa: F401
        except ImportError:
            return "; install the JPEG 2000 decoder: pip install pylibjpeg-openjpeg"
    return ""
