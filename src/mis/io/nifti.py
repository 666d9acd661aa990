"""NIfTI reading and writing with geometry kept end to end. Imports no torch."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mis.errors import InputError
from mis.io.atomic import atomic_output
from mis.io.geometry import (
    VolumeMeta,
    add_warning,
    check_affine,
    looks_like_hu,
    obliquity_degrees,
    spacing_from_affine,
)

_GZIP_MAGIC = b"\x1f\x8b"


def _shape_str(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _load(path: Path):
    """nibabel.load with every failure turned into an InputError; also how many voxel bytes the file holds."""
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        raise InputError(path, "is a folder, not a NIfTI file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    is_gz_name = path.name.lower().endswith(".gz")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if is_gz_name and head != _GZIP_MAGIC:
        raise InputError(path, "not a NIfTI file (name ends in .gz but the content is not gzip data)")
    if not is_gz_name and head == _GZIP_MAGIC:
        raise InputError(path, "gzip-compressed data in a file named .nii; rename it to .nii.gz")
    try:
        img, stored = _load_gzipped(path) if is_gz_name else (nib.load(str(path)), size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, "truncated or corrupt gzip stream") from exc
    except nib.filebasedimages.ImageFileError as exc:
        msg = str(exc).lower()
        if "gzip" in msg:
            raise InputError(path, "truncated or corrupt gzip stream") from exc
        raise InputError(path, "not a NIfTI file (no valid NIfTI header)") from exc
    except (OSError, ValueError, nib.spatialimages.HeaderDataError) as exc:
        raise InputError(path, f"not a readable NIfTI file ({_short(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)):
        raise InputError(path, f"not a NIfTI file (nibabel reads it as {type(img).__name__})")
    voxel_bytes = stored - int(img.header.get("vox_offset", 0)) if isinstance(img, (nib.Nifti1Image,
                                                                                   nib.Nifti2Image)) else None
    return img, voxel_bytes


def _load_gzipped(path: Path):
    """Decompress the whole file first: nibabel stops reading at the last voxel byte, so it never checks the
    gzip CRC, and a flipped byte inside the stream would be segmented as garbage without a word."""
    raw = gzip.decompress(path.read_bytes())   # raises on a CRC or length mismatch and on truncation
    if raw[344:348] == b"n+1\0":               # the single-file magic of each header version
        return nib.Nifti1Image.from_bytes(raw), len(raw)
    if raw[4:8] == b"n+2\0":
        return nib.Nifti2Image.from_bytes(raw), len(raw)
    raise nib.filebasedimages.ImageFileError("no NIfTI-1 or NIfTI-2 header")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__


def read_nifti(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a 3-D NIfTI volume as float32 (scl_slope/scl_inter applied) plus its metadata.

    A 4-D (or 5-D ...) file whose extra dimensions are all 1 is squeezed to 3-D. Raises
    :class:`InputError` for a missing/empty/corrupt/truncated file, a non-NIfTI file, a
    2-D or truly 4-D image, a single slice, zero size, NaN or infinite voxels, a bad affine.
    """
    p = Path(path)
    img, voxel_bytes = _load(p)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape3 = shape[:3]
    else:
        shape3 = shape
    if len(shape3) < 3:
        raise InputError(p, f"{len(shape3)}-D image (shape {_shape_str(shape)}); expected a 3-D CT volume")
    if len(shape3) > 3:
        raise InputError(p, f"{len(shape)}-D volume (shape {_shape_str(shape)}); expected a 3-D CT")
    if 0 in shape3:
        raise InputError(p, f"empty volume (shape {_shape_str(shape)})")
    if 1 in shape3:
        raise InputError(p, f"single slice (shape {_shape_str(shape3)}), not a volume")
    stored_dtype = img.get_data_dtype()
    if stored_dtype.kind == "c":
        raise InputError(p, f"complex-valued voxels ({stored_dtype}): a CT volume holds real values (HU); "
                         "convert the magnitude or real part explicitly if that is what you mean")
    if stored_dtype.kind not in "biuf":
        raise InputError(p, f"voxels of type {stored_dtype} are not numbers a CT volume can hold")
    declared = math.prod(shape) * stored_dtype.itemsize   # Python ints: no overflow for 2**31 voxels
    if voxel_bytes is not None and declared > voxel_bytes:
        raise InputError(p, f"the header declares {_shape_str(shape)} voxels ({declared / 1e9:.3g} GB) but the file "
                         f"holds {max(voxel_bytes, 0) / 1e6:.3g} MB of voxel data: truncated file or a damaged header")
    try:
        data = np.asanyarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(p, "truncated or corrupt gzip stream") from exc
    except OSError as exc:
        if "damaged" in str(exc) or "Expected" in str(exc):
            raise InputError(p, "truncated file: fewer voxel bytes than the header declares") from exc
        raise InputError(p, f"cannot read voxel data ({_short(exc)})") from exc
    except (ValueError, TypeError, MemoryError) as exc:
        raise InputError(p, f"cannot read voxel data ({_short(exc)})") from exc
    data = np.ascontiguousarray(data.reshape(shape3), dtype=np.float32)
    _check_finite(p, data)

    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(p, affine)
    header = img.header.copy()
    extra: dict[str, Any] = {
        "stored_dtype": str(img.get_data_dtype()),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "warnings": [],
    }
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if (slope, inter) != (1.0, 0.0):
        extra["scl_slope"], extra["scl_inter"] = float(slope), float(inter)
    if len(shape) > 3:
        extra["squeezed_from"] = shape
    meta = VolumeMeta(
        affine=affine,
        shape=shape3,
        spacing=spacing_from_affine(affine),
        source=str(p),
        kind="nifti",
        header=header,
        extra=extra,
    )
    if extra["qform_code"] == 0 and extra["sform_code"] == 0:
        add_warning(meta, "NIfTI has no qform/sform (codes 0): orientation is unknown, assuming the default")
    oblique = obliquity_degrees(affine)
    if oblique > 0.1:
        extra["oblique_degrees"] = round(oblique, 3)
        add_warning(meta, f"oblique affine ({oblique:.1f} degrees from the closest axes)")
    not_hu = looks_like_hu(data)
    if not_hu:
        extra["not_hu"] = not_hu
        add_warning(meta, not_hu)
    return data, meta


