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

Only numpy and scipy are used (no torch).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Iterable

import numpy as np
from scipy import ndimage

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


# --------------------------------------------------------------------------- helpers


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


def _wave(terms, z):
    """Sum of a few sinusoids of z: terms = [(amplitude, wavelength, phase), ...]."""
    out = 0.0
    for amp, lam, ph in terms:
        out = out + amp * np.sin(z * np.float32(2.0 * math.pi / lam) + np.float32(ph))
    return out


def _waves(rng, n, amp, lam_lo, lam_hi):
    return [(float(rng.uniform(-amp, amp)), float(rng.uniform(lam_lo, lam_hi)), float(rng.uniform(0, 2 * math.pi))) for _ in range(n)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _take(arr, mask):
    """Values of a (possibly broadcast) array at the True voxels of mask."""
    return np.broadcast_to(arr, mask.shape)[mask]


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


class _NoiseBank:
    """Smooth random fields on fixed coarse anatomy-space grids, sampled by trilinear
    interpolation at arbitrary anatomy coordinates (periodic, so offsets are harmless).
    They do not depend on the voxel grid, so the anatomy is the same for any geometry."""

    LO = np.array([-200.0, -180.0, -400.0], dtype=np.float32)
    HI = np.array([200.0, 180.0, 160.0], dtype=np.float32)

    def __init__(self, rng, specs):
        self.fields = []
        for sigma_mm, step in specs:
            shape = tuple(int(v) for v in np.ceil((self.HI - self.LO) / step).astype(int))
            f = rng.standard_normal(shape, dtype=np.float32)
            f = ndimage.gaussian_filter(f, sigma_mm / step, mode="wrap")
            f -= f.mean()
            f /= f.std()
            self.fields.append((f, np.float32(step)))

    def block(self, idx, axes_mm, offset=(0.0, 0.0, 0.0)):
        """Field on the axis-aligned grid with 1-D coordinates ``axes_mm`` (x, y, z), by
        separable linear interpolation (much cheaper than point-wise interpolation)."""
        f, step = self.fields[idx]
        idxs, cols = [], []
        for w in range(3):
            c = (np.asarray(axes_mm[w], dtype=np.float64) - self.LO[w] + offset[w]) / step
            n = f.shape[w]
            i0 = np.floor(c).astype(np.int64)
            fr = (c - i0).astype(np.float32)
            a0, a1 = i0 % n, (i0 + 1) % n
            col = np.unique(np.concatenate([a0, a1]))
            cols.append(col)
            idxs.append((np.searchsorted(col, a0), np.searchsorted(col, a1), fr))
        # gather the needed coarse sub-block first, then expand one axis at a time
        t = f[np.ix_(*cols)]
        for w in range(3):
            a0, a1, fr = idxs[w]
            shp = [1, 1, 1]
            shp[w] = -1
            fr = fr.reshape(shp)
            t0 = np.take(t, a0, axis=w)
            t1 = np.take(t, a1, axis=w)
            t0 *= 1.0 - fr
            t1 *= fr
            t0 += t1
            t = t0
        return t


#: default (random) spacings are enlarged if a volume would exceed this many voxels
_MAX_DEFAULT_VOXELS = 1.1e6

# field indices of the noise bank
_F_BOWEL, _F_GAS, _F_VES_A, _F_VES_B, _F_HET, _F_DEF = range(6)
# (smoothing sigma in mm, grid step in mm)
_BANK_SPECS = ((9.0, 6.0), (8.0, 8.0), (8.0, 8.0), (8.0, 8.0), (22.0, 20.0), (26.0, 20.0))


# --------------------------------------------------------------------------- anatomy


def _sample_anatomy(rng) -> SimpleNamespace:
    A = SimpleNamespace()
    u = rng.uniform
    # ---- body habitus
    A.adipose = float(u(0.0, 1.0))
    A.a0 = float(u(132.0, 160.0) + 35.0 * A.adipose)  # lateral semi-axis
    A.b0 = float(A.a0 * u(0.64, 0.80))  # antero-posterior semi-axis
    A.p_body = float(u(2.0, 2.6))  # superellipse exponent (boxy abdomen)
    A.a_w = _waves(rng, 2, 0.035, 250.0, 700.0)
    A.b_w = _waves(rng, 2, 0.025, 250.0, 700.0)
    A.cy_w = _waves(rng, 2, 3.0, 300.0, 800.0)
    A.pelvis_widen = float(u(0.03, 0.10))
    ad = A.adipose
    A.f_lat = float(5.0 + 25.0 * ad * u(0.7, 1.3))
    A.f_ant = float(5.0 + 28.0 * ad * u(0.7, 1.3))
    A.f_post = float(5.0 + 22.0 * ad * u(0.7, 1.3))
    A.fat_w = _waves(rng, 2, 0.15, 150.0, 400.0)
    A.mus = float(u(8.0, 14.0))
    A.mus_post = float(u(4.0, 12.0))
    A.y_flat = float(-A.b0 * u(0.86, 0.93))  # flattened back (lying on the table)
    A.table = bool(rng.random() < 0.8)
    A.table_th = float(u(30.0, 55.0))
    A.table_curv = float(u(0.0, 4e-4))
    A.table_shell = float(u(150.0, 350.0))

    # ---- reference interior (inside the muscle wall) at mid-abdomen
    y_post_in = A.y_flat + A.f_post + A.mus + A.mus_post
    y_ant_in = A.b0 - A.f_ant - A.mus
    A.ai = A.a0 - A.f_lat - A.mus
    A.bi = 0.5 * (y_ant_in - y_post_in)
    A.cyi = 0.5 * (y_ant_in + y_post_in)

    # ---- spine
    A.ys0 = float(A.y_flat + A.f_post + u(64.0, 80.0))
    A.lordosis = float(u(0.0, 22.0))
    A.kyphosis = float(u(0.0, 15.0))
    A.scol = _waves(rng, 1, 4.0, 300.0, 700.0)
    A.rbx0 = float(u(17.0, 20.0))
    A.rby0 = float(u(13.0, 15.5))
    A.rcx = float(u(9.0, 11.5))
    A.rcy = float(u(7.0, 9.0))
    A.l_spinous = float(u(28.0, 40.0))
    A.l_tp_lumbar = float(u(22.0, 32.0))
    A.l_tp_thor = float(u(12.0, 18.0))
    lo, body_lo, body_h, scale = [], [], [], []
    z = -700.0
    while z < 400.0:
        lumbar = float(np.clip(-z / 200.0, 0.0, 1.0))
        dh = u(5.0, 7.5) + 3.0 * lumbar
        bh = u(21.0, 25.0) + 5.0 * lumbar
        lo.append(z)
        body_lo.append(z + dh)
        body_h.append(bh)
        scale.append(u(0.95, 1.05))
        z += dh + bh
    A.seg_lo = np.array(lo, dtype=np.float32)
    A.body_lo = np.array(body_lo, dtype=np.float32)
    A.body_h = np.array(body_h, dtype=np.float32)
    A.vscale = np.array(scale, dtype=np.float32)

    # ---- diaphragm (right dome top at z = 0)
    A.zL = float(-u(8.0, 25.0))
    A.dome_x = float(A.ai * u(0.40, 0.50))
    A.dome_y = float(A.cyi + A.bi * u(-0.1, 0.15))
    A.k_lat = float(u(60.0, 90.0))
    A.k_post = float(u(50.0, 85.0))
    A.k_ant = float(u(30.0, 50.0))
    A.dia_wave = (float(u(1.0, 4.0)), float(u(30.0, 60.0)), float(u(30.0, 60.0)), float(u(0, 6.3)), float(u(0, 6.3)))

    # ---- organs: centres (x, y, z), semi-axes, rotation
    ai, bi, cyi, ys = A.ai, A.bi, A.cyi, A.ys0
    A.liver_R_r = (u(70.0, 86.0), u(68.0, 88.0), u(88.0, 105.0))
    A.liver_R_c = [ai - A.liver_R_r[0] * u(0.70, 0.85), cyi + bi * u(0.10, 0.25), 0.0]
    A.liver_R_c[2] = float(_z_dia(A, A.liver_R_c[0], A.liver_R_c[1]) - A.liver_R_r[2] * u(0.62, 0.78))
    A.liver_R_c = tuple(A.liver_R_c)
    A.liver_L_r = (u(55.0, 70.0), u(30.0, 40.0), u(40.0, 55.0))
    A.liver_L_c = (-u(5.0, 25.0), cyi + bi - A.liver_L_r[1] * u(1.0, 1.3), -u(30.0, 48.0))
    A.liver_def = float(u(0.06, 0.12))

    A.spleen_r = (u(25.0, 30.0), u(50.0, 60.0), u(46.0, 56.0))
    A.spleen_rot = float(math.radians(u(15.0, 35.0)))
    sy = max(ys + u(-12.0, 10.0), cyi - 0.55 * bi)  # not where the interior narrows
    yn = min(abs(sy - cyi) / bi, 0.9)
    half_w = ai * (1.0 - yn ** A.p_body) ** (1.0 / A.p_body)  # interior half-width at that y
    ext_x = math.hypot(A.spleen_r[0] * math.cos(A.spleen_rot), A.spleen_r[1] * math.sin(A.spleen_rot))
    A.spleen_c = [-(half_w - ext_x * u(0.85, 1.0)), sy, 0.0]
    # the spleen's top lies just under the (posterior, lateral, hence low) left diaphragm
    A.spleen_c[2] = float(_z_dia(A, A.spleen_c[0], A.spleen_c[1]) - A.spleen_r[2] * u(0.55, 0.75))
    A.spleen_c = tuple(A.spleen_c)
    A.spleen_def = float(u(0.05, 0.10))

    zr = -u(106.0, 122.0)
    zl = zr + u(0.0, 12.0)
    A.kidneys = []
    for side, zc in ((1.0, zr), (-1.0, zl)):  # +x = patient right (RAS)
        kr = (u(24.0, 28.0), u(27.0, 31.0), u(48.0, 56.0))  # (lateral, AP, SI) before rotation
        ky = max(ys + u(-8.0, 6.0), y_post_in + kr[1] + 6.0)  # inside the posterior wall
        if side < 0:  # the left kidney's upper pole lies below / medial to the spleen
            zc = min(zc, A.spleen_c[2] - 0.45 * (A.spleen_r[2] + kr[2]))
        A.kidneys.append(
            SimpleNamespace(
                side=side,
                c=(side * (A.rbx0 + u(38.0, 48.0)), ky, zc),
                r=kr,
                tilt=float(math.radians(u(8.0, 18.0))),
                hilum=float(math.radians(u(20.0, 45.0))),
                fat=float(u(2.0, 4.5) + 5.0 * A.adipose),
                deform=float(u(0.03, 0.07)),
                off=tuple(float(v) for v in u(-200, 200, 3)),
            )
        )

    # lowest point that the default field of view must contain (kidney lower poles, liver tip)
    A.z_low = float(min([k.c[2] - k.r[2] for k in A.kidneys] + [A.liver_R_c[2] - A.liver_R_r[2]]) - 15.0)

    A.stomach = bool(rng.random() < 0.85)
    A.stomach_c = (-ai * u(0.25, 0.45), cyi + bi * u(0.10, 0.35), A.zL - u(40.0, 70.0))
    A.stomach_r = (u(30.0, 45.0), u(25.0, 38.0), u(40.0, 60.0))
    A.stomach_gas = float(u(0.1, 0.7))
    A.gallbladder = bool(rng.random() < 0.8)
    A.gb_c = (ai * u(0.20, 0.35), cyi + bi * u(0.25, 0.45), A.liver_R_c[2] - A.liver_R_r[2] * u(0.35, 0.55))
    A.gb_r = (u(11.0, 16.0), u(11.0, 16.0), u(25.0, 38.0))

    A.heart_c = (-u(10.0, 30.0), cyi + bi * u(0.15, 0.30), u(35.0, 55.0))
    A.heart_r = (u(55.0, 68.0), u(42.0, 52.0), u(48.0, 60.0))
    A.heart_rot = float(math.radians(u(20.0, 40.0)))

    A.aorta_r = float(u(9.0, 13.0))
    A.aorta_x = float(-u(10.0, 20.0))
    A.ivc_x = float(u(18.0, 28.0))
    A.ivc_r = (float(u(11.0, 15.0)), float(u(7.0, 10.0)))
    A.z_crest = float(-u(225.0, 275.0))
    A.z_bif = A.z_crest + float(u(5.0, 25.0))

    A.para_x = float(u(22.0, 32.0))
    A.para_rx = float(u(22.0, 32.0))
    A.psoas_r = float(u(16.0, 26.0))

    A.rib_pitch = float(u(28.0, 36.0))
    A.rib_w = float(u(8.0, 11.0))
    A.rib_slope = float(u(0.20, 0.30))
    A.rib_off = float(u(0.0, A.rib_pitch))
    A.rib_min = float(-u(55.0, 75.0))

    # ---- bowel
    A.bowel_thr = float(u(-0.7, 0.0) + 0.5 * A.adipose)
    A.gas_thr = float(u(1.2, 2.0))
    A.oral = bool(rng.random() < 0.25)
    A.oral_thr = float(u(1.3, 2.0))

    # ---- HU (before the global shift)
    phase = str(rng.choice(["native", "portal_venous", "arterial"], p=[0.4, 0.45, 0.15]))
    A.phase = phase
    H = SimpleNamespace()
    H.fat = float(u(-110.0, -85.0))
    H.skin = float(u(10.0, 40.0))
    H.muscle = float(u(40.0, 55.0))
    H.bowel = float(u(15.0, 40.0))
    H.bowel_wall = H.bowel + float(u(0.0, 15.0))
    H.lung = float(u(-885.0, -820.0))
    H.lung_dep = float(u(0.0, 80.0))
    H.canc = float(u(120.0, 250.0))
    H.cort = float(u(500.0, 850.0))
    H.post = float(u(300.0, 550.0))
    H.disc = float(u(70.0, 110.0))
    H.csf = float(u(5.0, 25.0))
    H.gb = float(u(0.0, 20.0))
    H.stomach = float(u(0.0, 30.0))
    H.rib = float(u(250.0, 450.0))
    H.cartilage = float(u(90.0, 150.0))
    H.oral = float(u(180.0, 350.0))
    H.sinus = float(u(-70.0, -20.0))
    H.table_core = float(u(-950.0, -800.0))
    if phase == "native":
        H.liver = u(48.0, 68.0)
        H.spleen = u(38.0, 52.0)
        H.kcortex = u(28.0, 42.0)
        H.kmed = H.kcortex - u(0.0, 6.0)
        H.blood = u(35.0, 50.0)
        H.ivc = H.blood
        H.liver_ves = H.liver - u(10.0, 20.0)
        H.myo = H.muscle
    elif phase == "portal_venous":
        H.liver = u(95.0, 125.0)
        H.spleen = u(100.0, 130.0)
        H.kcortex = u(150.0, 200.0)
        H.kmed = H.kcortex - u(0.0, 25.0)
        H.blood = u(140.0, 180.0)
        H.ivc = H.blood - u(0.0, 20.0)
        H.liver_ves = H.liver + u(30.0, 60.0)
        H.myo = H.muscle + u(40.0, 70.0)
        H.muscle += 5.0
        H.bowel += 15.0
        H.bowel_wall += float(u(25.0, 50.0))
    else:  # arterial
        H.liver = u(65.0, 85.0)
        H.spleen = u(90.0, 140.0)
        H.kcortex = u(180.0, 250.0)
        H.kmed = u(70.0, 110.0)
        H.blood = u(250.0, 350.0)
        H.ivc = u(60.0, 100.0)
        H.liver_ves = H.liver + u(-5.0, 20.0)
        H.myo = H.muscle + u(50.0, 90.0)
        H.bowel += 10.0
        H.bowel_wall += float(u(20.0, 40.0))
    H.het = float(u(2.0, 6.0))
    A.H = H
    A.gain = float(u(0.96, 1.04))
    A.shift = float(u(-12.0, 12.0))
    A.noise_white = float(u(2.0, 8.0))
    A.noise_corr = float(u(4.0, 12.0))
    A.noise_sigma = float(u(0.7, 1.1))
    A.pv_sigma = float(u(0.35, 0.60))
    A.offsets = [tuple(float(v) for v in u(-250, 250, 3)) for _ in range(8)]
    # scanner reconstruction circle: outside it the image is padded with -1024
    A.recon_circle = bool(rng.random() < 0.5)
    A.recon_radius = float(u(0.50, 0.58))  # fraction of the larger in-plane FOV side
    return A


def _z_dia(A, x, y):
    """Height (z, mm) of the diaphragm surface above (x, y): two domes (right one higher),
    dropping laterally and much more posteriorly (costophrenic recesses)."""
    yd = (y - A.dome_y) / A.bi
    yterm = A.k_post * np.minimum(yd, 0.0) ** 2 + A.k_ant * np.maximum(yd, 0.0) ** 2
    qr = A.k_lat * ((x - A.dome_x) / A.ai) ** 2
    ql = A.k_lat * ((x + A.dome_x) / A.ai) ** 2
    amp, lx, ly, px, py = A.dia_wave
    pert = amp * np.sin(x / lx + px) * np.cos(y / ly + py)
    return np.maximum(0.0 - qr, A.zL - ql) - yterm + pert


# --------------------------------------------------------------------------- renderer


class _Renderer:
    def __init__(self, A, grid: _Grid, bank: _NoiseBank):
        self.A, self.g, self.bank = A, grid, bank
        self.img = np.full(grid.shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(grid.shape, dtype=np.uint8)

    # ---------------------------------------------------------------- utilities
    def put(self, sl, mask, hu=None, label=None):
        if hu is not None:
            sub = self.img[sl]
            if np.ndim(hu) == 0 or np.shape(hu) == (int(mask.sum()),):
                sub[mask] = hu
            else:
                sub[mask] = _take(hu, mask)
        if label is not None:
            self.lab[sl][mask] = label

    def spine_xy(self, z):
        A = self.A
        ys = A.ys0 + A.lordosis * np.exp(-(((z + 190.0) / 130.0) ** 2)) - A.kyphosis * np.clip(z / 200.0, 0.0, 1.5)
        xs = _wave(A.scol, z)
        return xs, ys

    def z_dia(self, x, y):
        return _z_dia(self.A, x, y)

    def field(self, idx, sl, offset=(0.0, 0.0, 0.0)):
        """Smooth random field ``idx`` (shifted by ``offset`` mm) evaluated on the block ``sl``."""
        return self.bank.block(idx, self.g.axes_mm(sl), offset)

    def het(self, mask, sl, k, amp):
        return np.float32(amp) * self.field(_F_HET, sl, self.A.offsets[k % len(self.A.offsets)])[mask]

    def blob(self, sl, X, Y, Z, c, R, r, deform, off):
        """Deformed ellipsoid: returns (mask, normalised radius on the mask)."""
        dx, dy, dz = X - np.float32(c[0]), Y - np.float32(c[1]), Z - np.float32(c[2])
        Rt = np.asarray(R, dtype=np.float32)
        u = (Rt[0, 0] * dx + Rt[1, 0] * dy + Rt[2, 0] * dz) / np.float32(r[0])
        v = (Rt[0, 1] * dx + Rt[1, 1] * dy + Rt[2, 1] * dz) / np.float32(r[1])
        w = (Rt[0, 2] * dx + Rt[1, 2] * dy + Rt[2, 2] * dz) / np.float32(r[2])
        q = np.sqrt(u * u + v * v + w * w)
        q += np.float32(deform) * self.field(_F_DEF, sl, off if off is not None else (0.0, 0.0, 0.0))
        mask = q < 1.0
        return mask, q[mask]

    def block(self, lo, hi):
        sl = self.g.box(lo, hi)
        if sl is None:
            return None, (None, None, None)
        return sl, self.g.coords(sl)

    # ---------------------------------------------------------------- stages
    def body(self):
        A, H, g = self.A, self.A.H, self.g
        X, Y, Z = g.coords(g.full)
        az = A.a0 * (1.0 + _wave(A.a_w, Z) + A.pelvis_widen * _sigmoid((-260.0 - Z) / 40.0))
        bz = A.b0 * (1.0 + _wave(A.b_w, Z))
        cyz = _wave(A.cy_w, Z)
        dy = Y - cyz
        xn = X / az
        yn = dy / bz
        p = np.float32(A.p_body)
        rho = np.abs(xn) ** p + np.abs(yn) ** p  # 3-D from here on
        np.power(rho, np.float32(1.0 / p), out=rho)
        np.maximum(rho, np.float32(1e-3), out=rho)
        inv = np.divide(np.float32(1.0), rho, out=rho)  # rho is not needed any more
        r = X * X + dy * dy
        np.sqrt(r, out=r)
        d = r * inv
        d -= r
        del r
        np.minimum(d, Y - np.float32(A.y_flat), out=d)
        ux = xn * inv  # unit-superellipse direction of each voxel
        uy = yn * inv
        del inv
        uyn = np.minimum(uy, np.float32(0.0))
        uyn *= uyn
        uyp = np.maximum(uy, np.float32(0.0))
        uyp *= uyp
        fat_t = ux * ux
        fat_t *= np.float32(A.f_lat)
        fat_t += np.float32(A.f_ant) * uyp
        fat_t += np.float32(A.f_post) * uyn
        fat_t *= 1.0 + _wave(A.fat_w, Z)
        wall_in = d - fat_t
        wall_in -= np.float32(A.mus)
        wall_in -= np.float32(A.mus_post) * uyn
        del uyn, uyp
        self.d, self.wall_in, self.ux, self.uy = d, wall_in, ux, uy

        zrel = (Z - self.z_dia(X, Y)).astype(np.float32, copy=False)
        self.zrel = np.broadcast_to(zrel, d.shape)

        img = self.img
        body = d > 0
        img[body] = H.skin
        img[d > 2.5] = H.fat
        img[(d > fat_t) & (wall_in <= 0)] = H.muscle
        inter = wall_in > 0
        thor = inter & (self.zrel > 0)
        abd = inter & ~thor
        img[thor] = H.fat + 10.0
        # abdominal content: bowel loops / mesenteric fat / gas / oral contrast
        F = self.field(_F_BOWEL, g.full)[abd]
        G = self.field(_F_GAS, g.full)[abd]
        va = self.field(_F_VES_A, g.full)[abd]
        vb = self.field(_F_VES_B, g.full)[abd]
        thr = np.float32(A.bowel_thr)
        frac = np.clip((F - thr) * 4.0 + 0.5, 0.0, 1.0)
        # bowel loops: enhancing wall near the loop boundary, slightly lower lumen content
        wall = np.exp(-(((F - thr - 0.3) / 0.15) ** 2))
        lumen = np.float32(H.bowel - 10.0) + np.float32(H.bowel_wall - H.bowel + 10.0) * wall
        hu = H.fat + (lumen - H.fat) * frac
        # small mesenteric vessels in the fat
        ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.22, 0.0, 1.0) * (1.0 - frac)
        hu += (np.float32(H.blood * 0.7) - hu) * ves
        gas = np.clip((G - np.float32(A.gas_thr)) * 5.0, 0.0, 1.0) * np.clip((F - A.bowel_thr) * 3.0, 0.0, 1.0)
        hu = hu + (-950.0 - hu) * gas
        if A.oral:
            oral = np.clip((-G - np.float32(A.oral_thr)) * 5.0, 0.0, 1.0) * frac
            hu = hu + (H.oral - hu) * oral
        img[abd] = hu
        # diaphragm muscle band
        img[inter & (np.abs(self.zrel) < 3.0)] = H.muscle
        # table
        if A.table:
            yt = np.float32(A.y_flat - 1.5) - np.float32(A.table_curv) * X * X
            tb = (Y < yt) & (Y > yt - np.float32(A.table_th))
            tb = np.broadcast_to(tb, d.shape) & ~body
            shell = tb & ((Y > yt - 3.0) | (Y < yt - np.float32(A.table_th) + 3.0))
            img[tb] = H.table_core
            img[shell] = A.table_shell

    def muscles(self):
        A, H = self.A, self.A.H
        # paraspinal (erector spinae) muscles
        ylo = A.y_flat + A.f_post - 5.0
        sl, (X, Y, Z) = self.block((-A.para_x - A.para_rx - 5, ylo, -1e4), (A.para_x + A.para_rx + 5, A.ys0 + 40, 1e4))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            ytop = ys - A.rby0 - 4.0
            ybot = np.float32(A.y_flat + A.f_post + 2.0)
            cy = 0.5 * (ytop + ybot)
            ry = 0.5 * (ytop - ybot) + 4.0
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            for s in (-1.0, 1.0):
                q = ((X - xs - s * A.para_x) / A.para_rx) ** 2 + ((Y - cy) / ry) ** 2
                m |= q < 1.0
            m &= self.d[sl] > 3.0
            self.put(sl, m, H.muscle + self.het(m, sl, 0, 8.0))
        # psoas muscles (grow caudally from the T12 level)
        sl, (X, Y, Z) = self.block((-120, A.ys0 - 60, -1e4), (120, A.ys0 + 60, -40))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            rr = 4.0 + A.psoas_r * np.clip((-55.0 - Z) / 160.0, 0.0, 1.0)
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            for s in (-1.0, 1.0):
                cx = xs + s * (A.rbx0 + rr * 0.8 + 3.0)
                q = ((X - cx) / rr) ** 2 + ((Y - ys - 2.0) / (rr * 0.9)) ** 2
                m |= q < 1.0
            m &= (self.wall_in[sl] > -4.0) & (Z < -50.0)
            self.put(sl, m, H.muscle + self.het(m, sl, 1, 4.0))

    def lungs(self):
        A, H = self.A, self.A.H
        sl, (X, Y, Z) = self.block((-A.a0 - 20, -A.b0 - 20, -140), (A.a0 + 20, A.b0 + 20, 1e4))
        if sl is None:
            return
        xs, ys = self.spine_xy(Z)
        m = (self.wall_in[sl] > 0) & (self.zrel[sl] > 2.5)
        # posterior mediastinum (spine, aorta, oesophagus) and the paravertebral muscles
        col = ((X - xs + 6.0) / (A.rbx0 + 14.0)) ** 2 + ((Y - ys - 8.0) / (A.rby0 + 26.0)) ** 2 < 1.0
        col |= ((X - xs) / (A.rbx0 + 16.0)) ** 2 + ((Y - ys + 35.0) / 45.0) ** 2 < 1.0
        m &= ~col
        if not m.any():
            return
        y = _take(Y, m)
        yy = _take(ys, m)
        hu = np.float32(H.lung) + H.lung_dep * np.clip((yy + 10.0 - y) / 60.0, 0.0, 1.0)
        hu += 12.0 * self.field(_F_HET, sl, A.offsets[2])[m]
        va = self.field(_F_VES_A, sl, A.offsets[3])[m]
        vb = self.field(_F_VES_B, sl, A.offsets[3])[m]
        ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.45, 0.0, 1.0)
        hu += (H.blood * 0.5 + 10.0 - hu) * ves
        self.put(sl, m, hu, 5)

    def heart_stomach(self):
        A, H = self.A, self.A.H
        # heart with pericardial fat, sitting on the diaphragm
        c, r = A.heart_c, A.heart_r
        R = _rotation((0, 0, 1), A.heart_rot)
        rm = max(r) + 8
        sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
        if sl is not None:
            mfat, _ = self.blob(sl, X, Y, Z, c, R, np.add(r, 5.0), 0.05, A.offsets[4])
            mfat &= (self.zrel[sl] > 2.5) & (self.wall_in[sl] > 0)
            self.put(sl, mfat, H.fat + 15.0, 0)
            mh, q = self.blob(sl, X, Y, Z, c, R, r, 0.05, A.offsets[4])
            keep = (self.zrel[sl] > 4.0)[mh]
            mh2 = mh.copy()
            mh2[mh] = keep
            hu = np.where(q > 0.8, H.myo, H.blood - 20.0 * (A.phase != "native"))[keep]
            self.put(sl, mh2, hu.astype(np.float32), 0)
        # stomach: wall, fluid/food content and an anterior gas cap
        if A.stomach:
            c, r = A.stomach_c, A.stomach_r
            rm = max(r) + 5
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is not None:
                m, q = self.blob(sl, X, Y, Z, c, np.eye(3), r, 0.12, A.offsets[5])
                keep = ((self.zrel[sl] < -4.0) & (self.wall_in[sl] > 1.0))[m]
                y = _take(Y, m)
                hu = np.where(q > 0.85, H.muscle + 10.0, H.stomach).astype(np.float32)
                gas = (y > c[1] + r[1] * (1.0 - 2.0 * A.stomach_gas)) & (q < 0.85)
                hu[gas] = -950.0
                mm = m.copy()
                mm[m] = keep
                self.put(sl, mm, hu[keep], 0)

    def liver_spleen(self):
        A, H = self.A, self.A.H
        # liver = union of a right and a left lobe, clipped by the diaphragm and body wall
        cR, rR, cL, rL = A.liver_R_c, A.liver_R_r, A.liver_L_c, A.liver_L_r
        lo = np.minimum(np.subtract(cR, rR), np.subtract(cL, rL)) - 15.0
        hi = np.maximum(np.add(cR, rR), np.add(cL, rL)) + 15.0
        sl, (X, Y, Z) = self.block(lo, hi)
        if sl is not None:
            mR, _ = self.blob(sl, X, Y, Z, cR, np.eye(3), rR, A.liver_def, A.offsets[6])
            mL, _ = self.blob(sl, X, Y, Z, cL, np.eye(3), rL, A.liver_def, A.offsets[7])
            xs, ys = self.spine_xy(Z)
            prevert = (np.abs(X - xs) < A.rbx0 + 12.0) & (Y < ys + A.rby0 + 12.0)
            m = (mR | mL) & (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 1.0) & ~prevert
            if m.any():
                hu = np.float32(H.liver) + self.het(m, sl, 0, H.het)
                va = self.field(_F_VES_A, sl)[m]
                vb = self.field(_F_VES_B, sl)[m]
                ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.30, 0.0, 1.0)
                hu += (H.liver_ves - hu) * ves
                self.put(sl, m, hu, 1)
        # spleen: rotated ellipsoid with a concave (medial) visceral surface
        c, r = A.spleen_c, A.spleen_r
        th = A.spleen_rot
        # columns = local axes (thin, long, SI); anterior end of the long axis tilts medially (+x)
        R = np.array([[math.cos(th), math.sin(th), 0.0], [-math.sin(th), math.cos(th), 0.0], [0.0, 0.0, 1.0]])
        rm = max(r) + 10
        sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
        if sl is not None:
            m, _ = self.blob(sl, X, Y, Z, c, R, r, A.spleen_def, A.offsets[1])
            cdir = np.array([1.0, 0.45, 0.0]) / math.hypot(1.0, 0.45)
            cc = np.add(c, cdir * r[0] * 1.5)  # concavity centre, antero-medial of the spleen (hilum)
            q2 = ((X - cc[0]) / (r[0] * 0.8)) ** 2 + ((Y - cc[1]) / (r[1] * 0.6)) ** 2 + ((Z - cc[2]) / (r[2] * 0.7)) ** 2
            m &= (q2 > 1.0) & (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 1.0)
            if m.any():
                self.put(sl, m, np.float32(H.spleen) + self.het(m, sl, 3, H.het), 2)

    def kidneys(self):
        A, H = self.A, self.A.H
        for k in A.kidneys:
            c, r = k.c, k.r
            medial = np.array([-k.side, 0.0, 0.0])
            e_long = np.array([medial[0] * math.sin(k.tilt), 0.0, math.cos(k.tilt)])  # upper pole medial
            e_h = np.array([medial[0] * math.cos(k.hilum), math.sin(k.hilum), 0.0])  # hilum: antero-medial
            e_h -= e_h.dot(e_long) * e_long
            e_h /= np.linalg.norm(e_h)
            e_t = np.cross(e_long, e_h)
            # local axes (hilum direction, third, long) with radii (r_lat, r_ap, r_si)
            R = np.stack([e_h, e_t, e_long], axis=1)
            rl = (r[0], r[1], r[2])
            rm = max(r) + k.fat + 10
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is None:
                continue
            clip = (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 0.0)
            mf, _ = self.blob(sl, X, Y, Z, c, R, np.add(rl, k.fat), 0.05, k.off)
            mf &= clip & (self.lab[sl] == 0)  # perirenal fat does not carve liver / spleen
            self.put(sl, mf, H.fat + self.het(mf, sl, 4, 5.0), 0)
            m, q = self.blob(sl, X, Y, Z, c, R, rl, k.deform, k.off)
            keep = clip[m]
            hu = np.where(q > 0.72, H.kcortex, H.kmed).astype(np.float32)
            # renal sinus (fat / urine) opening towards the hilum
            dx, dy, dz = _take(X, m) - c[0], _take(Y, m) - c[1], _take(Z, m) - c[2]
            lh = (dx * e_h[0] + dy * e_h[1] + dz * e_h[2]) / rl[0]
            lt = (dx * e_t[0] + dy * e_t[1] + dz * e_t[2]) / rl[1]
            ll = (dx * e_long[0] + dy * e_long[1] + dz * e_long[2]) / rl[2]
            sinus = ((lh - 0.55) / 0.5) ** 2 + (lt / 0.35) ** 2 + (ll / 0.5) ** 2 < 1.0
            hu[sinus] = H.sinus
            hu += np.float32(H.het * 0.7) * self.field(_F_HET, sl, k.off)[m]
            lab = np.where(sinus, 0, 3 if k.side > 0 else 4).astype(np.uint8)
            mm = m.copy()
            mm[m] = keep
            self.put(sl, mm, hu[keep])
            self.lab[sl][mm] = lab[keep]

    def vessels_gb(self):
        A, H = self.A, self.A.H
        if A.gallbladder:
            c, r = A.gb_c, A.gb_r
            R = _rotation((1, 0, 0), math.radians(25.0))
            rm = max(r) + 5
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is not None:
                m, _ = self.blob(sl, X, Y, Z, c, R, r, 0.05, A.offsets[2])
                m &= (self.zrel[sl] < -4.0) & (self.wall_in[sl] > 1.0)
                self.put(sl, m, H.gb, 0)
        # aorta (left-anterior of the spine; posterior mediastinum above the diaphragm) and
        # inferior vena cava (right), both with iliac branches below the bifurcation
        sl, (X, Y, Z) = self.block((-90, A.ys0 - 40, -1e4), (90, A.ys0 + 80, 1e4))
        if sl is None:
            return
        xs, ys = self.spine_xy(Z)
        t = _sigmoid((Z + 10.0) / 12.0)  # 0 in the abdomen, 1 in the thorax
        ax = xs + A.aorta_x * (1.0 - t) + (-A.rbx0 - A.aorta_r * 0.6) * t
        ay = (ys + A.rby0 + A.aorta_r + 2.0) * (1.0 - t) + (ys + 4.0) * t
        ra = A.aorta_r * (1.0 + 0.12 * t)
        shp = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        above = Z > A.z_bif
        ma = above & (((X - ax) ** 2 + (Y - ay) ** 2) < ra * ra)
        spread = np.maximum(A.z_bif - Z, 0.0) * 0.45
        below = ~above
        ri = ra * 0.65
        for s in (-1.0, 1.0):
            ma = ma | (below & (((X - ax - s * spread) ** 2 + (Y - ay + 0.2 * spread) ** 2) < ri * ri))
        ma = np.broadcast_to(ma, shp) & (self.d[sl] > 5.0)
        iy = ys + A.rby0 + A.ivc_r[1] + 4.0
        ix = xs + A.ivc_x
        mi = (Z > A.z_bif) & (Z < 10.0) & ((((X - ix) / A.ivc_r[0]) ** 2 + ((Y - iy) / A.ivc_r[1]) ** 2) < 1.0)
        rv = A.ivc_r[1]
        for s in (-1.0, 1.0):
            mi = mi | ((Z <= A.z_bif) & (((X - ix * 0.5 - s * spread) ** 2 + (Y - iy + 0.2 * spread + 4) ** 2) < rv * rv))
        mi = np.broadcast_to(mi, shp) & (self.d[sl] > 5.0) & ~ma
        self.put(sl, mi, H.ivc + self.het(mi, sl, 5, 3.0), 0)
        self.put(sl, ma, H.blood + self.het(ma, sl, 6, 3.0), 0)

    def spine(self):
        A, H = self.A, self.A.H
        sl, (X, Y, Z) = self.block((-90, A.ys0 - A.rby0 - 2 * A.rcy - A.l_spinous - 40, -1e4), (90, A.ys0 + 60, 1e4))
        if sl is None:
            return
        shp = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        Z3 = np.broadcast_to(Z, shp)
        n = np.clip(np.searchsorted(A.seg_lo, Z3, side="right") - 1, 0, len(A.seg_lo) - 1)
        t = (Z3 - A.body_lo[n]) / A.body_h[n]
        in_body_z = t >= 0.0
        sc = A.vscale[n]
        lumbar = np.clip(-Z3 / 250.0, 0.0, 1.0)
        rbx = (A.rbx0 + 4.0 * lumbar) * sc
        rby = (A.rby0 + 3.0 * lumbar) * sc
        xs, ys = self.spine_xy(Z)
        dx = X - xs
        dy = Y - ys
        rb = np.sqrt((dx / rbx) ** 2 + (dy / rby) ** 2)
        vb = in_body_z & (rb < 1.0)
        disc = ~in_body_z & (rb < 1.04)
        cortex = vb & ((rb > 1.0 - 2.2 / rbx) | (t < 0.07) | (t > 0.93))
        ycn = ys - rby - A.rcy - 1.5
        dyc = Y - ycn
        rc = np.sqrt((dx / A.rcx) ** 2 + (dyc / A.rcy) ** 2)
        canal = rc < 1.0
        arch_z = ~(in_body_z & (t > 0.85))
        ring = arch_z & (rc >= 1.0) & (rc < 1.0 + 6.5 / A.rcy) & (Y < ys - 0.3 * rby)
        spinous = in_body_z & (t < 0.75) & (np.abs(dx) < 4.0) & (dyc < -A.rcy) & (dyc > -A.rcy - A.l_spinous * sc)
        ltp = A.l_tp_thor + (A.l_tp_lumbar - A.l_tp_thor) * np.clip((-Z3 - 20.0) / 100.0, 0.0, 1.0)
        transverse = in_body_z & (t > 0.3) & (t < 0.75) & (np.abs(dyc - 2.0) < 4.5) & (np.abs(dx) < A.rcx + ltp)
        post = (ring | spinous | transverse) & ~canal
        self.put(sl, disc, H.disc, 0)
        self.put(sl, canal, H.csf, 0)
        hu_vb = np.where(cortex, H.cort, H.canc).astype(np.float32)[vb]
        hu_vb += self.het(vb, sl, 3, 25.0)
        self.put(sl, vb, hu_vb, 6)
        self.put(sl, post & ~vb, H.post, 6)

    def ribs_pelvis(self):
        A, H = self.A, self.A.H
        sl = self.g.box((-A.a0 - 30, -A.b0 - 30, -150), (A.a0 + 30, A.b0 + 30, 1e4))
        if sl is not None:
            wall = self.wall_in[sl]
            band = (wall > -8.0) & (wall < 0.5)
            X, Y, Z = self.g.coords(sl)
            xs, ys = self.spine_xy(Z)
            post_c = (np.abs(X - xs) < A.rbx0 + 22.0) & (Y < ys + 10.0)
            band &= ~post_c
            if band.any():
                ux, uy = self.ux[sl][band], self.uy[sl][band]
                nrm = np.sqrt(ux * ux + uy * uy) + 1e-6
                phi = np.arccos(np.clip(-uy / nrm, -1.0, 1.0))  # 0 at the back, pi at the front
                z = _take(Z, band)
                R = 0.5 * (A.a0 + A.b0)
                zeff = z + A.rib_slope * phi * R
                stripe = np.mod(zeff - A.rib_off, A.rib_pitch) < A.rib_w
                phimax = math.pi * (0.5 + 0.4 * np.clip((zeff - A.rib_min) / 80.0, 0.0, 1.0))
                rib = stripe & (zeff > A.rib_min) & (phi < phimax)
                cart = phi > 0.78 * math.pi
                hu = np.where(cart, H.cartilage, H.rib).astype(np.float32)
                m = band.copy()
                m[band] = rib
                self.put(sl, m, hu[rib], 0)
        # iliac wings below the iliac crest
        sl, (X, Y, Z) = self.block((-A.a0, -A.b0, -1e4), (A.a0, A.b0, A.z_crest))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            f = np.clip((A.z_crest - Z) / 140.0, 0.0, 1.0)
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            cort = np.zeros_like(m)
            for s in (-1.0, 1.0):
                cx = s * (A.rbx0 + 22.0)
                cy = ys + 35.0
                rx = A.ai * (0.52 - 0.2 * f)
                ry = A.bi * (0.55 - 0.12 * f)
                rn = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
                th = 7.0 / (0.5 * (rx + ry))
                sector = (s * (X - cx) > 0.0) & (Y < cy + 0.6 * ry)
                wing = (np.abs(rn - 1.0) < th) & sector & (Z > A.z_crest - 110.0)
                m |= wing
                cort |= wing & (np.abs(rn - 1.0) > 0.45 * th)
            m &= self.d[sl] > 5.0
            hu = np.where(cort, H.cort * 0.7, H.canc)
            self.put(sl, m, np.broadcast_to(hu, m.shape)[m].astype(np.float32), 0)

