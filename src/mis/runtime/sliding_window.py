"""Sliding-window inference: MONAI's stitching plus three things it does not do by itself.

1. Windows whose input is uniform background (air around the body, padding) are not sent through
   the network: they get a fixed "background" output. On CT a large share of the field of view is
   air, so this is the main saving on the CPU.
2. Windows go through the network in batches under the compute policy (autocast, inference mode),
   and the blending runs in fp32 on probabilities, never on half-precision logits (Inf -> NaN).
3. Out of memory on the accelerator: retry once with stitching on the CPU and a smaller batch, and
   say so, instead of dying (MONAI's adaptive inferer does similar; we keep it explicit).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from mis.runtime.device import ComputePolicy, empty_cache, is_out_of_memory


@dataclass
class WindowStats:
    windows: int = 0
    skipped: int = 0


def _skipping_predictor(predict: Callable[[torch.Tensor], torch.Tensor], is_empty: Callable[[torch.Tensor], torch.Tensor] | None,
                        empty_output: torch.Tensor | None, stats: WindowStats, out_channels: int) -> Callable:
    """Wrap a (B, C, *roi) -> (B, K, *roi) predictor so that empty windows skip the network."""

    def predictor(windows: torch.Tensor) -> torch.Tensor:  # (B, C, *roi)
        stats.windows += windows.shape[0]
        if is_empty is None:
            return predict(windows).float()
        empty = is_empty(windows)  # (B,) bool
        out = empty_output.to(windows.device, torch.float32).view(1, out_channels, *([1] * (windows.ndim - 2)))
        out = out.expand(windows.shape[0], out_channels, *windows.shape[2:]).clone()
        busy = (~empty).nonzero().flatten()
        stats.skipped += int(empty.sum())
        if busy.numel():
            out[busy] = predict(windows[busy]).float()
        return out

    return predictor


def sliding_window_predict(
    volume: torch.Tensor,                      # (B, C, *spatial), on CPU or the compute device
    predict: Callable[[torch.Tensor], torch.Tensor],  # (b, C, *roi) -> (b, K, *roi) probabilities
    roi_size: Sequence[int],
    out_channels: int,
    policy: ComputePolicy,
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    is_empty: Callable[[torch.Tensor], torch.Tensor] | None = None,
    empty_output: torch.Tensor | None = None,  # (K,) output of an empty window
    stitch_device: str | torch.device | None = None,
    progress: bool = False,
    pad_value: float | None = None,            # what lies beyond the volume's edges (default: its minimum)
) -> tuple[torch.Tensor, WindowStats]:
    """Gaussian-blended (sigma = 1/8 window) probabilities, (B, K, *spatial), float32.

    A volume smaller than the window along an axis is padded symmetrically (the data centred in the window)
    with `pad_value`."""
    stats = WindowStats()
    stitch = torch.device(stitch_device) if stitch_device is not None else policy.device
    predictor = _skipping_predictor(predict, is_empty, empty_output, stats, out_channels)

    def run(device: torch.device, window_batch: int) -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(
                volume, roi_size=tuple(roi_size), sw_batch_size=window_batch, predictor=predictor,
                overlap=overlap, mode="gaussian", sigma_scale=0.125, padding_mode="constant",
                cval=pad_value if pad_value is not None else (float(volume.min()) if volume.numel() else 0.0),
                sw_device=policy.device,
                device=device, progress=progress)

    try:
        return run(stitch, batch_size), stats
    except RuntimeError as exc:
        if policy.device.type == "cpu" or not is_out_of_memory(exc):
            raise
        empty_cache(policy.device)
        smaller = max(1, batch_size // 2)
        warnings.warn(f"out of memory on {policy.device}: retrying with CPU stitching and window batch {smaller}")
        stats.windows = stats.skipped = 0
        return run(torch.device("cpu"), smaller), stats
