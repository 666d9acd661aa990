"""Tiling helpers for 2-D inference in overlapping windows (numpy only): where the windows start and how their
outputs are blended. Weights built from `tent` are never zero, so dividing the weighted sum by the summed weights
gives, at every pixel, a weighted mean of the windows that cover it (a partition of unity: a density's count is
kept across window borders)."""
from __future__ import annotations

import numpy as np


def offsets(extent: int, size: int, stride: int) -> list[int]:
    """Window starts covering [0, extent) with the last one shifted inward (all windows full size)."""
    if extent <= size:
        return [0]
    starts = list(range(0, extent - size, stride))
    return starts + [extent - size]


def tent(size: int, overlap: int) -> np.ndarray:
    """1-D blending weight: rising over the overlap at each end, 1 in the middle, never 0."""
    i = np.arange(size, dtype=np.float32)
    ramp = np.minimum(np.minimum(i + 1, size - i), overlap + 1) / (overlap + 1)
    return ramp.astype(np.float32)
