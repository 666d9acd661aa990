"""Seeded synthetic abdominal / lower-thoracic CT phantoms.

The phantoms are used to train and evaluate the demo CT segmentation model and in tests.
They are cheap (well under a second each on one core), fully deterministic for a given
seed and arguments, and try to look enough like a real abdominal CT (HU levels, layered
body wall, bowel/fat mixture, ribs, vertebral column with discs, table, noise) that a model
trained on them is not completely lost on a real scan.

Coordinate convention
---------------------
Everything is built in *world* space and then sampled onto the voxel grid described by the
returned ``affine`` (voxel index ``(i, j, k)`` -> world ``affine @ (i, j, k, 1)``), exactly as
nibabel interprets NIfTI affines.  nibabel's world space is "scanner RAS+" (verified in the
nibabel documentation, https://nipy.org/nibabel/coordinate_systems.html, section "Naming
reference spaces": the axes go "left to Right; posterior to Anterior; and inferior to
Superior", i.e. positive x points to the *subject's right*, positive y anterior, positive z
superior).  Consequently the liver (patient's right) has a LARGER world x than the spleen
(patient's left), and the lungs have a larger world z than the kidneys, whatever the storage
orientation (RAS, LPS, permuted axes, oblique) of the array.

Internally an "anatomy frame" is used: RAS-aligned, in mm, with x = 0 on the body midline,
y = 0 at the body centre and z = 0 at the top of the right hemidiaphragm dome.  World
coordinates are the anatomy coordinates plus a random table offset.

Modules: ``anatomy`` samples the random anatomy, ``geometry`` the voxel grid (orientation,
obliquity, field of view, affine), ``noise`` the smooth random texture fields, ``render``
draws the anatomy and finishes the image.  The generated arrays depend on the exact order
of the random draws in all of them.

Only numpy and scipy are used (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .anatomy import _sample_anatomy
from .geometry import ORIENTATIONS, _affine, _axcodes, _render_grid, _sample_geometry, _storage_grid
from .noise import _BANK_SPECS, _NoiseBank
from .render import _apply_recon_circle, _finish, _render, _to_storage

__all__ = ["PHANTOM_LABELS", "Phantom", "make_phantom", "phantom_batch", "ORIENTATIONS"]

#: Label ids of the phantom segmentation (fixed order, used by the demo model).
PHANTOM_LABELS: dict[int, str] = {
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "lung",
    6: "spine",
}


@dataclass
class Phantom:
    """A synthetic CT volume with its reference segmentation.

    ``image`` is float32 HU and ``labels`` uint8 (ids of :data:`PHANTOM_LABELS`), both with
    array axes (i, j, k); ``affine`` maps voxel indices to nibabel RAS+ world mm; ``spacing``
    is the voxel size along (i, j, k) (the column norms of ``affine[:3, :3]``).
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    spacing: tuple
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    def volume_meta(self):
        """The geometry as the I/O layer describes a volume read from disk."""
        from mis.io.volume import VolumeMeta

        return VolumeMeta(affine=self.affine, shape=self.image.shape, spacing=tuple(self.spacing),
                          source=f"phantom:{self.seed}", kind="synthetic")

    @property
    def orientation(self) -> str:
        """Axis codes of the storage orientation (e.g. ``"LPS"``), nearest axis per column."""
        return _axcodes(self.affine)


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    oblique: bool | None = None,
    orientation: str | None = None,
) -> Phantom:
    """Generate one synthetic CT phantom.

    Parameters
    ----------
    seed:
        Seed of ``np.random.default_rng``; same seed and arguments give identical arrays.
        The anatomy depends on the seed only (not on shape/spacing/orientation/oblique).
    shape, spacing:
        Array shape and voxel size (mm) along the *array* axes (i, j, k).  By default the
        spacing is drawn per phantom (in-plane 2.5-4 mm, cranio-caudal 2.5-5 mm, enlarged
        isotropically if the volume would exceed ~1.1 M voxels) and the field of view covers
        ~330-380 (R-L) x 280-320 (A-P) mm and 200-350 mm along z, from 30-90 mm above the
        right diaphragm dome downwards, so that all six labels are present.  If only
        ``shape`` is given the spacing is chosen to cover that field of view; if only
        ``spacing`` is given the shape is.
    oblique:
        Rotate the voxel grid by a random 4-15 degree angle about a random axis (default:
        random with probability 0.3).
    orientation:
        Storage orientation as nibabel axis codes (e.g. ``"RAS"``, ``"LPS"``, ``"PIL"``);
        default: drawn from :data:`ORIENTATIONS`.
    """
    # three independent streams, so that e.g. the anatomy does not depend on the geometry
    root = np.random.default_rng(seed)
    rng_anat, rng_geom, rng_tex = root.spawn(3)
    A = _sample_anatomy(rng_anat)
    draw = _sample_geometry(rng_geom)  # always drawn in full: the stream does not depend on the arguments
    storage = _storage_grid(draw, A.z_low, shape, spacing, oblique, orientation)

    # Render on an RAS-aligned grid (cheap separable coordinates), then map onto the
    # storage grid.  The texture stream feeds the noise bank first, then the image noise.
    grid = _render_grid(storage)
    bank = _NoiseBank(rng_tex, _BANK_SPECS)
    img_r, lab_r = _render(A, grid, bank)
    clean, labels = _to_storage(img_r, lab_r, grid, storage)
    del img_r, lab_r
    image = _finish(A.finish, clean, rng_tex)
    if A.recon.present:
        _apply_recon_circle(image, labels, storage, A.recon.radius)

    affine = _affine(storage, draw.offset)
    meta = {
        "orientation": _axcodes(affine),
        "oblique": storage.oblique,
        "rotation_deg": math.degrees(draw.rot_angle) if storage.oblique else 0.0,
        "phase": A.phase,
        "world_offset": tuple(float(v) for v in draw.offset),
    }
    return Phantom(
        image=image.astype(np.float32, copy=False),
        labels=labels,
        affine=affine,
        spacing=tuple(float(v) for v in storage.spacing),
        seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
        meta=meta,
    )


def phantom_batch(seeds: Iterable[int], **kwargs) -> list[Phantom]:
    """``[make_phantom(s, **kwargs) for s in seeds]``."""
    return [make_phantom(int(s), **kwargs) for s in seeds]
