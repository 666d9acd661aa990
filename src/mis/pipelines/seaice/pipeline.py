"""SeaIcePipeline: SAR + multispectral on aligned grids -> ice probability on the coarse grid (ViSual_IceD).

    pipeline = SeaIcePipeline.from_checkpoint(path, runtime)
    out = pipeline(sar_db, msi_reflectance)      # out.probability [H, W], NaN where either input has no data

The network sees the coarse grid (the output grid) and the fine grid, `ratio` times finer, which the finer sensor
is read onto. A scene is processed in overlapping patches that are blended (a tent weight over the overlap, so
seams do not show), one row of patches at a time: rows are final once the next row of patches starts below
them, so memory holds one band of `patch` rows whatever the scene's height. Patches without valid pixels are
skipped; a pixel is valid where both sensors have data (on the fine grid: the whole block under it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mis.errors import InputError
from mis.models.visual_iced import VisualIcedConfig
from mis.pipelines.base import Pipeline
from mis.pipelines.card_checks import increasing_pair
from mis.runtime.tiling import offsets, tent

TASK = "seaice"
DEFAULT_PATCH = 128       # coarse-grid pixels per side
DEFAULT_OVERLAP = 32

# read(row, col, size) -> (sar [Cs, hs, ws], msi [Cm, hm, wm], valid [size, size]) for the coarse window at
# (row, col) of side `size`, each sensor on its own grid (coarse or fine), already scaled for the network
WindowReader = Callable[[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class SeaIceOutput:
    probability: np.ndarray     # float32 [H, W] on the coarse grid, NaN where there is no data

    @property
    def ice(self) -> np.ndarray:
        """uint8: 1 ice, 0 water, 255 no data (the GeoTIFF's classes)."""
        out = np.full(self.probability.shape, 255, np.uint8)
        valid = np.isfinite(self.probability)
        out[valid] = self.probability[valid] >= 0.5
        return out


def scale_inputs(sar_db: np.ndarray, msi: np.ndarray, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """The card's fixed ranges to [-1, 1] (as upstream's min-max scaling, without a per-scene dependence)."""
    pre = card["preprocessing"]
    (s_low, s_high), (m_low, m_high) = pre["sar_db_range"], pre["msi_range"]
    sar = (np.asarray(sar_db, np.float32) - s_low) / (s_high - s_low) * 2 - 1
    msi = (np.asarray(msi, np.float32) - m_low) / (m_high - m_low) * 2 - 1
    return np.clip(sar, -1.5, 1.5), np.clip(msi, -1.5, 1.5)


class SeaIcePipeline(Pipeline):
    """`pipeline(sar_db, msi)` on aligned arrays -> SeaIceOutput; `rows(read, height, width)` streams a scene."""

    task = TASK
    default_batch_size = 4
    default_gpu_batch_size = 16

    def __init__(self, model: torch.nn.Module, card: dict, policy=None, *, patch: int = DEFAULT_PATCH,
                 overlap: int = DEFAULT_OVERLAP, **base_options):
        super().__init__(model, card, policy, **base_options)
        config: VisualIcedConfig = model.config
        if config.output_grid != "coarse":
            raise ValueError("SeaIcePipeline writes on the coarse grid; this network outputs on the fine grid")
        multiple = model.size_multiple
        self.patch = max(multiple, patch // multiple * multiple)
        self.overlap = min(overlap, self.patch // 2)
        self.ratio, self.finer = config.ratio, config.finer
        self.sar_channels, self.msi_channels = config.in_channels("sar"), config.in_channels("msi")
        weight = tent(self.patch, self.overlap)
        self.weight = np.outer(weight, weight)

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        pre = card.get("preprocessing")
        if not isinstance(pre, dict):
            return ["preprocessing (the input ranges) is missing"]
        return increasing_pair("preprocessing.sar_db_range", pre.get("sar_db_range")) + \
            increasing_pair("preprocessing.msi_range", pre.get("msi_range"))

    def network_call(self, sar: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        return self.model(sar, msi)

    def run_info(self) -> dict:
        return {**super().run_info(), "patch": self.patch, "overlap": self.overlap, "ratio": self.ratio,
                "finer": self.finer}

    # ---- the network on patches ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict_patches(self, sar: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """[B, Cs, ., .], [B, Cm, ., .] scaled -> ice probability [B, patch, patch]."""
        logits = self.forward(torch.from_numpy(sar).to(self.device), torch.from_numpy(msi).to(self.device))
        return torch.sigmoid(logits[:, -1].float()).cpu().numpy()   # an imported 2-channel head: channel 1

    def rows(self, read: WindowReader, height: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, probability [rows, width]) bands that concatenate to the scene, NaN where no data."""
        size, stride = self.patch, self.patch - self.overlap
        row_starts, col_starts = offsets(height, size, stride), offsets(width, size, stride)
        span = min(size, height)
        carry_sum, carry_weight = np.zeros((0, width), np.float32), np.zeros((0, width), np.float32)
        for k, row in enumerate(row_starts):
            total = np.zeros((span, width), np.float32)
            weights = np.zeros((span, width), np.float32)
            total[:len(carry_sum)] += carry_sum
            weights[:len(carry_weight)] += carry_weight
            self._add_row_of_patches(read, row, col_starts, total, weights)
            done = (row_starts[k + 1] - row) if k + 1 < len(row_starts) else span
            probability = np.full((done, width), np.nan, np.float32)
            covered = weights[:done] > 0
            probability[covered] = total[:done][covered] / weights[:done][covered]
            yield row, probability
            carry_sum, carry_weight = total[done:], weights[done:]

    def _add_row_of_patches(self, read: WindowReader, row: int, col_starts: list[int], total: np.ndarray,
                            weights: np.ndarray) -> None:
        pending = []
        for col in col_starts:
            sar, msi, valid = read(row, col, self.patch)
            if valid.any():
                pending.append((col, sar, msi, valid))
            if len(pending) == self.batch_size or (col == col_starts[-1] and pending):
                probabilities = self.predict_patches(np.stack([p[1] for p in pending]), np.stack([p[2] for p in pending]))
                for (c, _, _, ok), probability in zip(pending, probabilities):
                    h, w = ok.shape
                    weight = self.weight[:h, :w] * ok
                    total[:h, c:c + w] += probability[:h, :w] * weight
                    weights[:h, c:c + w] += weight
                pending = []

    # ---- arrays ----------------------------------------------------------------------------------------
    def check_arrays(self, sar: np.ndarray, msi: np.ndarray, source: str) -> tuple[int, int]:
        """The coarse grid's (height, width) from the two arrays, which must be `ratio` apart."""
        for name, array, channels in (("SAR", sar, self.sar_channels), ("MSI", msi, self.msi_channels)):
            if array.ndim != 3 or array.shape[0] != channels:
                raise InputError(source, f"{name} array has shape {array.shape}; this model takes {channels} "
                                 f"{name} bands as [bands, rows, columns]")
        fine, coarse = (sar, msi) if self.finer == "sar" else (msi, sar)
        if fine.shape[1:] != (coarse.shape[1] * self.ratio, coarse.shape[2] * self.ratio):
            raise InputError(source, f"the {self.finer.upper()} grid {fine.shape[1:]} is not {self.ratio} x the "
                             f"other's {coarse.shape[1:]} (align the rasters first, as `mis seaice` does)")
        if min(coarse.shape[1:]) < self.model.size_multiple:
            raise InputError(source, f"scene of {coarse.shape[2]}x{coarse.shape[1]} coarse pixels is smaller than "
                             f"the network's minimum {self.model.size_multiple}")
        return coarse.shape[1], coarse.shape[2]

    def array_reader(self, sar_db: np.ndarray, msi: np.ndarray) -> WindowReader:
        sar_s, msi_s = scale_inputs(sar_db, msi, self.card)
        valid = self.coarse_valid(np.isfinite(sar_db).all(0), np.isfinite(msi).all(0))
        sar_s, msi_s = np.nan_to_num(sar_s), np.nan_to_num(msi_s)
        r = self.ratio

        def read(row: int, col: int, size: int):
            h, w = min(size, valid.shape[0] - row), min(size, valid.shape[1] - col)
            fine = np.s_[:, row * r:(row + h) * r, col * r:(col + w) * r]
            coarse = np.s_[:, row:row + h, col:col + w]
            sar = sar_s[fine] if self.finer == "sar" else sar_s[coarse]
            msi_window = msi_s[fine] if self.finer == "msi" else msi_s[coarse]
            return self.padded(sar, msi_window, valid[row:row + h, col:col + w], size)

        return read

    def coarse_valid(self, sar_valid: np.ndarray, msi_valid: np.ndarray) -> np.ndarray:
        """Valid on the coarse grid: both sensors have data (every fine pixel of the block)."""
        fine, coarse = (sar_valid, msi_valid) if self.finer == "sar" else (msi_valid, sar_valid)
        h, w = coarse.shape
        blocks = fine[:h * self.ratio, :w * self.ratio].reshape(h, self.ratio, w, self.ratio).all(axis=(1, 3))
        return blocks & coarse

    def padded(self, sar: np.ndarray, msi: np.ndarray, valid: np.ndarray, size: int):
        """Windows at the scene's edge (smaller than a patch) padded with zeros (invalid) to the patch size."""
        h, w = valid.shape
        if (h, w) == (size, size):
            return sar, msi, valid

        def pad(array: np.ndarray, scale: int) -> np.ndarray:
            return np.pad(array, ((0, 0), (0, (size - h) * scale), (0, (size - w) * scale)))

        fine_sar, fine_msi = (self.ratio, 1) if self.finer == "sar" else (1, self.ratio)
        return pad(sar, fine_sar), pad(msi, fine_msi), valid

    def batch(self, scenes: list[tuple[np.ndarray, np.ndarray]], source: str = "scene") -> list[SeaIceOutput]:
        """Several scenes; each is already batched patch-wise (`batch_size` patches per forward pass)."""
        return [self(sar, msi, source) for sar, msi in scenes]

    def __call__(self, sar_db: np.ndarray, msi: np.ndarray, source: str = "scene") -> SeaIceOutput:
        """sar_db [Cs, ., .] sigma0 in dB and msi [Cm, ., .] reflectance on the model's two grids (NaN = no data)."""
        height, width = self.check_arrays(np.asarray(sar_db), np.asarray(msi), source)
        bands = [band for _, band in self.rows(self.array_reader(sar_db, msi), height, width)]
        return SeaIceOutput(np.concatenate(bands, axis=0))


def import_preprocessing(network_config: dict) -> dict:
    """Imported upstream weights were trained on min-max scaled inputs; these ranges are the closest fixed ones.
    Upstream's SAR is HH alone (replicated to three channels; a 1-channel import sums that kernel)."""
    pre = {"sar_db_range": [-35.0, 5.0], "msi_range": [0.0, 1.0]}
    if network_config.get("sar_channels") == 1:
        pre["sar_bands"] = "HH"
    return pre