def _kernel_norm(sigma: float) -> float:
    """Standard deviation of 3-D gaussian-filtered unit white noise."""
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k**2).sum()) ** 3)


def _finish(A, img, rng):
    """Global contrast change, partial-volume blur and (white + correlated) noise."""
    # random global contrast change of the tissues (gain about 0 HU plus an offset), faded
    # out below -300 HU so that air stays at about -1000 HU
    delta = np.clip(img, -150.0, 1500.0)
    delta *= np.float32(A.gain - 1.0)
    delta += np.float32(A.shift)
    delta *= np.clip((img + 700.0) * np.float32(1.0 / 400.0), 0.0, 1.0)
    img += delta
    del delta
    out = ndimage.gaussian_filter(img, A.pv_sigma, mode="nearest")
    white = rng.standard_normal(img.shape, dtype=np.float32)
    corr = ndimage.gaussian_filter(white, A.noise_sigma, mode="nearest")
    corr *= np.float32(A.noise_corr / _kernel_norm(A.noise_sigma))
    out += corr
    white *= np.float32(A.noise_white)
    out += white
    np.clip(out, -1024.0, 3071.0, out=out)
    return out


# --------------------------------------------------------------------------- public API


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
    root = np.random.default_rng(seed)
    rng_anat, rng_geom, rng_tex = root.spawn(3)
    A = _sample_anatomy(rng_anat)

    # ---- geometry (always draw everything so the stream does not depend on arguments)
    g = rng_geom
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

    if orientation is not None:
        code = orientation
    axes, signs = _parse_orientation(code)
    if oblique is not None:
        obl = bool(oblique)
    if shape is None or spacing is None:  # the field of view follows the anatomy
        if obl:  # a little larger, so that the tilted box does not cut the organs
            ext += 25.0
        z_top = min(z_top, ext[2] + A.z_low)  # keep kidneys / liver tip inside
        if z_top < 25.0:  # ... and some lung: extend the field of view downwards
            ext[2] += 25.0 - z_top
            z_top = 25.0
    s_world = np.array([s_xy, s_xy, s_z])
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

    D = np.zeros((3, 3))
    for a in range(3):
        D[axes[a], a] = signs[a] * sp[a]
    R = _rotation(rot_axis, rot_angle) if obl else np.eye(3)
    M = R @ D
    a_z = axes.index(2)
    ext_z = float(shp[a_z] * sp[a_z])
    centre = np.array([fov_x, fov_y, z_top - 0.5 * ext_z])
    origin = centre - M @ ((shp - 1) / 2.0)  # anatomy coords of voxel (0, 0, 0)

    # Render on an RAS-aligned grid (cheap separable coordinates), then map onto the
    # storage grid: exact transpose/flips if not oblique, else trilinear (image) /
    # nearest (labels) resampling at the world positions of the storage voxels.
    sp_r = np.array([sp[axes.index(w)] for w in range(3)])
    if not obl:
        shape_r = np.array([shp[axes.index(w)] for w in range(3)])
        lo = centre - sp_r * (shape_r - 1) / 2.0
    else:
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in shp])), dtype=np.float64)
        pts = corners @ M.T + origin
        lo = pts.min(0) - 1.5 * sp_r
        hi = pts.max(0) + 1.5 * sp_r
        shape_r = np.ceil((hi - lo) / sp_r).astype(np.int64) + 1
    grid = _Grid(tuple(int(v) for v in shape_r), np.diag(sp_r), lo)

    bank = _NoiseBank(rng_tex, _BANK_SPECS)
    r = _Renderer(A, grid, bank)
    r.body()
    r.muscles()
    r.lungs()
    r.heart_stomach()
    r.liver_spleen()
    r.kidneys()
    r.vessels_gb()
    r.spine()
    r.ribs_pelvis()
    img_r, lab_r = r.img, r.lab
    del r

    if not obl:
        clean = np.transpose(img_r, axes)
        labels = np.transpose(lab_r, axes)
        flips = tuple(a for a in range(3) if signs[a] < 0)
        if flips:
            clean = np.flip(clean, flips)
            labels = np.flip(labels, flips)
        clean = np.ascontiguousarray(clean)
        labels = np.ascontiguousarray(labels)
    else:
        # render-grid index of storage voxel i: (M @ i + origin - lo) / sp_r
        mat = M / sp_r[:, None]
        off = (origin - lo) / sp_r
        out_shape = tuple(int(v) for v in shp)
        clean = ndimage.affine_transform(img_r, mat, off, output_shape=out_shape, order=1, mode="nearest", output=np.float32)
        labels = ndimage.affine_transform(lab_r, mat, off, output_shape=out_shape, order=0, mode="nearest", output=np.uint8)
    image = _finish(A, clean, rng_tex)
    if A.recon_circle:
        # world-xy distance of each storage voxel from the (scanner) axis through the FOV centre
        idx = [np.arange(n, dtype=np.float64) for n in shp]
        d2 = 0.0
        for w in (0, 1):
            acc = origin[w] - centre[w]
            for a in range(3):
                if abs(M[w, a]) > 1e-9:
                    b = [1, 1, 1]
                    b[a] = -1
                    acc = acc + (M[w, a] * idx[a]).reshape(b)
            d2 = d2 + np.asarray(acc, dtype=np.float32) ** 2
        ext_grid = [float(shp[axes.index(w)] * sp[axes.index(w)]) for w in (0, 1)]
        radius = A.recon_radius * max(ext_grid)
        outside = np.broadcast_to(d2 > np.float32(radius * radius), image.shape)
        image[outside] = -1024.0
        labels[outside] = 0

    affine = np.eye(4)
    affine[:3, :3] = M
    affine[:3, 3] = origin + T
    meta = {
        "orientation": _axcodes(affine),
        "oblique": obl,
        "rotation_deg": math.degrees(rot_angle) if obl else 0.0,
        "phase": A.phase,
        "world_offset": tuple(float(v) for v in T),
    }
    return Phantom(
        image=image.astype(np.float32, copy=False),
        labels=labels,
        affine=affine,
        spacing=tuple(float(v) for v in sp),
        seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
        meta=meta,
    )


def phantom_batch(seeds: Iterable[int], **kwargs) -> list[Phantom]:
    """``[make_phantom(s, **kwargs) for s in seeds]``."""
    return [make_phantom(int(s), **kwargs) for s in seeds]
