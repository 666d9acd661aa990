"""3-D geometry: volume metadata, RAS reorientation, affine checks and HU plausibility. Imports no torch.

Geometry convention everywhere in ``mis``: ``VolumeMeta.affine`` maps voxel indices (i, j, k)
of the array to world millimetres in nibabel's RAS+ convention, exactly as ``nibabel.load(...).affine``.
The readers (`nifti.py`, `dicom.py`) build it; `volume.py` dispatches between them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from mis.errors import InputError


@dataclass
class VolumeMeta:
    """Geometry and provenance of a 3-D volume read by :func:`read_volume`.

    affine: 4x4 float64, voxel (i, j, k) -> world mm, nibabel RAS+ convention.
    shape: the 3-D array shape.
    spacing: voxel size in mm along i, j, k (column norms of the affine).
    source: the path that was read (file, or DICOM series folder).
    kind: "nifti" or "dicom".
    header: a nibabel NIfTI header to copy into outputs (NIfTI inputs), else None.
    extra: free-form details (DICOM series UID, rescale, "warnings", "not_hu", ...).
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    source: str
    kind: str
    header: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"VolumeMeta.affine must be 4x4, got {self.affine.shape}")
        self.shape = tuple(int(s) for s in self.shape)
        self.spacing = tuple(float(s) for s in self.spacing)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Closest anatomical axis codes of the array axes, e.g. ('R', 'A', 'S')."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def is_oblique(self) -> bool:
        """True when the voxel axes are rotated away from the world axes (> 0.1 degree)."""
        return obliquity_degrees(self.affine) > 0.1

    @property
    def warnings(self) -> list[str]:
        return list(self.extra.get("warnings", []))

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no header object) for run reports."""
        from mis.io.atomic import to_jsonable

        keep = {k: v for k, v in self.extra.items() if k not in ("files", "skipped_files")}
        return to_jsonable({
            "source": self.source,
            "kind": self.kind,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "axcodes": "".join(self.axcodes),
            "affine": self.affine.tolist(),
            **keep,
        })


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis: Euclidean norms of the affine's first 3 columns."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest world axis."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.sqrt((a**2).sum(axis=0))
    norms[norms == 0] = 1.0
    cosines = np.abs(a / norms).max(axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())


def check_affine(path: str | Path, affine: np.ndarray) -> None:
    """Raise InputError for a non-finite, singular or zero-spacing affine."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(path, "invalid affine: contains NaN or infinite values")
    sp = spacing_from_affine(a)
    if min(sp) <= 0 or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise InputError(path, f"invalid affine: zero or degenerate voxel spacing {_fmt_tuple(sp)} mm")


def _fmt_tuple(values, fmt: str = "{:.4g}") -> str:
    return "x".join(fmt.format(v) for v in values)


def is_nifti_name(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


# --------------------------------------------------------------------------- orientation


def _ornt(meta_or_affine: VolumeMeta | np.ndarray) -> np.ndarray:
    affine = meta_or_affine.affine if isinstance(meta_or_affine, VolumeMeta) else meta_or_affine
    return nio.io_orientation(np.asarray(affine, dtype=np.float64))


def to_ras(
    array: np.ndarray, meta: VolumeMeta
) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Reorient ``array`` (spatial axes first, extra trailing axes allowed) to the closest RAS axes.

    Only axis permutations and flips, never resampling: for an oblique affine the result is
    in the closest canonical orientation and the returned affine stays oblique.
    Returns ``(array_ras, ras_affine, inverse_fn)``; ``inverse_fn(a)`` equals ``from_ras(a, meta)``.
    The returned array is C-contiguous (safe for ``torch.from_numpy``).
    """
    if tuple(array.shape[:3]) != tuple(meta.shape[:3]):
        raise ValueError(f"array shape {array.shape} does not match meta.shape {meta.shape}")
    ornt = _ornt(meta)
    array_ras = np.ascontiguousarray(nio.apply_orientation(array, ornt))
    ras_affine = np.asarray(meta.affine, dtype=np.float64) @ nio.inv_ornt_aff(ornt, meta.shape[:3])

    def inverse_fn(a: np.ndarray) -> np.ndarray:
        return from_ras(a, meta)

    return array_ras, ras_affine, inverse_fn


def from_ras(array_ras: np.ndarray, meta: VolumeMeta) -> np.ndarray:
    """Undo :func:`to_ras`: bring an array in closest-RAS orientation back to ``meta``'s axes."""
    ornt = _ornt(meta)
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), ornt)
    out = np.ascontiguousarray(nio.apply_orientation(array_ras, back))
    if tuple(out.shape[:3]) != tuple(meta.shape[:3]):
        raise ValueError(f"from_ras: result shape {out.shape} does not match meta.shape {meta.shape}")
    return out


def ras_shape(meta: VolumeMeta) -> tuple[int, int, int]:
    """Shape of the array after :func:`to_ras`."""
    ornt = _ornt(meta)
    shape = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        shape[int(dst_axis)] = int(meta.shape[src_axis])
    return tuple(shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------- intensity


def looks_like_hu(array: np.ndarray) -> str | None:
    """Return a warning text when the intensities do not look like CT Hounsfield units, else None.

    CT in HU has air near -1000 and soft tissue around 0..100. Typical non-HU inputs: 8-bit
    windowed exports (0..255), MR, raw stored values without RescaleIntercept (all >= 0).
    """
    a = np.asarray(array)
    if a.size == 0:
        return "empty volume"
    finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
    if finite.size == 0:
        return "no finite values"
    lo, hi = float(finite.min()), float(finite.max())
    rng = f"{lo:.6g}..{hi:.6g}"
    if hi - lo < 1e-6:
        return f"constant intensity {lo:.6g}: not a CT image in Hounsfield units"
    if lo >= 0 and hi <= 255:
        return f"values {rng} look like an 8-bit windowed image, not Hounsfield units (air is about -1000 HU)"
    if lo >= -1.5 and hi <= 1.5:
        return f"values {rng} look normalised, not Hounsfield units (air is about -1000 HU)"
    if lo >= 0:
        return (
            f"no negative values ({rng}): not Hounsfield units (air is about -1000 HU); "
            "raw stored values without the rescale intercept, or not a CT?"
        )
    if lo > -500:
        return f"no values below -500 ({rng}): not Hounsfield units (air is about -1000 HU), or not a CT?"
    return None


def add_warning(meta: VolumeMeta, text: str) -> None:
    """Append a user-facing warning to ``meta.extra['warnings']`` (no duplicates)."""
    warnings = meta.extra.setdefault("warnings", [])
    if text not in warnings:
        warnings.append(text)
