"""ViSual_IceD (Rogers et al., arXiv 2401.06009): SAR + multispectral imagery on two grids -> a sea-ice map.

From https://github.com/MartinSJRogers/ViSual_IceD (commit c7e82ccc, ``src/model/visualiced_model.py``, Keras); an
independent re-implementation. Encoder layer names are upstream's Keras names with a branch prefix
(``block1_conv1_sar`` -> ``sar.block1_conv1``, ``block1_conv1`` -> ``msi.block1_conv1``), so a Keras ``.h5`` maps
by name (docs/visual_iced_keymap.md).

Layout of the paper config (widths w = 64, 128, 256, 512, 512; SAR 3x finer: SAR 720 px, MSI 240 px):

    finer branch ("sar" upstream)   5 VGG blocks of two 3x3 convs; the pool after block 1 is ratio x ratio with
                                    stride ratio (720 -> 240), then 2x2 pools; taps block2..block5 conv2
                                    (w1..w4 channels at coarse / 1, 2, 4, 8)
    coarser branch ("msi" upstream) 4 VGG blocks, 2x2 pools; taps block1..block4 conv2 (w0..w3 at / 1, 2, 4, 8)
    fusion                          level k: cat[coarser tap k, finer tap k] (msi first, as upstream):
                                    192 / 384 / 768 / 1024 channels
    decoder (3 stages)              Gaussian resize of the deeper map onto level k, cat[up, fusion k], 1x1 conv
                                    -> w_k, BN, dropout, 1x1 conv -> w_{k-1} (w_0 at the last stage), BN
    output_layer                    1x1 conv w0 -> classes (logits)

Inside a block: conv + ReLU, then BatchNorm (upstream's order), for both convs; the tap is conv2's ReLU output
*before* its BatchNorm (upstream reads `get_layer("blockN_conv2").output`), the BN output goes on down the encoder.
The deepest block of each branch has no BN after conv2 (nothing below it reads it).

Upstream ends in a 2-channel sigmoid; both channels are trained against the same binary mask (the [B, H, W, 1] label
broadcasts against [B, H, W, 2] in the weighted BCE, 1 = ice) and inference keeps channel 1. Here the network returns
logits: import with ``classes=2`` and take ``sigmoid(logits[:, 1])`` as P(ice); train new models with ``classes=1``.

Beyond upstream (which only has "dual" with SAR finer and the coarse output):

- `finer="msi"`: the same network with the roles swapped (Sentinel-2 on the finer grid, S1 EW on the coarser).
- `output_grid="fine"`: one more decoder stage (`decoder.up_fine`) resizes onto the fine grid and, where the finer
  sensor's encoder runs, concatenates its block1 conv2 tap (w0 channels at fine resolution) before the two 1x1 convs.
- `mode="stacked"`: one coarse-grid encoder (like the coarser branch) on cat[msi, sar] after average-pooling the
  finer input by `ratio`; `mode="sar"` / `"msi"`: that sensor's branch alone, with its dual-mode structure. These are
  the paper's three baselines, rebuilt in this family (upstream does not publish them).

Measured here (torch CPU build, 2-vCPU VM shared with other jobs, torch.set_num_threads(2), float32, random init):

    paper config 14,686,018 parameters (Keras' count_params() also counts the BN moving mean and variance:
        14,695,106)
    demo config 920,993 parameters; batch 4, coarse 128 px, ratio 4, MSI finer (MSI 512 px, SAR 128 px),
        one forward + backward: about 1.0 s
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (part of this module's API)

__all__ = ["VisualIcedConfig", "VisualIced", "gaussian_resize", "count_parameters"]

MODES = ("dual", "stacked", "sar", "msi")
SENSORS = ("sar", "msi")
GRIDS = ("coarse", "fine")
GAUSS_RADIUS = 1.5   # tf.image.resize(method="gaussian"): support 3 px, sigma = radius / 3
HE_NORMAL_TRUNC = 0.87962566103423978  # Keras he_normal divides std by this to undo the +-2 std truncation


@dataclass(frozen=True, kw_only=True)
class VisualIcedConfig(DictConfig):
    """Constructor arguments of :class:`VisualIced` (defaults: upstream's structure with 1-channel SAR, 1 logit)."""

    sar_channels: int = 1          # HH (upstream replicates HH to 3 channels; imported weights: 3)
    msi_channels: int = 3          # upstream MODIS bands 3-6-7
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)   # VGG16 block widths (upstream)
    ratio: int = 3                 # integer resolution ratio between the two grids
    finer: str = "sar"             # which sensor is on the finer grid ("sar" upstream, "msi" for Sentinel-2 + S1 EW)
    output_grid: str = "coarse"    # "coarse" (upstream: the coarser grid) or "fine"
    mode: str = "dual"             # "dual" | "stacked" | "sar" | "msi" (see the module docstring)
    classes: int = 1               # 1 = binary ice logit; 2 = upstream's head (use channel 1)
    dropout: float = 0.2           # decoder dropout (upstream Dropout(0.2))
    bn_eps: float = 1e-3           # Keras BatchNormalization default (torch's is 1e-5): matters for imported weights
    bn_momentum: float = 0.01      # torch convention; Keras momentum 0.99 == torch 0.01

    def __post_init__(self) -> None:
        # JSON gives lists and may give floats: normalise, then validate.
        if isinstance(self.widths, (str, bytes)) or not hasattr(self.widths, "__len__"):
            raise ValueError(f"VisualIcedConfig.widths must be a sequence of ints, got {self.widths!r}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        for name in ("sar_channels", "msi_channels", "ratio", "classes"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("dropout", "bn_eps", "bn_momentum"):
            object.__setattr__(self, name, float(getattr(self, name)))

        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths needs at least 2 positive block widths (finer branch: all, coarser branch: "
                             f"all but the last), got {self.widths}")
        for name in ("sar_channels", "msi_channels", "ratio", "classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"VisualIcedConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name, value, valid in (("finer", self.finer, SENSORS), ("output_grid", self.output_grid, GRIDS),
                                   ("mode", self.mode, MODES)):
            if value not in valid:
                raise ValueError(f"VisualIcedConfig.{name} must be one of {valid}, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def coarser(self) -> str:
        return "msi" if self.finer == "sar" else "sar"

    @property
    def size_multiple(self) -> int:
        """The coarse-grid H and W must be multiples of this: 2x2 pools between the len(widths) - 1 coarse levels."""
        return 2 ** (len(self.widths) - 2)

    def in_channels(self, sensor: str) -> int:
        return self.sar_channels if sensor == "sar" else self.msi_channels

    @classmethod
    def paper(cls) -> VisualIcedConfig:
        """Upstream's exact network: 3-channel SAR (HH replicated), 3 MODIS bands, SAR 3x finer, 2-channel head."""
        return cls(sar_channels=3, msi_channels=3, classes=2)

    @classmethod
    def demo(cls, **overrides) -> VisualIcedConfig:
        """Narrow (widths 16-128, 1/4 of upstream's), for training on 2 CPU cores at 96-192 px coarse patches.
        BN momentum 0.1 (torch's default) so running statistics settle within a short run."""
        return cls(**{"widths": (16, 32, 64, 128, 128), "bn_momentum": 0.1, **overrides})


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _gaussian_weights(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n_out, n_in] resampling matrix of TensorFlow's Gaussian resize (ScaleAndTranslate, no translation).

    Output pixel o samples the input at (o + 0.5) * n_in / n_out; input pixels whose centres lie within 1.5 px get
    exp(-d^2 / (2 * 0.5^2)), and each row is normalised over the in-bounds pixels (so borders are not darkened).
    When upsampling the kernel is not widened, with or without antialiasing; downsampling is never needed here.
    """
    sample = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)       # [n_out]
    dist = (torch.arange(n_in, dtype=torch.float64) + 0.5)[None, :] - sample[:, None]  # [n_out, n_in]
    sigma = GAUSS_RADIUS / 3
    w = torch.exp(-dist ** 2 / (2 * sigma ** 2)) * (dist.abs() < GAUSS_RADIUS)
    return (w / w.sum(1, keepdim=True)).to(device=device, dtype=dtype)


def gaussian_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, C, h, w] -> [B, C, H, W], upstream's `tf.image.resize(..., method="gaussian")` (separable, exact)."""
    rows = _gaussian_weights(x.shape[-2], size[0], x.dtype, x.device)   # [H, h]
    cols = _gaussian_weights(x.shape[-1], size[1], x.dtype, x.device)   # [W, w]
    x = torch.einsum("Hh,bchw->bcHw", rows, x)
    return torch.einsum("Ww,bcHw->bcHW", cols, x)


def _keras_glorot(conv: nn.Conv2d) -> None:
    """Keras Conv2D default: Glorot-uniform kernel, zero bias."""
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)


def _keras_he_normal(conv: nn.Conv2d) -> None:
    """Keras he_normal (upstream's decoder convs): truncated normal, std sqrt(2 / fan_in) before truncation."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    std = (2.0 / fan_in) ** 0.5 / HE_NORMAL_TRUNC
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)


# ----------------------------------------------------------------------------------------------------------------
# Encoder and decoder


class VggEncoder(nn.Module):
    """VGG blocks of two 3x3 conv + ReLU + BN; attributes `block{i}_conv{j}` / `block{i}_bn{j}` (Keras names).

    The pool in front of block 2 is `first_pool` x `first_pool` with that stride (upstream's 3x3 stride-3 pool brings
    the finer grid onto the coarser one); the others are 2x2. Returns every block's conv2 ReLU output (the taps).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], first_pool: int, config: VisualIcedConfig):
        super().__init__()
        self.blocks = len(widths)
        self.first_pool = first_pool
        cin = in_channels
        for i, width in enumerate(widths, start=1):
            self.add_module(f"block{i}_conv1", nn.Conv2d(cin, width, 3, padding=1))
            self.add_module(f"block{i}_bn1", nn.BatchNorm2d(width, eps=config.bn_eps, momentum=config.bn_momentum))
            self.add_module(f"block{i}_conv2", nn.Conv2d(width, width, 3, padding=1))
            if i < self.blocks:  # upstream has no BN after the deepest conv: nothing reads it
                self.add_module(f"block{i}_bn2",
                                nn.BatchNorm2d(width, eps=config.bn_eps, momentum=config.bn_momentum))
            cin = width

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i in range(1, self.blocks + 1):
            if i > 1:
                pool = self.first_pool if i == 2 else 2
                x = F.max_pool2d(x, pool, pool)                                   # [B, C, H / pool, W / pool]
            x = getattr(self, f"block{i}_bn1")(F.relu(getattr(self, f"block{i}_conv1")(x)))
            tap = F.relu(getattr(self, f"block{i}_conv2")(x))                    # [B, w_i, H_i, W_i]
            taps.append(tap)
            if i < self.blocks:
                x = getattr(self, f"block{i}_bn2")(tap)
        return taps


class UpStage(nn.Module):
    """Upstream's `upsampleLayer`: Gaussian resize onto the skip's grid, cat[up, skip], 1x1 conv + ReLU, BN,
    dropout, 1x1 conv + ReLU, BN."""

    def __init__(self, in_channels: int, skip_channels: int, mid: int, out: int, config: VisualIcedConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + skip_channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid, eps=config.bn_eps, momentum=config.bn_momentum)
        self.drop = nn.Dropout(config.dropout)
        self.conv2 = nn.Conv2d(mid, out, 1)
        self.bn2 = nn.BatchNorm2d(out, eps=config.bn_eps, momentum=config.bn_momentum)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        x = gaussian_resize(x, size)                                             # [B, Cin, H, W]
        if skip is not None:
            x = torch.cat([x, skip], 1)                                          # [B, Cin + Cskip, H, W]
        x = self.drop(self.bn1(F.relu(self.conv1(x))))
        return self.bn2(F.relu(self.conv2(x)))                                  # [B, out, H, W]


class Decoder(nn.Module):
    """Stages `up1`.. from the deepest level to level 0 (coarse grid), then `up_fine` with output_grid="fine"."""

    def __init__(self, skip_channels: list[int], fine_skip: int, config: VisualIcedConfig):
        super().__init__()
        w = config.widths
        self.stages = len(skip_channels) - 1
        cin = skip_channels[-1]
        for j, level in enumerate(range(self.stages - 1, -1, -1), start=1):
            # upstream halves the width after the first 1x1 conv except at the last stage (64 -> 64)
            out = w[max(level - 1, 0)]
            self.add_module(f"up{j}", UpStage(cin, skip_channels[level], w[level], out, config))
            cin = out
        self.up_fine = UpStage(cin, fine_skip, w[0], w[0], config) if config.output_grid == "fine" else None

    def forward(self, levels: list[Tensor], fine: Tensor | None, fine_size: tuple[int, int]) -> Tensor:
        x = levels[-1]
        for j, level in enumerate(range(self.stages - 1, -1, -1), start=1):
            x = getattr(self, f"up{j}")(x, levels[level], tuple(levels[level].shape[-2:]))
        if self.up_fine is not None:
            x = self.up_fine(x, fine, fine_size)
        return x


# ----------------------------------------------------------------------------------------------------------------
# The network


class VisualIced(nn.Module):
    """`forward(sar, msi)` -> logits [B, classes, H, W] on the coarse grid (or the fine one).

    sar [B, sar_channels, Hs, Ws], msi [B, msi_channels, Hm, Wm]; the finer one is exactly `ratio` x the coarser in
    H and W, and the coarse H, W are multiples of `size_multiple`. Modes "sar" / "msi" ignore the other input (it may
    be None). BatchNorm: in training mode a sample's output depends on its batch; in eval mode it does not.
    """

    def __init__(self, config: VisualIcedConfig):
        super().__init__()
        if not isinstance(config, VisualIcedConfig):
            raise TypeError(f"VisualIced expects a VisualIcedConfig, got {type(config).__name__}")
        self.config = c = config
        self.size_multiple = c.size_multiple
        w = c.widths
        coarse_widths = w[:-1]
        skips = [0] * len(coarse_widths)   # channels per coarse level
        fine_skip = 0
        self.sar: VggEncoder | None = None
        self.msi: VggEncoder | None = None
        self.stacked: VggEncoder | None = None
        if c.mode == "stacked":
            self.stacked = VggEncoder(c.msi_channels + c.sar_channels, coarse_widths, 2, c)
            skips = list(coarse_widths)
        else:
            for sensor in (s for s in SENSORS if c.mode in ("dual", s)):
                finer = sensor == c.finer
                encoder = VggEncoder(c.in_channels(sensor), w if finer else coarse_widths, c.ratio if finer else 2, c)
                setattr(self, sensor, encoder)
                taps = w[1:] if finer else coarse_widths
                skips = [s + t for s, t in zip(skips, taps)]
                fine_skip = w[0] if finer else fine_skip
        self.decoder = Decoder(skips, fine_skip, c)
        self.output_layer = nn.Conv2d(w[0], c.classes, 1)

        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                (_keras_he_normal if name.startswith("decoder.") else _keras_glorot)(m)

    # ---- checks -----------------------------------------------------------------------------------------------
    def _coarse_size(self, sar: Tensor | None, msi: Tensor | None) -> tuple[int, int]:
        """Validate the inputs the mode reads; return the coarse grid's (H, W)."""
        c = self.config
        used = {"sar": sar, "msi": msi}
        needed = SENSORS if c.mode in ("dual", "stacked") else (c.mode,)
        sizes: dict[str, tuple[int, int]] = {}
        batch = set()
        for sensor in needed:
            x = used[sensor]
            if x is None or x.ndim != 4 or x.shape[1] != c.in_channels(sensor):
                got = None if x is None else tuple(x.shape)
                raise ValueError(f"mode {c.mode!r} needs {sensor} as [B, {c.in_channels(sensor)}, H, W], got {got}")
            sizes[sensor] = (x.shape[-2], x.shape[-1])
            batch.add(x.shape[0])
        if len(batch) > 1:
            raise ValueError(f"sar and msi batch sizes differ: {tuple(sar.shape)} vs {tuple(msi.shape)}")
        if c.finer in sizes:
            fh, fw = sizes[c.finer]
            if fh % c.ratio or fw % c.ratio:
                raise ValueError(f"{c.finer} ({fh}x{fw}) is the finer grid: its size must be a multiple of "
                                 f"ratio {c.ratio}")
            coarse = (fh // c.ratio, fw // c.ratio)
            if c.coarser in sizes and sizes[c.coarser] != coarse:
                raise ValueError(f"{c.finer} must be exactly {c.ratio}x {c.coarser} in H and W: got {c.finer} "
                                 f"{fh}x{fw} and {c.coarser} {sizes[c.coarser][0]}x{sizes[c.coarser][1]}")
        else:
            coarse = sizes[c.coarser]
        m = self.size_multiple
        if coarse[0] % m or coarse[1] % m:
            raise ValueError(f"coarse-grid size {coarse[0]}x{coarse[1]} is not a multiple of {m} (the U-Net depth): "
                             f"crop or pad so that the coarse grid is a multiple of {m} and the fine one of "
                             f"{m * c.ratio}")
        return coarse

    # ---- forward -----------------------------------------------------------------------------------------------
    def forward(self, sar: Tensor | None, msi: Tensor | None) -> Tensor:
        c = self.config
        coarse = self._coarse_size(sar, msi)
        fine_size = (coarse[0] * c.ratio, coarse[1] * c.ratio)
        inputs = {"sar": sar, "msi": msi}
        fine_tap: Tensor | None = None
        if self.stacked is not None:
            # the finer input averaged onto the coarse grid, then one encoder on both (msi channels first)
            pooled = {s: F.avg_pool2d(x, c.ratio) if s == c.finer else x for s, x in inputs.items()}
            levels = self.stacked(torch.cat([pooled["msi"], pooled["sar"]], 1))
        else:
            per_sensor: dict[str, list[Tensor]] = {}
            for sensor in SENSORS:        # msi-first concatenation below, as upstream's concat_1..4
                encoder = getattr(self, sensor)
                if encoder is None:
                    continue
                taps = encoder(inputs[sensor])
                if sensor == c.finer:
                    fine_tap, taps = taps[0], taps[1:]   # block1 runs on the fine grid; block2.. on coarse levels
                per_sensor[sensor] = taps
            ordered = [per_sensor[s] for s in ("msi", "sar") if s in per_sensor]
            levels = [torch.cat(level, 1) for level in zip(*ordered)]   # level k: [B, skip_k, H / 2^k, W / 2^k]
        x = self.decoder(levels, fine_tap, fine_size)
        return self.output_layer(x)                                     # [B, classes, H, W] logits
