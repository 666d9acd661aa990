"""Voxel-grid geometry of a phantom: storage orientation, obliquity, field of view, affine.

Two grids are involved.  The *storage* grid is the one returned to the caller (any axis
order and direction, possibly oblique); the *render* grid is RAS-aligned and covers it, so
that the anatomy can be drawn with cheap separable coordinates and then mapped onto the
storage grid.  All coordinates here are anatomy-frame mm (see the package docstring) unless
they are called world coordinates (anatomy + table offset).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

#: Storage orientations drawn when ``orientation`` is None, with their probabilities.
#: Each code names, for array axes (i, j, k), the world direction in which the index grows
#: (nibabel ``aff2axcodes`` convention).
ORIENTATIONS: dict[str, float] = {
    "RAS": 0.30,
    "LPS": 0.20,
    "LAS": 0.15,
    "LPI": 0.08,
    "RPS": 0.07,
    "ASR": 0.07,
    "SLP": 0.07,
    "PIL": 0.06,
}

_AXIS_CODES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}

#: default (random) spacings are enlarged if a volume would exceed this many voxels
_MAX_DEFAULT_VOXELS = 1.1e6


def _axcodes(affine: np.ndarray) -> str:
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    out = []
    for a in range(3):
        col = m[:, a]
        w = int(np.argmax(np.abs(col)))
        out.append("RAS"[w] if col[w] > 0 else "LPI"[w])
    return "".join(out)


def _parse_orientation(code: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if not isinstance(code, str) or len(code) != 3:
        raise ValueError(f"orientation must be a 3-letter axis code such as 'RAS', got {code!r}")
    try:
        pairs = [_AXIS_CODES[c] for c in code.upper()]
    except KeyError:
        raise ValueError(f"invalid orientation code {code!r}; use letters from R/L, A/P, S/I") from None
    axes = tuple(p[0] for p in pairs)
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r} must name each of the R/L, A/P, S/I axes once")
    return axes, tuple(p[1] for p in pairs)  # type: ignore[return-value]


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1.0 - c
    return np.array(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


class _Grid:
    """Voxel grid: anatomy coordinates p = M @ (i, j, k) + origin (mm, RAS-aligned)."""

    def __init__(self, shape, M, origin):
        self.shape = tuple(int(s) for s in shape)
        self.M = np.asarray(M, dtype=np.float64)
        self.origin = np.asarray(origin, dtype=np.float64)
        self.Minv = np.linalg.inv(self.M)
        self.full = tuple(slice(0, s) for s in self.shape)

    def box(self, lo, hi, margin: int = 1):
        """Index slices covering the anatomy-space box [lo, hi] (None if outside the grid)."""
        corners = np.array(list(itertools.product(*zip(lo, hi))), dtype=np.float64)
        ijk = (corners - self.origin) @ self.Minv.T
        i0 = np.floor(ijk.min(0)).astype(int) - margin
        i1 = np.ceil(ijk.max(0)).astype(int) + margin + 1
        i0 = np.clip(i0, 0, self.shape)
        i1 = np.clip(i1, 0, self.shape)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))

    def axes_mm(self, sl):
        """1-D anatomy coordinates along x, y, z of an axis-aligned (diagonal M) grid block."""
        return [np.arange(s.start, s.stop, dtype=np.float64) * self.M[w, w] + self.origin[w] for w, s in enumerate(sl)]

    def coords(self, sl):
        """Broadcastable float32 anatomy coordinates (X, Y, Z) of the voxels of a block."""
        idx = [np.arange(s.start, s.stop, dtype=np.float64) for s in sl]
        out = []
        for w in range(3):
            acc = None
            for a in range(3):
                m = self.M[w, a]
                if abs(m) > 1e-9:
                    shp = [1, 1, 1]
                    shp[a] = -1
                    term = (m * idx[a]).reshape(shp)
                    acc = term if acc is None else acc + term
            out.append((acc + self.origin[w]).astype(np.float32))
        return out


# --------------------------------------------------------------------------- random geometry


@dataclass
class GeometryDraw:
    """The geometry drawn for every phantom, whether the arguments override it or not, so
    that the random streams never depend on the arguments."""

    s_xy: float  # default in-plane spacing (mm)
    s_z: float  # default cranio-caudal spacing (mm)
    ext: np.ndarray  # default field of view along world x, y, z (mm)
    code: str  # default storage orientation (a key of ORIENTATIONS)
    oblique: bool  # default obliquity
    rot_axis: np.ndarray  # axis of the oblique rotation (not normalised)
    rot_angle: float  # angle of the oblique rotation (rad)
    fov_x: float  # x of the field-of-view centre
    fov_y: float  # y of the field-of-view centre
    z_top: float  # top of the field of view, above the right diaphragm dome
    offset: np.ndarray  # world position of the anatomy origin (where the table puts the patient)


def _sample_geometry(g: np.random.Generator) -> GeometryDraw:
    s_xy, s_z = float(g.uniform(2.5, 4.0)), float(g.uniform(2.5, 5.0))
    ext = np.array([g.uniform(330.0, 380.0), g.uniform(280.0, 320.0), g.uniform(200.0, 350.0)])
    codes = list(ORIENTATIONS)
    probs = np.array([ORIENTATIONS[c] for c in codes])
    code = codes[int(g.choice(len(codes), p=probs / probs.sum()))]
    obl = bool(g.random() < 0.3)
    rot_axis = g.normal(size=3)
    rot_angle = math.radians(float(g.uniform(4.0, 15.0)))
    fov_x, fov_y, z_top = float(g.uniform(-15.0, 15.0)), float(g.uniform(-25.0, 5.0)), float(g.uniform(30.0, 90.0))
    T = np.array([g.uniform(-20.0, 20.0), g.uniform(-50.0, 200.0), g.uniform(-400.0, 600.0)])
    return GeometryDraw(s_xy=s_xy, s_z=s_z, ext=ext, code=code, oblique=obl, rot_axis=rot_axis, rot_angle=rot_angle,
                        fov_x=fov_x, fov_y=fov_y, z_top=z_top, offset=T)


# --------------------------------------------------------------------------- storage grid


@dataclass
class StorageGrid:
    """The voxel grid of the returned arrays, in anatomy coordinates."""

    shape: np.ndarray  # int64 array shape along (i, j, k)
    spacing: np.ndarray  # voxel size (mm) along (i, j, k)
    axes: tuple[int, int, int]  # world axis (0 = x, 1 = y, 2 = z) along which each array axis runs
    signs: tuple[float, float, float]  # +1 / -1: whether the index grows along that world axis or against it
    oblique: bool
    M: np.ndarray  # 3x3: voxel index (i, j, k) -> anatomy mm, before adding origin
    origin: np.ndarray  # anatomy coordinates of voxel (0, 0, 0)
    centre: np.ndarray  # anatomy coordinates of the field-of-view centre

    @property
    def ras_spacing(self) -> np.ndarray:
        """The voxel size along world x, y, z (the spacing of the render grid)."""
        return np.array([self.spacing[self.axes.index(w)] for w in range(3)])


def _storage_grid(draw: GeometryDraw, z_low: float, shape, spacing, oblique, orientation) -> StorageGrid:
    """Resolve the arguments of ``make_phantom`` (None: use the drawn value) into a grid.

    ``z_low`` is the lowest anatomy z that a default field of view must contain.
    """
    code = draw.code if orientation is None else orientation
    axes, signs = _parse_orientation(code)
    obl = draw.oblique if oblique is None else bool(oblique)
    ext, z_top = _default_field_of_view(draw, z_low, obl, free=shape is None or spacing is None)
    sp, shp = _spacing_and_shape(draw, ext, axes, shape, spacing)

    D = np.zeros((3, 3))
    for a in range(3):
        D[axes[a], a] = signs[a] * sp[a]
    R = _rotation(draw.rot_axis, draw.rot_angle) if obl else np.eye(3)
    M = R @ D
    a_z = axes.index(2)
    ext_z = float(shp[a_z] * sp[a_z])
    centre = np.array([draw.fov_x, draw.fov_y, z_top - 0.5 * ext_z])
    origin = centre - M @ ((shp - 1) / 2.0)  # anatomy coords of voxel (0, 0, 0)
    return StorageGrid(shape=shp, spacing=sp, axes=axes, signs=signs, oblique=obl, M=M, origin=origin, centre=centre)


def _default_field_of_view(draw: GeometryDraw, z_low: float, obl: bool, free: bool):
    """(extent along world x, y, z, top z) of the field of view.  When the arguments leave
    the field of view free (shape or spacing not given) it follows the anatomy."""
    ext, z_top = draw.ext.copy(), draw.z_top
    if free:
        if obl:  # a little larger, so that the tilted box does not cut the organs
            ext += 25.0
        z_top = min(z_top, ext[2] + z_low)  # keep kidneys / liver tip inside
        if z_top < 25.0:  # ... and some lung: extend the field of view downwards
            ext[2] += 25.0 - z_top
            z_top = 25.0
    return ext, z_top


def _spacing_and_shape(draw: GeometryDraw, ext: np.ndarray, axes, shape, spacing):
    """(spacing, int64 shape) along the array axes: given values are checked and kept, a
    missing one is chosen so that the grid covers the field of view ``ext``."""
    s_world = np.array([draw.s_xy, draw.s_xy, draw.s_z])
    n_est = float(np.prod(ext / s_world))
    if n_est > _MAX_DEFAULT_VOXELS:  # keep default volumes moderate (speed)
        s_world *= (n_est / _MAX_DEFAULT_VOXELS) ** (1.0 / 3.0)
    if spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64).reshape(3)
        if np.any(sp <= 0) or not np.all(np.isfinite(sp)):
            raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    if shape is not None:
        shp = np.asarray(shape, dtype=np.int64).reshape(3)
        if np.any(shp < 2):
            raise ValueError(f"shape must be three integers >= 2, got {shape!r}")
        if spacing is None:
            sp = np.array([ext[axes[a]] / shp[a] for a in range(3)])
    else:
        if spacing is None:
            sp = np.array([s_world[axes[a]] for a in range(3)])
        shp = np.array([max(8, int(round(ext[axes[a]] / sp[a]))) for a in range(3)], dtype=np.int64)
    return sp, shp


def _render_grid(storage: StorageGrid) -> _Grid:
    """RAS-aligned grid with the storage spacing that covers the storage grid: the same
    voxels (up to axis order and direction) if it is not oblique, else a box around it."""
    sp_r = storage.ras_spacing
    shp = storage.shape
    if not storage.oblique:
        shape_r = np.array([shp[storage.axes.index(w)] for w in range(3)])
        lo = storage.centre - sp_r * (shape_r - 1) / 2.0
    else:
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in shp])), dtype=np.float64)
        pts = corners @ storage.M.T + storage.origin
        lo = pts.min(0) - 1.5 * sp_r
        hi = pts.max(0) + 1.5 * sp_r
        shape_r = np.ceil((hi - lo) / sp_r).astype(np.int64) + 1
    return _Grid(tuple(int(v) for v in shape_r), np.diag(sp_r), lo)


def _axis_distance2(storage: StorageGrid) -> np.ndarray:
    """Squared world-xy distance (float32, broadcastable to the storage shape) of each
    storage voxel from the scanner axis, the z line through the field-of-view centre."""
    idx = [np.arange(n, dtype=np.float64) for n in storage.shape]
    M, origin, centre = storage.M, storage.origin, storage.centre
    d2 = 0.0
    for w in (0, 1):
        acc = origin[w] - centre[w]
        for a in range(3):
            if abs(M[w, a]) > 1e-9:
                b = [1, 1, 1]
                b[a] = -1
                acc = acc + (M[w, a] * idx[a]).reshape(b)
        d2 = d2 + np.asarray(acc, dtype=np.float32) ** 2
    return d2


def _affine(storage: StorageGrid, offset: np.ndarray) -> np.ndarray:
    """Voxel index -> world mm (anatomy coordinates moved by the table offset)."""
    affine = np.eye(4)
    affine[:3, :3] = storage.M
    affine[:3, 3] = storage.origin + offset
    return affine
