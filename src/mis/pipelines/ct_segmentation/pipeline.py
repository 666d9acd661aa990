"""CT segmentation pipeline: HU volume + geometry in, label map with exactly the input geometry out."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mis.errors import InputError, UsageError
from mis.io.volume import VolumeMeta, from_ras
from mis.pipelines.base import Pipeline
from mis.pipelines.card_checks import increasing_pair, number, positive_int, positive_numbers
from mis.pipelines.ct_segmentation.preprocess import (
    DEFAULT_PREPROCESSING, body_bounding_box, hu_to_normalised, image_to_grid)
from mis.runtime.device import ComputePolicy
from mis.runtime.sliding_window import sliding_window_predict

MIN_VOXELS = 8 * 8 * 8


@dataclass
class SegmentationResult:
    labels: np.ndarray                  # same shape as the input, uint8/uint16 label ids
    probabilities: np.ndarray | None    # (K, *input shape) uint8, probability * 255, when asked for
    info: dict = field(default_factory=dict)


def flip_combinations(tta: bool, mirror_axes=(0, 1, 2)) -> list[tuple[int, ...]]:
    """Mirroring TTA over the model's mirror axes (spatial axis i is dim i + 2 of a (B, C, D, H, W)
    batch): 2^n combinations, the first being no flip."""
    if not tta:
        return [()]
    axes = tuple(a + 2 for a in mirror_axes)
    return [tuple(a for bit, a in enumerate(axes) if mask >> bit & 1) for mask in range(2 ** len(axes))]


class CTSegmentationPipeline(Pipeline):
    """Built once from a checkpoint; `__call__` works on arrays so tests need no files."""

    task = "ct_segmentation"
    default_batch_size = 2          # sliding windows per forward pass: on a CPU batching matters most
    default_gpu_batch_size = 8

    def __init__(self, model: torch.nn.Module, card: dict, policy: ComputePolicy | None = None, *,
                 overlap: float = 0.5, tta: bool = False, skip_empty: bool = True, **base_options):
        super().__init__(model, card, policy, **base_options)
        self.overlap = overlap
        self.tta = tta
        self.skip_empty = skip_empty
        self.preprocessing = {**DEFAULT_PREPROCESSING, **card.get("preprocessing", {})}
        self.roi_size = tuple(card["config"]["input_size"])
        self.labels = {int(k): v for k, v in card.get("labels", {}).items()}
        self.num_classes = int(card["config"]["class_num"])

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        config, pre = card["config"], {**DEFAULT_PREPROCESSING, **card["preprocessing"]}
        problems = positive_int("config.class_num", config.get("class_num"), minimum=2)
        size = config.get("input_size")
        if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
            problems.append(f"config.input_size must be 3 positive integers, not {size!r}")
        problems += positive_numbers("preprocessing.spacing", pre.get("spacing"), 3)
        problems += increasing_pair("preprocessing.intensity_window", pre.get("intensity_window"))
        if not number(pre.get("body_threshold_hu")):
            problems.append(f"preprocessing.body_threshold_hu must be a number, not {pre.get('body_threshold_hu')!r}")
        axes = pre.get("mirror_axes")
        if not (isinstance(axes, list) and set(axes) <= {0, 1, 2}):
            problems.append(f"preprocessing.mirror_axes must be a subset of [0, 1, 2], not {axes!r}")
        classes = config.get("class_num") if isinstance(config.get("class_num"), int) else 0
        bad_ids = [k for k in card["labels"] if not 1 <= int(k) < classes]
        if bad_ids:
            problems.append(f"labels {bad_ids} are outside the network's classes 1..{classes - 1}")
        return problems

    @classmethod
    def precision_probe(cls, model: torch.nn.Module, card: dict):
        probe_input = torch.zeros(1, 1, *card["config"]["input_size"])
        return lambda: model(probe_input)

    def label_ids(self, names: list[str] | None) -> list[int]:
        """Ids for `--roi-subset`; unknown names raise an error that lists the valid ones."""
        if not names:
            return sorted(self.labels)
        by_name = {v: k for k, v in self.labels.items()}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(f"unknown label(s) {', '.join(unknown)}; this model knows: "
                             f"{', '.join(self.labels.values())}")
        return sorted(by_name[n] for n in names)

    # --- the steps -------------------------------------------------------------------------------
    def _predict_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(b, 1, *roi) -> (b, K, *roi) softmax probabilities in fp32, averaged over mirrorings."""
        total = None
        flips = flip_combinations(self.tta, self.preprocessing.get("mirror_axes", (0, 1, 2)))
        for dims in flips:
            x = windows.flip(dims) if dims else windows
            logits = self.forward(x)
            probs = torch.softmax(logits.float(), dim=1)  # fp32 softmax: fp16 logits may be Inf
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total + probs
        return total / len(flips)

    def check_inputs(self, image: np.ndarray, meta: VolumeMeta) -> None:
        if image.ndim != 3:
            raise InputError(meta.source, f"expected a 3-D volume, got shape {image.shape}")
        if image.size < MIN_VOXELS or min(image.shape) < 2:
            raise InputError(meta.source, f"volume too small to segment (shape {image.shape})")
        if not np.isfinite(image).all():
            raise InputError(meta.source, "volume contains NaN or infinite values")

    def grid_probabilities(self, image: np.ndarray, meta: VolumeMeta) -> tuple[torch.Tensor, dict]:
        """Probabilities (K, D, H, W) on the network grid and run info."""
        probs, info, _ = self._grid_probabilities(image, meta)
        return probs, info

    def _grid_probabilities(self, image: np.ndarray, meta: VolumeMeta):
        self.check_inputs(image, meta)
        grid, grid_info = image_to_grid(image.astype(np.float32, copy=False), meta, self.preprocessing)
        window = tuple(self.preprocessing["intensity_window"])
        air = hu_to_normalised(self.preprocessing["body_threshold_hu"], window)
        box = body_bounding_box(grid, air)
        crop = grid[box][None, None]  # (1, 1, d, h, w)
        background = torch.zeros(self.num_classes)
        background[0] = 1.0
        # Beyond a partial scan's edges lies what the scanner did not see: pad with air (the bottom of the intensity
        # window), as training does when it cuts scans short, never with the crop's own minimum (fat inside a body
        # crop) or 0 (water).
        outside = hu_to_normalised(window[0], window)
        probs_crop, stats = sliding_window_predict(
            crop, self._predict_windows, self.roi_size, self.num_classes, self.policy,
            overlap=self.overlap, batch_size=self.batch_size,
            is_empty=(lambda w: w.flatten(1).amax(dim=1) <= air) if self.skip_empty else None,
            empty_output=background, stitch_device="cpu", pad_value=outside)
        probs = background.view(-1, 1, 1, 1).repeat(1, *grid.shape)
        probs[(slice(None), *box)] = probs_crop[0]
        info = {"grid_shape": list(grid_info.grid_shape), "windows": stats.windows,
                "tta_passes": len(flip_combinations(self.tta, self.preprocessing.get("mirror_axes", (0, 1, 2)))),
                "windows_skipped": stats.skipped, **self.run_info()}
        partial = self.partial_coverage(grid.shape)
        if partial:
            info["warnings"] = partial
        return probs, info, grid_info

    def partial_coverage(self, grid_shape) -> list[str]:
        """A warning per axis along which the scan is shorter than the model's window: a partial scan, where an
        organ cut by the scan's edge is segmented from what is visible."""
        spacing = self.preprocessing["spacing"]   # (x, y, z) mm; network axes are (S, A, R) = (z, y, x)
        warnings = []
        for axis, name, mm in zip(range(3), ("head-foot", "front-back", "left-right"), reversed(spacing)):
            covered, window = grid_shape[axis] * mm, self.roi_size[axis] * mm
            if covered < window:
                warnings.append(f"partial scan: it covers {covered:.0f} mm {name}, less than the model's "
                                f"{window:.0f} mm window")
        return warnings

    def __call__(self, image: np.ndarray, meta: VolumeMeta, *, roi_subset: list[str] | None = None,
                 return_probabilities: bool = False) -> SegmentationResult:
        # 1. network-grid probabilities (RAS, model spacing, body crop, sliding window)
        probs, info, grid_info = self._grid_probabilities(image, meta)
        # 2. back to the RAS grid of the input, one class at a time so memory stays flat in K
        keep = set(self.label_ids(roi_subset))
        best = labels = None
        stored = [] if return_probabilities else None
        ras_zyx = tuple(reversed(grid_info.ras_shape))
        for k in range(self.num_classes):
            up = probs[k][None, None]
            if tuple(up.shape[2:]) != ras_zyx:
                up = F.interpolate(up, size=ras_zyx, mode="trilinear", align_corners=False)
            up = up[0, 0]
            if best is None:
                best, labels = up.clone(), torch.zeros(ras_zyx, dtype=torch.int64)
            else:
                better = up > best
                best = torch.where(better, up, best)
                labels[better] = k
            if stored is not None:
                stored.append((up.clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 1, 0).numpy())
        if keep != set(self.labels):
            labels[~torch.isin(labels, torch.tensor(sorted(keep)))] = 0
        # 3. undo the reorientation; the output has exactly the input's shape
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        out = from_ras(labels.permute(2, 1, 0).numpy().astype(dtype), meta)
        assert out.shape == image.shape, f"output shape {out.shape} != input shape {image.shape}"
        prob_out = None
        if stored is not None:
            prob_out = np.stack([from_ras(p, meta) for p in stored])
        return SegmentationResult(np.ascontiguousarray(out), prob_out, info)
