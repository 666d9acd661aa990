"""Smooth random fields that texture the phantom (bowel loops, gas, small vessels,
parenchymal heterogeneity, organ-surface deformation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# field indices of the noise bank
_F_BOWEL, _F_GAS, _F_VES_A, _F_VES_B, _F_HET, _F_DEF = range(6)
# (smoothing sigma in mm, grid step in mm)
_BANK_SPECS = ((9.0, 6.0), (8.0, 8.0), (8.0, 8.0), (8.0, 8.0), (22.0, 20.0), (26.0, 20.0))


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
