"""CT preprocessing shared by training and inference, driven by the checkpoint card.

Network grid convention: the volume is reoriented to the closest RAS axes, resampled to the card's
spacing and stored as (D, H, W) = (S, A, R) so that D is the slice axis, as PCT-Net expects
(its resolution modes 1 and 2 treat the first axis as the coarse one).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mis.io.volume import VolumeMeta, to_ras

DEFAULT_PREPROCESSING = {
    "modality": "CT",
    "orientation": "RAS",
    "spacing": [4.0, 4.0, 4.0],          # (x, y, z) mm in RAS
    "intensity_window": [-1000.0, 1000.0],  # HU clipped, then mapped linearly to [-1, 1] (PyMIC CT recipe)
    "body_threshold_hu": -600.0,           # voxels above this are "body" (PyMIC get_human_region_from_ct)
    "axis_order": "SAR",                   # network axes (D, H, W) = (S, A, R)
    "mirror_axes": [0, 1, 2],              # axes the model was mirrored on (augmentation, --tta)
}


@dataclass
class GridInfo:
    ras_shape: tuple[int, int, int]      # shape of the RAS-reoriented input (x, y, z)
    ras_spacing: tuple[float, float, float]
    grid_shape: tuple[int, int, int]     # (D, H, W) on the network grid


def ras_spacing(ras_affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.linalg.norm(ras_affine[:3, :3], axis=0))


def normalise_hu(image: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    low, high = window
    return (image.clamp(low, high) - low) / (high - low) * 2.0 - 1.0


def hu_to_normalised(value: float, window: tuple[float, float]) -> float:
    low, high = window
    return (min(max(value, low), high) - low) / (high - low) * 2.0 - 1.0


def grid_shape_for(ras_shape, spacing_in, spacing_out) -> tuple[int, int, int]:
    """(x, y, z) sizes on the target spacing, in network order (z, y, x)."""
    sizes = [max(1, int(round(n * s / t))) for n, s, t in zip(ras_shape, spacing_in, spacing_out)]
    return (sizes[2], sizes[1], sizes[0])


def ras_to_grid(volume_ras: np.ndarray, ras_affine: np.ndarray, preprocessing: dict, *,
                mode: str = "trilinear") -> tuple[torch.Tensor, GridInfo]:
    """RAS array (x, y, z) -> tensor (D, H, W) on the card's spacing. `mode` nearest for labels."""
    spacing_in = ras_spacing(ras_affine)
    grid = grid_shape_for(volume_ras.shape, spacing_in, preprocessing["spacing"])
    tensor = torch.from_numpy(np.ascontiguousarray(volume_ras.transpose(2, 1, 0)))  # (z, y, x)
    tensor = tensor.float()[None, None]
    if tuple(tensor.shape[2:]) != grid:
        if mode == "nearest":
            tensor = F.interpolate(tensor, size=grid, mode="nearest-exact")
        else:
            tensor = F.interpolate(tensor, size=grid, mode="trilinear", align_corners=False)
    info = GridInfo(tuple(volume_ras.shape), spacing_in, grid)
    return tensor[0, 0], info


def image_to_grid(image_hu: np.ndarray, meta: VolumeMeta, preprocessing: dict) -> tuple[torch.Tensor, GridInfo]:
    """HU volume in storage order -> normalised (D, H, W) tensor on the network grid."""
    ras, ras_affine, _ = to_ras(image_hu, meta)
    tensor, info = ras_to_grid(ras, ras_affine, preprocessing)
    return normalise_hu(tensor, tuple(preprocessing["intensity_window"])), info


def labels_to_grid(labels: np.ndarray, meta: VolumeMeta, preprocessing: dict) -> torch.Tensor:
    ras, ras_affine, _ = to_ras(labels, meta)
    tensor, _ = ras_to_grid(ras.astype(np.float32), ras_affine, preprocessing, mode="nearest")
    return tensor.round().to(torch.uint8)


def body_bounding_box(grid_image: torch.Tensor, threshold: float, margin: int = 2) -> tuple[slice, slice, slice]:
    """Box around everything denser than air (normalised units); the whole grid if nothing is."""
    mask = grid_image > threshold
    if not bool(mask.any()):
        return tuple(slice(0, n) for n in grid_image.shape)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = mask.any(dim=other).nonzero().flatten()
        start = max(0, int(present[0]) - margin)
        stop = min(grid_image.shape[axis], int(present[-1]) + 1 + margin)
        box.append(slice(start, stop))
    return tuple(box)