def _check_finite(p: Path, data: np.ndarray) -> None:
    finite = np.isfinite(data)
    if finite.all():
        return
    n_nan = int(np.isnan(data).sum())
    if n_nan == data.size:
        raise InputError(p, "all voxels are NaN")
    if n_nan:
        raise InputError(p, f"contains {n_nan} NaN voxels (of {data.size})")
    n_inf = int(data.size - finite.sum())
    raise InputError(p, f"contains {n_inf} infinite voxels (of {data.size})")


def _checked_cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    a = np.asarray(array)
    if np.issubdtype(dtype, np.integer) and a.size:
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ValueError(f"cannot write non-finite values as {dtype}")
        info = np.iinfo(dtype)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"values {lo}..{hi} do not fit in {dtype}")
        if np.issubdtype(a.dtype, np.floating):
            a = np.rint(a)
    return np.ascontiguousarray(a, dtype=dtype)


def build_nifti_image(
    array: np.ndarray,
    meta: VolumeMeta,
    dtype: Any = np.uint8,
    extra_header: dict[str, Any] | None = None,
) -> nib.Nifti1Image:
    """The image :func:`write_nifti` saves: meta's affine and header, ``dtype``, no scaling."""
    if tuple(array.shape[:3]) != tuple(meta.shape):
        raise ValueError(f"array shape {array.shape} does not match meta.shape {meta.shape}")
    data = _checked_cast(array, dtype)
    affine = np.asarray(meta.affine, dtype=np.float64)
    src = meta.header
    if isinstance(src, nib.Nifti1Header) and not isinstance(src, nib.Nifti2Header):
        hdr = src.copy()
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    else:
        hdr = nib.Nifti1Header()
        if isinstance(src, nib.Nifti2Header):
            qcode, scode = int(src["qform_code"]), int(src["sform_code"])
            hdr.set_xyzt_units(*src.get_xyzt_units())
        else:  # DICOM input or no header: scanner coordinates, like dcm2niix
            qcode, scode = 1, 1
            hdr.set_xyzt_units("mm", "sec")
    # An output is not the input: drop its extensions (e.g. an input label table), scaling
    # and display window; the caller can set fields again through extra_header.
    hdr.extensions.clear()
    hdr.set_data_dtype(data.dtype)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
    hdr["intent_code"] = 0
    hdr["intent_name"] = b""
    hdr["descrip"] = b""
    img = nib.Nifti1Image(data, affine, header=hdr)
    if qcode == 0 and scode == 0:
        # Faithful to an input without orientation codes; nibabel then falls back to pixdim.
        if not np.allclose(img.header.get_base_affine(), affine, atol=1e-4):
            scode = 2
    img.set_sform(affine, code=scode)
    if qcode:
        img.set_qform(affine, code=qcode)
    else:
        img.set_qform(None, code=0)
    for key, value in (extra_header or {}).items():
        if key == "extensions":
            for ext in value:
                img.header.extensions.append(
                    ext if isinstance(ext, nib.nifti1.Nifti1Extension) else nib.nifti1.Nifti1Extension(*ext)
                )
        else:
            img.header[key] = value
    if tuple(img.shape[:3]) != tuple(meta.shape):
        raise AssertionError(f"NIfTI shape {img.shape} != input shape {meta.shape}")
    written_affine = img.header.get_best_affine()
    if not np.allclose(written_affine, affine, rtol=1e-5, atol=1e-4):
        raise AssertionError(f"NIfTI header affine does not reproduce the input affine:\n{written_affine}\n{affine}")
    return img


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    meta: VolumeMeta,
    dtype: Any = np.uint8,
    extra_header: dict[str, Any] | None = None,
) -> Path:
    """Write ``array`` atomically as NIfTI with ``meta``'s affine and header; returns the path.

    ``array`` must have ``meta.shape`` (spatial axes first). Values are cast to ``dtype``
    (integers are range-checked), with no intensity scaling. ``meta.header`` (NIfTI inputs)
    is copied so qform/sform codes, units and pixdim match the input; extensions, scaling,
    cal_min/cal_max, intent and descrip are reset. ``extra_header`` sets header fields
    afterwards (e.g. ``{"descrip": b"mis segment"}``; key ``"extensions"``: a list of
    ``(code, bytes)`` or ``Nifti1Extension``).
    """
    img = build_nifti_image(array, meta, dtype=dtype, extra_header=extra_header)
    target = Path(path)
    with atomic_output(target) as tmp:
        nib.save(img, str(tmp))
    return target


__all__ = ["read_nifti", "write_nifti", "build_nifti_image"]
