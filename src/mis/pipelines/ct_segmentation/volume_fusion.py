"""Volume Fusion (VolF), the MIS-FM self-supervised pretext task, as in PyMIC's grid version.

Step A (Crop4VolumeFusion): two sub-volumes of the same scan, each a random resized crop (scale
0.7-1.5 per axis, linear zoom back to the patch size), random flips (p = 0.5 per axis and patch),
a percentile-based piecewise-linear contrast mapping into [0, 1] followed by gamma 0.7-1.5, and with
p = 0.25 both patches inverted.
Step B (VolumeFusion): one block size per sample drawn from [block_min, block_max] per axis, a
random offset, a regular grid of blocks, int(n_blocks * 0.7) blocks get a random class k in 1..K
(K = 4), the rest k = 0; fused = alpha * fg + (1 - alpha) * bg with alpha = k / K voxel by voxel,
and the label is k.

One deliberate difference: the fused image in [0, 1] is mapped to [-1, 1] so the network sees the
same input range in pretraining as in fine-tuning (our CT preprocessing maps HU to [-1, 1]).
numpy/scipy only; the arrays are (D, H, W).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class VolumeFusionConfig:
    patch_size: tuple[int, int, int] = (32, 64, 64)
    scale_range: tuple[float, float] = (0.7, 1.5)     # random resized crop, per axis
    flip_probability: float = 0.5
    invert_probability: float = 0.25                  # both patches together
    lower_percentile: tuple[float, float] = (0.1, 2.0)
    upper_percentile: tuple[float, float] = (98.0, 99.9)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    num_classes: int = 5                              # K + 1 with K = 4: alpha in {0, 1/4, 1/2, 3/4, 1}
    block_min: tuple[int, int, int] = (8, 8, 8)
    block_max: tuple[int, int, int] = (32, 32, 32)
    foreground_ratio: float = 0.7

    @property
    def k(self) -> int:
        return self.num_classes - 1


@dataclass
class FusedSample:
    image: np.ndarray    # (D, H, W) float32 in [-1, 1]
    labels: np.ndarray   # (D, H, W) uint8 in 0..K
    alpha: np.ndarray    # (D, H, W) float32, labels / K
    block_size: tuple[int, int, int]
    offset: tuple[int, int, int]
    grid: tuple[int, int, int]          # blocks per axis
    fused_blocks: int


def random_resized_crop(volume: np.ndarray, size: tuple[int, int, int], rng: np.random.Generator,
                        scale_range: tuple[float, float]) -> np.ndarray:
    """Crop min(int(size * s), volume size) per axis at a random position, zoom (order 1) to `size`."""
    crop = [min(max(1, int(n * rng.uniform(*scale_range))), v) for n, v in zip(size, volume.shape)]
    start = [int(rng.integers(0, v - c + 1)) for c, v in zip(crop, volume.shape)]
    patch = volume[tuple(slice(s, s + c) for s, c in zip(start, crop))]
    zoom = [n / c for n, c in zip(size, crop)]
    out = ndimage.zoom(patch, zoom, order=1, mode="nearest", grid_mode=True)
    return _fit(out.astype(np.float32, copy=False), size)


def _fit(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """ndimage.zoom may be off by one voxel from rounding: crop or edge-pad to exactly `size`."""
    array = array[tuple(slice(0, n) for n in size)]
    pad = [(0, n - s) for n, s in zip(size, array.shape)]
    return np.pad(array, pad, mode="edge") if any(p[1] for p in pad) else array


def contrast_map(patch: np.ndarray, rng: np.random.Generator, config: VolumeFusionConfig) -> np.ndarray:
    """Percentile-based piecewise-linear mapping into [0, 1] ([0, 0.1] below the lower percentile,
    [0.1, 0.9] between, [0.9, 1] above), then gamma."""
    low_p, high_p = rng.uniform(*config.lower_percentile), rng.uniform(*config.upper_percentile)
    v_min, v_low, v_high, v_max = np.percentile(patch, [0.0, low_p, high_p, 100.0])
    out = np.interp(patch, [v_min, v_low, v_high, v_max], [0.0, 0.1, 0.9, 1.0]) if v_max > v_min \
        else np.zeros_like(patch)
    return np.power(np.clip(out, 0.0, 1.0), rng.uniform(*config.gamma_range)).astype(np.float32)


def crop_pair(volume: np.ndarray, rng: np.random.Generator, config: VolumeFusionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step A: foreground and background sub-volumes of the same scan."""
    patches = []
    for _ in range(2):
        patch = random_resized_crop(volume, config.patch_size, rng, config.scale_range)
        flips = [axis for axis in range(3) if rng.random() < config.flip_probability]
        if flips:
            patch = np.flip(patch, axis=flips)
        patches.append(contrast_map(np.ascontiguousarray(patch), rng, config))
    if rng.random() < config.invert_probability:
        patches = [1.0 - p for p in patches]
    return patches[0], patches[1]


def fuse(foreground: np.ndarray, background: np.ndarray, rng: np.random.Generator,
         config: VolumeFusionConfig) -> FusedSample:
    """Step B: block-wise discrete fusion on a regular grid."""
    shape = foreground.shape
    block = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(config.block_min, config.block_max))
    block = tuple(min(b, n) for b, n in zip(block, shape))
    offset = tuple(int(rng.integers(0, n % b + 1)) for n, b in zip(shape, block))
    grid = tuple((n - o) // b for n, o, b in zip(shape, offset, block))
    n_blocks = int(np.prod(grid))
    n_fused = int(n_blocks * config.foreground_ratio)
    block_classes = np.zeros(n_blocks, dtype=np.uint8)
    chosen = rng.choice(n_blocks, size=n_fused, replace=False)
    block_classes[chosen] = rng.integers(1, config.k + 1, size=n_fused)
    labels = np.zeros(shape, dtype=np.uint8)
    covered = tuple(slice(o, o + g * b) for o, g, b in zip(offset, grid, block))
    # each block's class, expanded to voxels by repetition along every axis
    labels[covered] = block_classes.reshape(grid).repeat(block[0], 0).repeat(block[1], 1).repeat(block[2], 2)
    alpha = labels.astype(np.float32) / config.k
    fused = alpha * foreground + (1.0 - alpha) * background
    return FusedSample(image=(fused * 2.0 - 1.0).astype(np.float32), labels=labels, alpha=alpha,
                       block_size=block, offset=offset, grid=grid, fused_blocks=n_fused)


def volume_fusion_sample(volume: np.ndarray, rng: np.random.Generator,
                         config: VolumeFusionConfig) -> FusedSample:
    foreground, background = crop_pair(volume, rng, config)
    return fuse(foreground, background, rng, config)
