"""CountPipeline: an image -> its head count and density map (M-SFANet / M-SegNet).

    pipeline = CountPipeline.from_checkpoint(path, runtime)
    out = pipeline(image)              # [H, W] or [H, W, 3]; uint8, uint16 or float in [0, 1]
    out.count, out.density             # density float32 [H, W], summing to the count

Preprocessing as upstream's inference: intensities to [0, 1], the card's mean / std (ImageNet's for RGB networks),
grayscale repeated for an RGB network. Upstream resizes to a multiple of 16, which rescales every head; here the image
is padded instead (with its normalised zero, the mean colour) and the padding's output is cut off, so heads keep
their size and the density map keeps the image's pixels.

Large images go through in tiles of `tile` pixels overlapping by `overlap`; the tiles' densities are blended with
tent weights that form a partition of unity, so at every pixel the result is a weighted mean of the tiles covering it
and no head is counted twice at a tile border. The network's density is at half resolution (output stride 2); it is
resized, count-preserving, to the image's size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mis.errors import InputError
from mis.models.sfanet import OUTPUT_STRIDE, SIZE_MULTIPLE
from mis.pipelines.base import Pipeline
from mis.pipelines.count.density import resize_density
from mis.runtime.tiling import offsets, tent

TASK = "count"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)     # RGB -> gray for a 1-channel network (ITU-R BT.601)
DEFAULT_TILE = 1024        # pixels: one pass up to this size, tiles beyond
DEFAULT_OVERLAP = 128
# A network pass holds at most batch_size x this many pixels: a video's small frames go through batch_size at a time,
# a large image's 1024 px tiles fewer at a time, so peak memory stays that of one batch whatever the image's size
PIXELS_PER_BATCH_ITEM = 512 * 512


@dataclass
class CountOutput:
    count: float               # the density's sum (the network's estimate of the number of heads)
    density: np.ndarray        # float32 [H, W] on the image's pixels
    attention: np.ndarray      # float32 [H, W] in [0, 1]: M-SFANet's attention path (where it sees people)


def preprocessing_for(channels: int) -> dict:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
    return {"mean": list(mean), "std": list(std), "density_scale": 1.0, "output_stride": OUTPUT_STRIDE}


def import_preprocessing(network_config: dict) -> dict:
    """Upstream's released weights: ImageNet-normalised RGB, density summing to the count."""
    return preprocessing_for(int(network_config.get("in_channels", 3)))


