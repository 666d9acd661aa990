"""3-D volumes: read a NIfTI file or a DICOM series folder into ``(array, VolumeMeta)``. Imports no torch.

The geometry (``VolumeMeta``, RAS reorientation, HU plausibility) lives in `geometry.py` and is re-exported
here, the volume API callers use; the readers import `geometry`, never this module, so the imports run one way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.dicom import is_dicom_file, read_dicom_series, single_file_problem
from mis.io.geometry import (  # noqa: F401  (the volume API)
    VolumeMeta, add_warning, check_affine, from_ras, is_nifti_name, looks_like_hu, obliquity_degrees, ras_shape,
    spacing_from_affine, to_ras)
from mis.io.kinds import visible_children
from mis.io.nifti import read_nifti

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Formats we recognise by name only to give a helpful message.
_OTHER_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".mgz", ".mgh", ".hdr", ".img", ".npy", ".npz")


# --------------------------------------------------------------------------- dispatch


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """Read a 3-D CT volume from a NIfTI file or a DICOM series folder.

    Returns ``(array, meta)``: a float32 3-D array (HU for CT) and its :class:`VolumeMeta`.
    Every bad input raises :class:`mis.errors.InputError` naming the path.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or directory")
    if p.is_dir():
        files = [c for c in visible_children(p) if c.is_file()]
        if any(is_dicom_file(f) for f in files):
            return read_dicom_series(p)
        niftis = [f for f in files if is_nifti_name(f)]
        if niftis:
            raise InputError(
                p, f"folder holds {len(niftis)} NIfTI file(s), not a DICOM series; pass the NIfTI files themselves"
            )
        subdirs = [c for c in visible_children(p) if c.is_dir()]
        if subdirs and any(dir_has_dicom(d) for d in subdirs):
            raise InputError(p, "folder holds DICOM series in subfolders; pass one series folder")
        raise InputError(p, "empty folder: no DICOM or NIfTI files")
    if not p.is_file():
        raise InputError(p, "not a regular file or folder")
    if is_nifti_name(p):
        return read_nifti(p)
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes)")
    if is_dicom_file(p):
        raise InputError(p, single_file_problem(p))
    lower = p.name.lower()
    for suf in _OTHER_VOLUME_SUFFIXES:
        if lower.endswith(suf):
            raise InputError(p, f"unsupported format '{suf}': convert it to NIfTI (.nii.gz) first")
    if _sniff_nifti(p):
        raise InputError(p, "looks like a NIfTI file but the name does not end in .nii or .nii.gz; rename it")
    raise InputError(p, "not a NIfTI file or DICOM series")


def dir_has_dicom(folder: Path) -> bool:
    # A DICOMDIR (always named so, by the standard) indexes a CD/DVD export; it makes no folder a series.
    return any(c.is_file() and c.name.upper() != "DICOMDIR" and is_dicom_file(c) for c in visible_children(folder))


def _sniff_nifti(p: Path) -> bool:
    """True when the bytes are a NIfTI-1/2 header (plain or gzip-compressed)."""
    import gzip

    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rb") as fh:  # type: ignore[operator]
            data = fh.read(540)
    except (OSError, EOFError):
        return False
    return data[344:347] in (b"n+1", b"ni1") or data[4:7] in (b"n+2", b"ni2")
