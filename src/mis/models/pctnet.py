"""PCT-Net: parallel convolution + window-transformer network for 3D segmentation.

From MIS-FM (Wang et al. 2023, https://arxiv.org/abs/2306.16925; code https://github.com/openmedlab/MIS-FM,
``net/pct_net.py`` and ``net/transformer.py`` at commit 1506d65). This is an independent re-implementation. Module
and attribute names follow the upstream code, so an upstream ``state_dict`` (the ``model_state_dict`` entry of a
PyMIC checkpoint such as ``pctnet_ct10k_volf.pt``) loads 1:1 with ``strict=True`` (see docs/pctnet_keymap.md).

Layout (resolution mode 1, input 64x128x128, feature_chns 24/48/128/256/512):

    L0  24 ch  64x128x128  stem conv + ConvBlock                   (embedding / prediction head)
    L1  48 ch  64x64x64    in-plane max-pool + ConvBlock           (embedding / prediction head)
    L2 128 ch  32x32x32    ConvTransBlock e2 / d2                  (pyramid_ct)
    L3 256 ch  16x16x16    ConvTransBlock e3 / d3                  (pyramid_ct)
    L4 512 ch   8x8x8      ConvTransBlock e4 (bottleneck)          (pyramid_ct)

A ConvTransBlock sums a pre-activation CNN branch (BN-PReLU-conv x2) and a Swin-style 3D window-transformer branch.
All three embedding/head variants (resolution modes 0, 1, 2) are built, as upstream does; only the selected one runs.

Forward convention: ``model(x)`` with x of shape (B, in_chns, *input_size) returns logits (B, class_num, *input_size);
in training mode with ``multiscale_pred`` it returns a list of 4 logit tensors [L0, L1, L2, L3] (full resolution
first) for deep supervision. Upstream returns that list in eval mode too; here inference always gets one tensor.

Measured here (torch 2.14.1 CPU build, AVX2 2-vCPU VM, random init, float32, eval, torch.set_num_threads(2),
one forward of a 1x1xDxHxW patch, quiet machine; with other jobs running it was 2-8x slower):

    paper config  (24/48/128/256/512, 64x128x128, mode 1, 5 classes): 45,289,554 parameters, 12.5-13.1 s
    fast_config() (12/24/32/64/128,   32x64x64,   mode 1, 5 classes):  3,099,198 parameters, 0.24-0.30 s

bf16 autocast works on CPU but, without AVX-512 BF16, its convolutions are emulated and ~40x slower than float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (part of this module's API)

__all__ = ["PCTNetConfig", "PCTNet", "fast_config", "count_parameters"]

# Total downsampling (D, H, W) from the input to L2, the first transformer level, per resolution mode.
_MODE_SCALES: dict[int, tuple[int, int, int]] = {0: (4, 4, 4), 1: (2, 4, 4), 2: (1, 4, 4)}
# Per resolution mode: (conv_dims, down_dims) of the L0/L1 embedding and head; 2 = in-plane only (1x3x3 conv,
# 1x2x2 pooling), 3 = full 3D.
_MODE_DIMS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((3, 3), (3, 3)),
    ((2, 3), (2, 3)),
    ((2, 2), (2, 2)),
)


@dataclass(frozen=True, kw_only=True)
class PCTNetConfig(DictConfig):
    """Constructor arguments of :class:`PCTNet` (the ``[network]`` section of the upstream config)."""

    class_num: int  # output classes including background (the VolF pretext task uses 5)
    input_size: tuple[int, int, int]  # (D, H, W) patch size; fixes the transformer token count
    in_chns: int = 1  # input channels (1 for CT)
    # channels at L0..L4 (paper/demo value; upstream's default is 32, 64, 128, 256, 512)
    feature_chns: tuple[int, int, int, int, int] = (24, 48, 128, 256, 512)
    # dropout at L0..L4; at L2..L4 the same rate is also the attention, MLP and token dropout
    dropout: tuple[float, float, float, float, float] = (0.0, 0.0, 0.2, 0.2, 0.2)
    depths: tuple[int, int, int] = (2, 2, 2)  # Swin blocks per transformer branch at L2, L3, L4
    num_heads: tuple[int, int, int] = (4, 8, 16)  # attention heads at L2, L3, L4 (must divide feature_chns[2:])
    # cubic window side at L2, L3, L4; becomes the smallest token-grid side (and unshifted) when that side <= window
    window_sizes: tuple[int, int, int] = (6, 6, 6)
    resolution_mode: int = 1  # downsampling before L2: 0 -> (4, 4, 4), 1 -> (2, 4, 4), 2 -> (1, 4, 4)
    multiscale_pred: bool = True  # deep-supervision outputs at L0..L3 (returned in training mode only)
    mlp_ratio: float = 4.0  # transformer MLP hidden width / channels (fixed upstream)
    qkv_bias: bool = True  # bias in the q/k/v projection (fixed upstream)
    drop_path: float = 0.2  # stochastic-depth rate, the same for every Swin block (fixed upstream)

    def __post_init__(self) -> None:
        # Normalise lists (from JSON) to tuples with plain Python scalars, then validate.
        def norm(name: str, kind: type, length: int) -> None:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != length:
                raise ValueError(f"PCTNetConfig.{name} must be a sequence of {length} values, got {value!r}")
            converted = tuple(kind(v) for v in value)
            if converted != tuple(value):
                raise ValueError(f"PCTNetConfig.{name} must hold {kind.__name__} values, got {value!r}")
            object.__setattr__(self, name, converted)

        norm("input_size", int, 3)
        norm("feature_chns", int, 5)
        norm("dropout", float, 5)
        norm("depths", int, 3)
        norm("num_heads", int, 3)
        norm("window_sizes", int, 3)
        for name in ("class_num", "in_chns", "resolution_mode"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        object.__setattr__(self, "drop_path", float(self.drop_path))
        object.__setattr__(self, "multiscale_pred", bool(self.multiscale_pred))
        object.__setattr__(self, "qkv_bias", bool(self.qkv_bias))

        if self.class_num < 1 or self.in_chns < 1:
            raise ValueError(f"class_num and in_chns must be >= 1, got {self.class_num} and {self.in_chns}")
        if self.resolution_mode not in _MODE_SCALES:
            raise ValueError(f"resolution_mode must be 0, 1 or 2, got {self.resolution_mode}")
        for name in ("feature_chns", "depths", "num_heads", "window_sizes"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"PCTNetConfig.{name} must be positive, got {getattr(self, name)}")
        if not all(0.0 <= p < 1.0 for p in (*self.dropout, self.drop_path)):
            raise ValueError(f"dropout and drop_path must be in [0, 1), got {self.dropout} and {self.drop_path}")
        for level, (chns, heads) in enumerate(zip(self.feature_chns[2:], self.num_heads), start=2):
            if chns % heads:
                raise ValueError(f"num_heads {heads} must divide feature_chns {chns} at level L{level}")
        # L2 is input_size / scale, then two more 2x poolings to L4: every side must divide evenly.
        need = tuple(4 * s for s in self.scale)
        if any(n % k for n, k in zip(self.input_size, need)):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by {need} for resolution_mode {self.resolution_mode}"
            )

    @property
    def scale(self) -> tuple[int, int, int]:
        """Downsampling (D, H, W) from the input to L2 for this resolution mode."""
        return _MODE_SCALES[self.resolution_mode]

    @property
    def token_size(self) -> tuple[int, int, int]:
        """(D, H, W) of the L2 feature map, i.e. the first transformer's token grid."""
        return tuple(n // s for n, s in zip(self.input_size, self.scale))  # type: ignore[return-value]


def fast_config(class_num: int, input_size: tuple[int, int, int] = (32, 64, 64), **overrides: Any) -> PCTNetConfig:
    """A CPU-sized PCT-Net: same module structure, fewer channels, 4^3 windows.

    L0/L1 keep 12/24 channels rather than 8/16: for a batch-1 input PyTorch's CPU convolution falls back to its slow
    native 3D kernel when N*C*D*H <= 20480, which made 8/16 channels 2.4x slower (0.58 s vs 0.24 s) at 32x64x64.
    ``overrides`` replace any other :class:`PCTNetConfig` field (e.g. ``resolution_mode=0``).
    """
    base = PCTNetConfig(
        class_num=class_num,
        input_size=tuple(input_size),  # type: ignore[arg-type]
        feature_chns=(12, 24, 32, 64, 128),
        num_heads=(2, 4, 8),
        window_sizes=(4, 4, 4),
    )
    return replace(base, **overrides)



# ----------------------------------------------------------------------------------------------------------------
# CNN parts (pre-activation: BatchNorm3d -> PReLU -> conv)


def _conv3(dim: int) -> dict[str, tuple[int, int, int]]:
    """Kernel/padding of a '3x3' conv: in-plane (1, 3, 3) for dim 2, full (3, 3, 3) for dim 3."""
    assert dim in (2, 3), f"conv dim must be 2 or 3, got {dim}"
    if dim == 2:
        return {"kernel_size": (1, 3, 3), "padding": (0, 1, 1)}
    return {"kernel_size": (3, 3, 3), "padding": (1, 1, 1)}


def _pool2(dim: int) -> tuple[int, int, int]:
    """Kernel (= stride) of a 2x down/up-sampling: in-plane (1, 2, 2) for dim 2, (2, 2, 2) for dim 3."""
    assert dim in (2, 3), f"sampling dim must be 2 or 3, got {dim}"
    return (1, 2, 2) if dim == 2 else (2, 2, 2)


class ConvBlock(nn.Module):
    """(BN -> PReLU -> conv) twice, dropout before the second conv; no residual."""

    def __init__(self, in_channels: int, out_channels: int, *, dim: int, dropout_p: float) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(  # indices 0..6 are part of the checkpoint key names
            nn.BatchNorm3d(in_channels),
            nn.PReLU(),
            nn.Conv3d(in_channels, out_channels, **_conv3(dim)),
            nn.BatchNorm3d(out_channels),
            nn.PReLU(),
            nn.Dropout(dropout_p),
            nn.Conv3d(out_channels, out_channels, **_conv3(dim)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_conv(x)  # (B, Cin, D, H, W) -> (B, Cout, D, H, W)


class DownSample(nn.Module):
    """2x max-pool (in-plane or 3D), then BN -> PReLU -> conv to the next level's channels."""

    def __init__(self, in_channels: int, out_channels: int, *, down_dim: int, conv_dim: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(_pool2(down_dim))
        self.conv = nn.Sequential(
            nn.BatchNorm3d(in_channels), nn.PReLU(), nn.Conv3d(in_channels, out_channels, **_conv3(conv_dim))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))  # (B, Cin, D, H, W) -> (B, Cout, D/sd, H/2, W/2)


class ConvLayer(nn.Module):
    """BN -> PReLU -> 1x1x1 conv: the class-logit heads."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.BatchNorm3d(in_channels), nn.PReLU(), nn.Conv3d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, D, H, W) -> (B, class_num, D, H, W)


class UpCatBlock(nn.Module):
    """Transposed-conv 2x upsampling of the coarse map, concat with the skip, BN -> PReLU -> conv."""

    def __init__(self, chns_l: int, chns_h: int, *, up_dim: int, conv_dim: int) -> None:
        super().__init__()
        k = _pool2(up_dim)
        self.up = nn.Sequential(
            nn.BatchNorm3d(chns_h), nn.PReLU(), nn.ConvTranspose3d(chns_h, chns_l, kernel_size=k, stride=k)
        )
        self.conv = nn.Sequential(
            nn.BatchNorm3d(2 * chns_l), nn.PReLU(), nn.Conv3d(2 * chns_l, chns_l, **_conv3(conv_dim))
        )

    def forward(self, x_l: torch.Tensor, x_h: torch.Tensor) -> torch.Tensor:
        # x_l: skip (B, Cl, D, H, W); x_h: coarse (B, Ch, D/su, H/2, W/2)
        y = torch.cat([x_l, self.up(x_h)], dim=1)  # (B, 2*Cl, D, H, W), skip first
        return self.conv(y)  # (B, Cl, D, H, W)


# ----------------------------------------------------------------------------------------------------------------
# Swin-style 3D window transformer (tokens kept as (B, S, H, W, C))


class DropPath(nn.Module):
    """Stochastic depth: zero the residual branch of whole samples with probability p (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
        return x * mask / keep


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, *, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))  # (..., C) -> (..., C)


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, S, H, W, C) -> (B * nW, window**3, C); windows ordered batch, then s, h, w."""
    b, s, h, w, c = x.shape
    x = x.view(b, s // window, window, h // window, window, w // window, window, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)  # (B, nS, nH, nW, ws, wh, ww, C)
    return x.reshape(-1, window**3, c)


def _window_reverse(windows: torch.Tensor, window: int, size: tuple[int, int, int]) -> torch.Tensor:
    """(B * nW, window**3, C) -> (B, S, H, W, C); inverse of :func:`_window_partition`."""
    s, h, w = size
    c = windows.shape[-1]
    x = windows.view(-1, s // window, h // window, w // window, window, window, window, c)
    # x: (B, nS, nH, nW, ws, wh, ww, C)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)  # (B, nS, ws, nH, wh, nW, ww, C)
    return x.reshape(-1, s, h, w, c)


def _relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the (2w-1)^3-row bias table for N = window**3 tokens.

    Upstream flattens the per-axis offsets (each in [0, 2w-2]) with strides (3w-1, 2w-1, 1), not the collision-free
    ((2w-1)^2, 2w-1, 1) of other 3D Swin code; some offsets therefore share a table row. Kept as is so that
    pretrained bias tables mean the same thing (the buffer is also stored in checkpoints).
    """
    r = torch.arange(window)
    coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij")).flatten(1)  # (3, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 3)
    return rel[..., 0] * (3 * window - 1) + rel[..., 1] * (2 * window - 1) + rel[..., 2]


def _shift_regions(padded: tuple[int, int, int], window: int, shift: int) -> torch.Tensor:
    """(nW, N) id of the region each token of each shifted window came from (27 regions, 3 bands per axis).

    Tokens from different regions were glued together by the cyclic shift and must not attend to each other.
    """

    def bands(length: int) -> torch.Tensor:
        # 0: untouched, 1: last window minus the wrapped part, 2: the part wrapped around by the roll
        p = torch.arange(length)
        return (p >= length - window).long() + (p >= length - shift).long()

    sp, hp, wp = padded
    region = bands(sp)[:, None, None] * 9 + bands(hp)[None, :, None] * 3 + bands(wp)[None, None, :]  # (Sp, Hp, Wp)
    return _window_partition(region[None, ..., None], window).squeeze(-1)  # (nW, N)


def _region_mask(regions: torch.Tensor) -> torch.Tensor:
    """(nW, N) region ids -> (nW, N, N) float32 additive mask: 0 within a region, -100 across (as upstream)."""
    nw, n = regions.shape
    mask = torch.zeros(nw, n, n, dtype=torch.float32, device=regions.device)
    return mask.masked_fill_(regions[:, None, :] != regions[:, :, None], -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside cubic windows, with a learned relative position bias."""

    def __init__(
        self, dim: int, *, window_size: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"num_heads {num_heads} must divide dim {dim}"
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 3, num_heads))
        # persistent, as upstream: the index is part of the checkpoints
        self.register_buffer("relative_position_index", _relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape  # (B * nW, N, C)
        assert n == self.window_size**3, f"expected {self.window_size ** 3} tokens per window, got {n}"
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads)  # (B*nW, N, 3, heads, hd)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B*nW, heads, N, hd)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N*N, heads)
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # + (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            assert bw % nw == 0, f"{bw} windows are not a multiple of the mask's {nw} windows per sample"
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.view(1, nw, 1, n, n)  # (B, nW, heads, N, N)
            attn = attn.view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)  # (B*nW, N, heads*hd)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, both residual, on a fixed (S, H, W) token grid."""

    def __init__(
        self,
        dim: int,
        *,
        input_resolution: tuple[int, int, int],
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if min(self.input_resolution) <= window_size:
            # As upstream: one window as large as the smallest side, no shift.
            window_size, shift_size = min(self.input_resolution), 0
        assert 0 <= shift_size < window_size, f"shift {shift_size} must be in [0, window {window_size})"
        self.window_size = window_size
        self.shift_size = shift_size
        self.padded = tuple(math.ceil(n / window_size) * window_size for n in self.input_resolution)

        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        # Region ids (small, integer) rather than the (nW, N, N) mask itself, which is ~40 MB per shifted block at L2
        # of the paper config; the mask is rebuilt per forward as upstream does. Not a checkpoint entry.
        regions = _shift_regions(self.padded, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("shift_regions", regions, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h, w, c = x.shape  # (B, S, H, W, C)
        assert (s, h, w) == self.input_resolution, (
            f"transformer built for a {self.input_resolution} token grid, got {(s, h, w)}"
        )
        shortcut = x
        x = self.norm1(x)
        sp, hp, wp = self.padded
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h, 0, sp - s))  # zero tokens after the norm -> (B, Sp, Hp, Wp, C)
        shift = self.shift_size
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift, -shift), dims=(1, 2, 3))
        mask = _region_mask(self.shift_regions) if self.shift_regions is not None else None  # (nW, N, N)
        windows = self.attn(_window_partition(x, self.window_size), mask=mask)  # (B*nW, N, C)
        x = _window_reverse(windows, self.window_size, self.padded)  # (B, Sp, Hp, Wp, C)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift, shift), dims=(1, 2, 3))
        x = x[:, :s, :h, :w, :]  # (B, S, H, W, C)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks alternating regular and shifted (by window // 2) windows."""

    def __init__(
        self,
        dim: int,
        *,
        input_resolution: tuple[int, int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                input_resolution=input_resolution,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)  # (B, S, H, W, C)
        return x


class ConvTransBlock(nn.Module):
    """CNN branch + window-transformer branch, summed: conv(x) + trans(x) (the transformer keeps its residual)."""

    def __init__(
        self,
        chns: int,
        *,
        input_resolution: tuple[int, int, int],
        depth: int,
        num_head: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.conv = ConvBlock(chns, chns, dim=3, dropout_p=drop_rate)
        self.trans = BasicLayer(
            chns,
            input_resolution=input_resolution,
            depth=depth,
            num_heads=num_head,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=drop_path_rate,
        )
        self.norm_layer = nn.LayerNorm(chns)  # unused in forward (as upstream); kept so checkpoint keys match
        self.pos_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv(x)  # (B, C, S, H, W)
        tokens = self.pos_drop(x.permute(0, 2, 3, 4, 1))  # (B, S, H, W, C)
        x2 = self.trans(tokens).permute(0, 4, 1, 2, 3)  # (B, C, S, H, W)
        return (x1 + x2).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Network


class PatchEmbedding(nn.Module):
    """Input -> L0 (stem conv + ConvBlock) -> L1 (down + ConvBlock) -> L2 features (down only)."""

    def __init__(
        self,
        in_chns: int,
        ft_chns: tuple[int, int, int],
        *,
        conv_dims: tuple[int, int],
        down_dims: tuple[int, int],
        dropout: tuple[float, float],
    ) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chns, ft_chns[0], **_conv3(conv_dims[0]))
        self.conv0 = ConvBlock(ft_chns[0], ft_chns[0], dim=conv_dims[0], dropout_p=dropout[0])
        self.conv1 = ConvBlock(ft_chns[1], ft_chns[1], dim=conv_dims[1], dropout_p=dropout[1])
        self.down1 = DownSample(ft_chns[0], ft_chns[1], down_dim=down_dims[0], conv_dim=conv_dims[1])
        self.down2 = DownSample(ft_chns[1], ft_chns[2], down_dim=down_dims[1], conv_dim=3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = self.conv0(self.proj(x))  # (B, F0, D, H, W)
        x1 = self.conv1(self.down1(x0))  # (B, F1, L1 grid)
        x2 = self.down2(x1)  # (B, F2, L2 grid = token grid)
        return x0, x1, x2


class PyramidConvTrans(nn.Module):
    """L2..L4 U-shaped pyramid of ConvTransBlocks, with the L2/L3 deep-supervision heads."""

    def __init__(
        self,
        ft_chns: tuple[int, int, int],
        *,
        input_size: tuple[int, int, int],
        dropout: tuple[float, float, float],
        depths: tuple[int, int, int],
        num_heads: tuple[int, int, int],
        window_sizes: tuple[int, int, int],
        class_num: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.down3 = DownSample(ft_chns[0], ft_chns[1], down_dim=3, conv_dim=3)
        self.down4 = DownSample(ft_chns[1], ft_chns[2], down_dim=3, conv_dim=3)
        self.up3 = UpCatBlock(ft_chns[0], ft_chns[1], up_dim=3, conv_dim=3)
        self.up4 = UpCatBlock(ft_chns[1], ft_chns[2], up_dim=3, conv_dim=3)

        grids = [tuple(input_size)]
        for _ in range(2):
            grids.append(tuple(n // 2 for n in grids[-1]))

        def block(level: int) -> ConvTransBlock:  # level 0, 1, 2 = L2, L3, L4
            return ConvTransBlock(
                ft_chns[level],
                input_resolution=grids[level],
                depth=depths[level],
                num_head=num_heads[level],
                window_size=window_sizes[level],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_rate=dropout[level],
                attn_drop_rate=dropout[level],
                drop_path_rate=drop_path,
            )

        self.convtrans_e2 = block(0)
        self.convtrans_d2 = block(0)
        self.convtrans_e3 = block(1)
        self.convtrans_d3 = block(1)
        self.convtrans_e4 = block(2)
        self.out_conv2 = ConvLayer(ft_chns[0], class_num)
        self.out_conv3 = ConvLayer(ft_chns[1], class_num)

    def forward(self, x: torch.Tensor, *, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x2 = self.convtrans_e2(x)  # (B, F2, L2 grid)
        x3 = self.convtrans_e3(self.down3(x2))  # (B, F3, L2 grid / 2)
        x4 = self.convtrans_e4(self.down4(x3))  # (B, F4, L2 grid / 4)
        x_d3 = self.convtrans_d3(self.up4(x3, x4))  # (B, F3, L2 grid / 2)
        x_d2 = self.convtrans_d2(self.up3(x2, x_d3))  # (B, F2, L2 grid)
        aux = [self.out_conv2(x_d2), self.out_conv3(x_d3)] if with_aux else []
        return x_d2, aux


class PredictionHead(nn.Module):
    """L2 -> L1 -> L0 decoder with transposed-conv upsampling, skip concatenation and the class-logit heads."""

    def __init__(
        self,
        ft_chns: tuple[int, int, int],
        *,
        conv_dims: tuple[int, int],
        down_dims: tuple[int, int],
        dropout: tuple[float, float],
        class_num: int,
    ) -> None:
        super().__init__()
        self.up1 = UpCatBlock(ft_chns[0], ft_chns[1], up_dim=down_dims[0], conv_dim=conv_dims[0])
        self.up2 = UpCatBlock(ft_chns[1], ft_chns[2], up_dim=down_dims[1], conv_dim=conv_dims[1])
        self.conv0 = ConvBlock(ft_chns[0], ft_chns[0], dim=conv_dims[0], dropout_p=dropout[0])
        self.conv1 = ConvBlock(ft_chns[1], ft_chns[1], dim=conv_dims[1], dropout_p=dropout[1])
        self.out_conv0 = ConvLayer(ft_chns[0], class_num)
        self.out_conv1 = ConvLayer(ft_chns[1], class_num)

    def forward(
        self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, *, with_aux: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x_d1 = self.conv1(self.up2(x1, x2))  # (B, F1, L1 grid)
        x_d0 = self.conv0(self.up1(x0, x_d1))  # (B, F0, D, H, W)
        return self.out_conv0(x_d0), ([self.out_conv1(x_d1)] if with_aux else [])


class PCTNet(nn.Module):
    """PCT-Net built from a :class:`PCTNetConfig`; see the module docstring for the forward convention."""

    def __init__(self, config: PCTNetConfig) -> None:
        super().__init__()
        if not isinstance(config, PCTNetConfig):
            raise TypeError(f"PCTNet expects a PCTNetConfig, got {type(config).__name__}")
        self.config = config
        self.resolution_mode = config.resolution_mode
        self.multiscale_pred = config.multiscale_pred
        f, p = config.feature_chns, config.dropout

        self.embeddings = nn.ModuleList(
            PatchEmbedding(config.in_chns, f[:3], conv_dims=cd, down_dims=dd, dropout=p[:2]) for cd, dd in _MODE_DIMS
        )
        self.pyramid_ct = PyramidConvTrans(
            f[2:],
            input_size=config.token_size,
            dropout=p[2:],
            depths=config.depths,
            num_heads=config.num_heads,
            window_sizes=config.window_sizes,
            class_num=config.class_num,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            drop_path=config.drop_path,
        )
        self.pred_heads = nn.ModuleList(
            PredictionHead(f[:3], conv_dims=cd, down_dims=dd, dropout=p[:2], class_num=config.class_num)
            for cd, dd in _MODE_DIMS
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        cfg = self.config
        expected = (cfg.in_chns, *cfg.input_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PCTNet was built for input (B, {', '.join(map(str, expected))}) = (B, C, D, H, W) "
                f"but got {tuple(x.shape)}; input_size is fixed at construction (transformer token grid "
                f"{cfg.token_size}), so pad or crop patches to input_size {cfg.input_size}"
            )
        with_aux = self.multiscale_pred and self.training
        x0, x1, x2 = self.embeddings[self.resolution_mode](x)
        x2, aux_pyramid = self.pyramid_ct(x2, with_aux=with_aux)  # (B, F2, token grid)
        out, aux_head = self.pred_heads[self.resolution_mode](x0, x1, x2, with_aux=with_aux)  # (B, K, D, H, W)
        if with_aux:
            return [out, *aux_head, *aux_pyramid]  # logits at L0 (full), L1, L2, L3
        return out