def to_unit_float(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Intensities to float32 [0, 1]: integers by their type's range, floats as given (must be finite)."""
    image = np.asarray(image)
    if image.dtype.kind in "ui":
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if image.dtype.kind == "b":
        return image.astype(np.float32)
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError(source, "has NaN or infinite pixel values")
    return image


def normalise(image: np.ndarray, mean: np.ndarray, std: np.ndarray, channels: int,
              source: str = "image") -> np.ndarray:
    """[H, W] / [H, W, 3] -> float32 [channels, H, W]: intensities to [0, 1], gray repeated for an RGB network (RGB
    to luma for a gray one), then (x - mean) / std. Training and inference share it."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError(source, f"expected an image [H, W] or [H, W, 3], got shape {tuple(image.shape)}")
    if min(image.shape[:2]) < 2:
        raise InputError(source, f"image is {image.shape[1]}x{image.shape[0]} pixels: too small to count in")
    unit = to_unit_float(image, source)
    if channels == 3:
        unit = np.repeat(unit[..., None], 3, axis=2) if unit.ndim == 2 else unit
    else:
        unit = (unit @ LUMA if unit.ndim == 3 else unit)[..., None]
    return np.ascontiguousarray(((unit - mean) / std).transpose(2, 0, 1), dtype=np.float32)


class CountPipeline(Pipeline):
    """`pipeline(image)` -> CountOutput; `batch(images)` sends the tiles of several images through together."""

    task = TASK
    default_batch_size = 4
    default_gpu_batch_size = 16

    def __init__(self, model: torch.nn.Module, card: dict, policy=None, *, tile: int | None = None,
                 overlap: int | None = None, **base_options):
        super().__init__(model, card, policy, **base_options)
        self.channels = model.config.in_channels
        pre = card["preprocessing"]
        # None: the card's tiling (a network trained with `--count-tile` counts in tiles of its training crop, as
        # nnU-Net predicts in patches of its training size), else one pass up to DEFAULT_TILE
        tile = pre.get("tile", DEFAULT_TILE) if tile is None else tile              # card_problems: whole numbers
        overlap = pre.get("overlap", DEFAULT_OVERLAP) if overlap is None else overlap
        self.tile = max(SIZE_MULTIPLE * 2, tile // SIZE_MULTIPLE * SIZE_MULTIPLE)
        self.overlap = min(overlap // SIZE_MULTIPLE * SIZE_MULTIPLE, self.tile // 2)
        self.mean = np.asarray(pre["mean"], np.float32)
        self.std = np.asarray(pre["std"], np.float32)
        self.density_scale = float(pre.get("density_scale", 1.0))
        out_tile, out_overlap = self.tile // OUTPUT_STRIDE, self.overlap // OUTPUT_STRIDE
        weight = tent(out_tile, out_overlap)
        self.weight = np.outer(weight, weight)

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        pre = card.get("preprocessing")
        if not isinstance(pre, dict):
            return ["preprocessing (mean / std) is missing"]
        channels = int(card.get("config", {}).get("in_channels", 3))
        problems = []
        for key in ("mean", "std"):
            value = pre.get(key)
            if not isinstance(value, list) or len(value) != channels:
                problems.append(f"preprocessing.{key} must list {channels} value(s)")
        if isinstance(pre.get("std"), list) and any(not (isinstance(v, (int, float)) and v > 0) for v in pre["std"]):
            problems.append("preprocessing.std must be positive")
        for key, low in (("tile", 2 * SIZE_MULTIPLE), ("overlap", 0)):   # a run's --count-tile
            if key in pre and not (type(pre[key]) is int and pre[key] >= low):      # not a bool, a float or text
                problems.append(f"preprocessing.{key} must be a whole number of pixels >= {low}")
        return problems

    def network_call(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] normalised -> [B, 2, H/2, W/2]: density, attention."""
        density, attention = self.model(images)
        return torch.cat([density, attention], dim=1)

    def run_info(self) -> dict:
        return {**super().run_info(), "tile": self.tile, "overlap": self.overlap}

    # ---- arrays ------------------------------------------------------------------------------------
    def normalised(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """[H, W] / [H, W, 3] -> float32 [C, H, W] with the card's mean and std."""
        return normalise(image, self.mean, self.std, self.channels, source)

    def layout(self, height: int, width: int) -> tuple[int, int, list[tuple[int, int]]]:
        """The padded size and the tiles' top-left corners (input pixels). An image within one tile is padded to
        a multiple of 16 and goes through whole."""
        def padded(n: int) -> int:
            n = -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE
            return n if n <= self.tile else max(n, self.tile)

        ph, pw = padded(height), padded(width)
        th, tw = min(ph, self.tile), min(pw, self.tile)
        stride = self.tile - self.overlap
        rows = offsets(ph, th, stride) if ph > self.tile else [0]
        cols = offsets(pw, tw, stride) if pw > self.tile else [0]
        return ph, pw, [(r, c) for r in rows for c in cols]

    def __call__(self, image: np.ndarray, source: str = "image") -> CountOutput:
        return self.batch([image], [source])[0]

    @torch.inference_mode()
    def batch(self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None) -> list[CountOutput]:
        sources = list(sources or [f"image {k}" for k in range(len(images))])
        plans = []
        tiles: list[tuple[int, np.ndarray]] = []              # (image index, tile [C, th, tw])
        for k, (image, source) in enumerate(zip(images, sources)):
            x = self.normalised(image, source)
            _, h, w = x.shape
            ph, pw, corners = self.layout(h, w)
            x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)))
            th, tw = min(ph, self.tile), min(pw, self.tile)
            plans.append((h, w, ph, pw, corners, th, tw))
            tiles += [(k, x[:, r:r + th, c:c + tw]) for r, c in corners]
        outputs = self._run_tiles([t for _, t in tiles])
        results, start = [], 0
        for k, (h, w, ph, pw, corners, th, tw) in enumerate(plans):
            mine = outputs[start:start + len(corners)]
            start += len(corners)
            results.append(self._stitch(mine, corners, (h, w), (ph, pw), (th, tw)))
        return results

    def _run_tiles(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Tiles of one shape go through together, `batch_size` at a time or fewer for large tiles (see
        PIXELS_PER_BATCH_ITEM); -> [2, th/2, tw/2] (density, attention)."""
        out: list[np.ndarray | None] = [None] * len(tiles)
        by_shape: dict[tuple, list[int]] = {}
        for k, t in enumerate(tiles):
            by_shape.setdefault(t.shape, []).append(k)
        for shape, indices in by_shape.items():
            per_pass = max(1, min(self.batch_size, self.batch_size * PIXELS_PER_BATCH_ITEM // (shape[1] * shape[2])))
            for s in range(0, len(indices), per_pass):
                chunk = indices[s:s + per_pass]
                x = torch.from_numpy(np.stack([tiles[k] for k in chunk])).to(self.policy.device)
                y = self.forward(x).float().cpu().numpy()
                for k, value in zip(chunk, y):
                    out[k] = value
        return out  # type: ignore[return-value]

    def _stitch(self, outputs: list[np.ndarray], corners, size, padded, tile) -> CountOutput:
        (h, w), (ph, pw), (th, tw) = size, padded, tile
        s = OUTPUT_STRIDE
        acc = np.zeros((2, ph // s, pw // s), np.float32)
        weights = np.zeros((ph // s, pw // s), np.float32)
        weight = self.weight[:th // s, :tw // s] if len(corners) > 1 else np.ones((th // s, tw // s), np.float32)
        for (r, c), value in zip(corners, outputs):
            acc[:, r // s:(r + th) // s, c // s:(c + tw) // s] += value * weight
            weights[r // s:(r + th) // s, c // s:(c + tw) // s] += weight
        acc /= weights
        # the padding's output is cut off (an odd side's last output row covers the image's last pixel row)
        oh, ow = -(-h // s), -(-w // s)
        density = resize_density(acc[0, :oh, :ow] / self.density_scale, (h, w))
        attention = F.interpolate(torch.from_numpy(acc[1:2, :oh, :ow])[None], size=(h, w), mode="bilinear",
                                  align_corners=False)[0, 0].numpy()
        return CountOutput(float(density.sum(dtype=np.float64)), density.astype(np.float32),
                           np.clip(attention, 0.0, 1.0).astype(np.float32))
