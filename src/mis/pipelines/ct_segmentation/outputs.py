"""What `mis segment` writes besides the label map: statistics, label sidecar, preview PNG."""
from __future__ import annotations

import numpy as np
from PIL import Image

from mis.io.volume import VolumeMeta

# A fixed palette so the same organ has the same colour in every preview.
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
], dtype=np.uint8)


def voxel_volume_ml(meta: VolumeMeta) -> float:
    return float(abs(np.linalg.det(meta.affine[:3, :3]))) / 1000.0


def label_statistics(labels: np.ndarray, image_hu: np.ndarray, meta: VolumeMeta, names: dict[int, str]) -> dict:
    """Volume (ml) and mean/std HU per label; organs touching the volume border are flagged,
    because their volume is then only a lower bound (TotalSegmentator reports the same caveat)."""
    ml = voxel_volume_ml(meta)
    counts = np.bincount(labels.ravel(), minlength=max(names, default=0) + 1)
    border = np.zeros(len(counts), dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            face = np.take(labels, index, axis=axis)
            border[np.unique(face)] = True
    stats = {}
    for label, name in sorted(names.items()):
        voxels = int(counts[label]) if label < len(counts) else 0
        values = image_hu[labels == label] if voxels else np.empty(0)
        stats[name] = {
            "label": label,
            "voxels": voxels,
            "volume_ml": round(voxels * ml, 3),
            "mean_hu": round(float(values.mean()), 2) if voxels else None,
            "std_hu": round(float(values.std()), 2) if voxels else None,
            "touches_border": bool(border[label]) if label < len(border) else False,
        }
    return stats


def _window(slice_hu: np.ndarray, low: float = -200.0, high: float = 300.0) -> np.ndarray:
    return ((np.clip(slice_hu, low, high) - low) / (high - low) * 255).astype(np.uint8)


def _overlay(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    colours = PALETTE[labels % len(PALETTE)].astype(np.float32)
    mask = labels > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colours[mask]
    return rgb.astype(np.uint8)


def preview_png(image_ras: np.ndarray, labels_ras: np.ndarray, spacing: tuple[float, float, float]) -> Image.Image:
    """Axial, coronal and sagittal slices through the centre of the segmented voxels, side by side,
    in radiological display (patient right on the image left for axial/coronal), aspect-correct."""
    fg = np.argwhere(labels_ras > 0)
    centre = fg.mean(axis=0).round().astype(int) if len(fg) else np.array(labels_ras.shape) // 2
    x, y, z = centre
    sx, sy, sz = spacing
    views = [  # (2-D array rows x cols, row spacing, col spacing)
        (image_ras[:, :, z].T[::-1, ::-1], labels_ras[:, :, z].T[::-1, ::-1], sy, sx),  # axial: A up
        (image_ras[:, y, :].T[::-1, ::-1], labels_ras[:, y, :].T[::-1, ::-1], sz, sx),  # coronal: S up
        (image_ras[x, :, :].T[::-1, :], labels_ras[x, :, :].T[::-1, :], sz, sy),         # sagittal: S up
    ]
    height = 256
    tiles = []
    for img, lab, row_mm, col_mm in views:
        rgb = Image.fromarray(_overlay(_window(img), lab.astype(np.int64)))
        width = max(1, int(round(height * (img.shape[1] * col_mm) / (img.shape[0] * row_mm))))
        tiles.append(rgb.resize((width, height), Image.NEAREST))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height))
    offset = 0
    for tile in tiles:
        canvas.paste(tile, (offset, 0))
        offset += tile.width + 4
    return canvas
