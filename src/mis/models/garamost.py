"""GaraMoSt (Xu et al., AAAI 2025): two DSA frames + a timestep -> the frame in between.

From https://github.com/ZyoungXu/GaraMoSt (commit da9f670, ``model/feature_extractor.py``,
``model/flow_estimation.py``, ``model/refine.py``, ``model/warplayer.py``, ``config.py``); an independent
re-implementation. Module and attribute names are upstream's, so a released ``.pkl`` loads by name once DDP's
``module.`` prefix is stripped (docs/garamost_keymap.md). Built on EMA-VFI, with its inter-frame window attention
replaced by a Lambda layer ("InterFrameLambda").

Layout (paper config, F = 32, input [B, 3, H, W]; both frames run through the encoder as one batch [img0; img1]):

    feature_bone (MotionFormer, the encoder)
      block1           ConvBlock                      32 ch  1       struct_features[0]
      patch_embed2..4  stride-2 conv + ConvBlock      64/128/256 ch  1/2, 1/4, 1/8   struct_features[1..3]
      patch_embed5     CrossScalePatchEmbed(scales 1, 1/2, 1/4)  -> 4 MotionFormerBlocks -> norm5
                       256 ch 1/8 struct_features[4], motion 4 x 64 ch    (lambda granularity r = lambda_r[0])
      patch_embed6     CrossScalePatchEmbed(scales 1/2, 1/4, 1/8) -> 4 MotionFormerBlocks -> norm6
                       512 ch 1/16 struct_features[5], motion 4 x 128 ch  (r = lambda_r[1])
      Stages 5 and 6 read the conv features in parallel (the multi-granularity branch), not one after the other.
    block (two flow/mask heads, coarse to fine: stage 6 at scale 16, then stage 5 at scale 8)
      input [t * motion_A, (1 - t) * motion_B, struct_A, struct_B], pixel-shuffled x4, + the resized frames
      (and for the second head the warped frames, the mask and the flow so far) -> 3 conv+PReLU -> 4 flow + 1 mask
      channels, upsampled to full size; the second head adds to the first.
    unet (the refiner, base width 2c = 64): frames, warped frames, mask, flow and the backward-warped structure
      features of both frames -> residual 2 * sigmoid - 1; prediction = clamp(blend + residual, 0, 1).

The timestep enters only by scaling the motion features (t for frame 0's, 1 - t for frame 1's), so the encoder runs
once per pair and the decoder once per timestep (`multi_inference`), and t is a per-sample input here (upstream
takes one float per call and builds its tensor on the GPU; this module builds every tensor on the input's device).

Two additions for training from scratch: the last conv of each flow head and of the refiner start at zero (flow 0,
residual 0; loaded weights replace this), and `time_mask_prior` adds logit(1 - t) to the mask logits (keep it off for
imported weights, which were trained without it), so an untrained network starts as linear blending
(1 - t) * img0 + t * img1.

The inter-frame lambda normalises its queries and values with BatchNorm (as upstream): in training mode a sample's
output depends on the rest of the batch; in eval mode it does not.

Measured here (torch 2.14.1 CPU build, 2-vCPU VM, torch.set_num_threads(2), float32, random init):

    paper config (62,285,911 parameters), 1x3x1024x1024, inference: encode 11.8 s, one decode 14.9 s
        (the full-resolution refiner costs more than the encoder); 1 timestep 27.6 s, 3 timesteps 52.6 s
    demo config (1,353,245 parameters), batch 4, 1x192x192, one forward + backward: 0.45-0.55 s
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (part of this module's API)

__all__ = ["GaraMoStConfig", "GaraMoSt", "Encoded", "Decoded", "warp", "count_parameters"]

PAD_MULTIPLE = 32  # upstream pads to 32 (InputPadder); the network itself needs multiples of 16, its deepest stride
CONV_STAGES = 4    # encoder stages 1-4 are convolutional, 5-6 are MotionFormer (lambda) stages
TIME_EPS = 1e-6    # t is clamped to [eps, 1 - eps] before logit(1 - t)


def _upstream_dims(f: int, depths: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The widths upstream's `init_model_config(F, depth)` derives from its base width F."""
    return {
        "embed_dims": (f, 2 * f, 4 * f, 8 * f, 8 * f, 16 * f),
        "motion_dims": (0, 0, 0, 0, 8 * f // depths[-2], 16 * f // depths[-1]),
        "hidden_dims": (4 * f, 4 * f),
    }


@dataclass(frozen=True, kw_only=True)
class GaraMoStConfig(DictConfig):
    """Constructor arguments of :class:`GaraMoSt`; names are those of upstream's `config.py` (defaults: the released
    single-frame model, `inf1_r7-r7_best.pkl`)."""

    in_chans: int = 3                 # 1 = grayscale-native (our demo), 3 = upstream (imported weights)
    # channels of encoder stages 1..6 (upstream F, 2F, 4F, 8F, 8F, 16F with F = 32)
    embed_dims: tuple[int, ...] = (32, 64, 128, 256, 256, 512)
    # convs per conv stage (1-4), MotionFormerBlocks per lambda stage (5, 6)
    depths: tuple[int, ...] = (2, 2, 2, 2, 4, 4)
    # motion channels per MotionFormerBlock: 0 for the conv stages; upstream 8F / depths[4] and 16F / depths[5]
    motion_dims: tuple[int, ...] = (0, 0, 0, 0, 64, 128)
    num_heads: tuple[int, int] = (4, 8)            # lambda query heads at stages 5, 6
    mlp_ratios: tuple[float, float] = (4.0, 4.0)   # MLP hidden width / channels at stages 5, 6
    lambda_dim_k: tuple[int, int] = (16, 16)       # lambda key depth
    lambda_dim_u: tuple[int, int] = (1, 1)         # lambda intra-depth
    # "context-aware granularity": receptive field r x r of the positional lambda (odd); (7, 7) for 1 frame,
    # (7, 29) for the released 2- and 3-frame models
    lambda_r: tuple[int, int] = (7, 7)
    scales: tuple[int, int, int] = (4, 8, 16)      # flow-head working scales; the heads use 16 then 8 (4 unused)
    hidden_dims: tuple[int, int] = (128, 128)      # conv widths of the scale-8 and scale-16 heads (upstream 4F)
    c: int = 32                                    # upstream config 'c' (= F): the refine U-Net's base width is 2c
    time_mask_prior: bool = False                  # add logit(1 - t) to the mask logits (not upstream; for training)

    def __post_init__(self) -> None:
        # JSON gives lists: make them tuples of the right type, then validate.
        def norm(name: str, kind: type, length: int) -> None:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != length:
                raise ValueError(f"GaraMoStConfig.{name} must be a sequence of {length} values, got {value!r}")
            object.__setattr__(self, name, tuple(kind(v) for v in value))

        for name in ("embed_dims", "depths", "motion_dims"):
            norm(name, int, 6)
        for name in ("num_heads", "lambda_dim_k", "lambda_dim_u", "lambda_r", "hidden_dims"):
            norm(name, int, 2)
        norm("mlp_ratios", float, 2)
        norm("scales", int, 3)
        object.__setattr__(self, "in_chans", int(self.in_chans))
        object.__setattr__(self, "c", int(self.c))
        object.__setattr__(self, "time_mask_prior", bool(self.time_mask_prior))

        positive = ("embed_dims", "depths", "num_heads", "lambda_dim_k", "lambda_dim_u", "lambda_r", "hidden_dims")
        for name in positive:
            if min(getattr(self, name)) < 1:
                raise ValueError(f"GaraMoStConfig.{name} must be positive, got {getattr(self, name)}")
        if self.in_chans < 1 or self.c < 1:
            raise ValueError(f"in_chans and c must be >= 1, got {self.in_chans} and {self.c}")
        if self.scales[1:] != (8, 16):
            raise ValueError(f"the two flow heads work at scales 8 and 16 (the stage 5 / 6 strides), got {self.scales}")
        for i, (stage, heads) in enumerate(zip(self.lambda_stages, self.num_heads)):
            dim, motion = self.embed_dims[stage], self.motion_dims[stage]
            if dim % heads or motion < 1 or motion % heads:
                raise ValueError(f"stage {stage + 1}: num_heads {heads} must divide embed_dims {dim} and a "
                                 f"positive motion_dims {motion}")
            if self.lambda_r[i] % 2 == 0:
                raise ValueError(f"lambda_r must be odd, got {self.lambda_r}")
            if self.head_in_planes(stage) * 2 % 16:
                raise ValueError(f"stage {stage + 1}: 2 x (depth x motion_dims + embed_dims) must be divisible by 16 "
                                 f"(pixel shuffle x4), got {2 * self.head_in_planes(stage)}")

    @property
    def lambda_stages(self) -> tuple[int, int]:
        """Indices (0-based) of the two MotionFormer stages."""
        return (CONV_STAGES, CONV_STAGES + 1)

    def head_in_planes(self, stage: int) -> int:
        """Channels per frame that stage `stage` hands a flow head: all blocks' motion features + structure."""
        return self.motion_dims[stage] * self.depths[stage] + self.embed_dims[stage]

    @classmethod
    def paper(cls, inter_frames: int = 1) -> GaraMoStConfig:
        """The released configuration (F = 32, RGB): r = (7, 7) for 1 in-between frame, (7, 29) for 2 and 3."""
        if inter_frames not in (1, 2, 3):
            raise ValueError(f"upstream releases models for 1, 2 or 3 in-between frames, not {inter_frames}")
        return cls(lambda_r=(7, 7) if inter_frames == 1 else (7, 29))

    @classmethod
    def demo(cls) -> GaraMoStConfig:
        """Grayscale and narrow, for training on a CPU: F = 8, one conv per conv stage, two MotionFormerBlocks per
        lambda stage, refine U-Net base width 8; about 1.35 M parameters."""
        depths = (1, 1, 1, 1, 2, 2)
        return cls(in_chans=1, depths=depths, **_upstream_dims(8, depths), num_heads=(2, 4), mlp_ratios=(2.0, 2.0),
                   lambda_dim_k=(8, 8), lambda_r=(7, 7), c=4, time_mask_prior=True)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: output(x) = image(x + flow(x)), flow [B, 2, H, W] in pixels (x, y); bilinear, border padding.

    Computed in at least float32 (the result too): in bfloat16 the sampling grid of a 1024-pixel side would be off by
    up to 4 pixels. Upstream gets the same from its float32 grid.
    """
    if image.dtype in (torch.float16, torch.bfloat16):
        image = image.float()
    if flow.dtype != image.dtype:
        flow = flow.type(image.dtype)
    b, _, h, w = flow.shape
    gx = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    gy = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    # pixels -> [-1, 1] units of the sampled image (align_corners=True: -1 and 1 are the corner pixel centres)
    fx = flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0)
    fy = flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)
    grid = torch.cat([gx + fx, gy + fy], 1).permute(0, 2, 3, 1)  # [B, H, W, 2]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _half_flow(flow: Tensor) -> Tensor:
    """Flow at half the resolution, in that resolution's pixels."""
    return F.interpolate(flow, scale_factor=0.5, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False) * 0.5


def _coordinate_grid(n: int, h: int, w: int, like: Tensor) -> Tensor:
    """[n, 2, h, w]: channel 0 the x coordinate, channel 1 the y coordinate, each from -1 to 1."""
    gx = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    gy = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    return torch.cat([gx, gy], 1)


def _tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """[B, h*w, C] -> [B, C, h, w]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def _conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + PReLU (one slope per channel); indices 0/1 are part of the key names."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def _init_weights(m: nn.Module) -> None:
    """Upstream's init for the encoder and the refiner (ViT-style Linear, He fan-out convs, unit LayerNorm)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# Encoder: MotionFormer


class ConvBlock(nn.Module):
    """`depth` x (3x3 conv + PReLU), no residual."""

    def __init__(self, in_dim: int, out_dim: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(in_dim if i == 0 else out_dim, out_dim, 3, 1, 1), nn.PReLU(out_dim)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # [B, Cin, H, W] -> [B, Cout, H, W]


class CrossScalePatchEmbed(nn.Module):
    """Three finer scales -> one map at twice the coarsest one's stride (tokens + LayerNorm).

    The coarsest input gets one stride-2 conv, the next 2 stride-4 convs with dilations 1, 2, the finest 4 stride-8
    convs with dilations 1..4 (multi-scale receptive fields); 7 maps of in_dims[0] channels, concatenated, 1x1 conv.
    """

    def __init__(self, in_dims: tuple[int, int, int], embed_dim: int):
        super().__init__()
        base = in_dims[0]
        self.layers = nn.ModuleList(
            nn.Conv2d(in_dims[-1 - i], base, 3, stride=2 ** (i + 1), padding=1 + j, dilation=1 + j)
            for i in range(len(in_dims)) for j in range(2 ** i)
        )
        self.proj = nn.Conv2d(base * len(self.layers), embed_dim, 1, 1)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, xs: Sequence[Tensor]) -> tuple[Tensor, int, int]:
        # xs: fine to coarse [B, in_dims[i], H_i, W_i]; layer k reads xs[-1 - i] in the order built above
        sources = [xs[-1 - i] for i in range(len(xs)) for _ in range(2 ** i)]
        x = self.proj(torch.cat([layer(s) for layer, s in zip(self.layers, sources)], 1))  # [B, E, h, w]
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w  # [B, h*w, E]


class InterFrameLambda(nn.Module):
    """Lambda layer across the two frames: queries from one frame, keys and values from the other.

    The batch holds [frame A; frame B]; rolling it by half pairs each sample with its partner. A content lambda
    (softmax keys x values, [dim_k, dim_v]) and a local positional lambda (a (1, r, r) Conv3d over the values,
    [dim_k, dim_v] per pixel) are applied to the queries (structure features) and to an embedding of the pixel
    coordinates (motion features: the coordinates "moved" by the partner's lambdas, minus where they started).
    """

    def __init__(self, dim: int, *, dim_k: int, r: int, heads: int, dim_u: int, motion_dim: int):
        super().__init__()
        assert dim % heads == 0 and motion_dim % heads == 0, f"heads {heads} must divide {dim} and {motion_dim}"
        assert r % 2 == 1, f"the positional lambda's receptive field r must be odd, got {r}"
        self.u, self.heads = dim_u, heads
        dim_v = dim // heads
        self.to_q = nn.Conv2d(dim, dim_k * heads, 1, bias=False)
        self.to_k = nn.Conv2d(dim, dim_k * dim_u, 1, bias=False)
        self.to_v = nn.Conv2d(dim, dim_v * dim_u, 1, bias=False)
        self.cor_embed = nn.Conv2d(2, dim_k * heads, 1, bias=True)
        self.motion_proj = nn.Conv2d(dim_k * heads, motion_dim, 1, bias=True)
        self.channel_compress = nn.Conv2d(dim, dim_k * heads, 1, bias=False)
        self.norm_q = nn.BatchNorm2d(dim_k * heads)
        self.norm_v = nn.BatchNorm2d(dim_v * dim_u)
        self.pos_conv = nn.Conv3d(dim_u, dim_k, (1, r, r), padding=(0, r // 2, r // 2))

    def _apply_lambdas(self, q: Tensor, content: Tensor, position: Tensor, h: int, w: int) -> Tensor:
        """Both lambdas applied to per-head queries q [B, heads, k, N] -> [B, heads * v, h, w]."""
        y = torch.einsum("bhkn,bkv->bhvn", q, content) + torch.einsum("bhkn,bkvn->bhvn", q, position)
        return y.reshape(q.shape[0], -1, h, w)

    def forward(self, x: Tensor, cor: Tensor) -> tuple[Tensor, Tensor]:
        # x: [2B, C, h, w] (frame A samples, then frame B samples); cor: [2B, 2, h, w]
        n, _, h, w = x.shape
        partner = torch.roll(x, shifts=n // 2, dims=0)  # sample i <-> sample i +- B
        q = self.norm_q(self.to_q(x)).view(n, self.heads, -1, h * w)              # [2B, heads, k, N]
        keys = self.to_k(partner).view(n, self.u, -1, h * w).softmax(dim=-1)      # [2B, u, k, N]
        values = self.norm_v(self.to_v(partner))                                  # [2B, u * v, h, w]
        content = torch.einsum("bukm,buvm->bkv", keys, values.view(n, self.u, -1, h * w))   # [2B, k, v]
        position = self.pos_conv(values.view(n, self.u, -1, h, w)).flatten(3)     # [2B, k, v, N]

        appearance = self._apply_lambdas(q, content, position, h, w)                      # [2B, C, h, w]
        cor_embed = self.cor_embed(cor)                                           # [2B, heads * k, h, w]
        moved = self._apply_lambdas(cor_embed.view(n, self.heads, -1, h * w), content, position, h, w)  # [2B, C, h, w]
        motion = self.motion_proj(self.channel_compress(moved) - cor_embed)       # [2B, motion_dim, h, w]
        return appearance, motion


class DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)  # [B, N, C] -> [B, N, C]


class Mlp(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> Linear on tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))  # [B, N, C] -> [B, N, C]


class MotionFormerBlock(nn.Module):
    """LayerNorm -> InterFrameLambda -> residual -> LayerNorm -> Mlp -> residual; also returns motion features.

    As upstream, the lambda's residual adds to the *normalised* tokens, not to the block's input.
    """

    def __init__(self, dim: int, *, dim_k: int, dim_u: int, r: int, motion_dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.Lambda = InterFrameLambda(dim, dim_k=dim_k, r=r, heads=heads, dim_u=dim_u, motion_dim=motion_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, cor: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        x = self.norm1(x)                                               # [2B, N, C]
        appearance, motion = self.Lambda(_tokens_to_map(x, h, w), cor)  # [2B, C, h, w], [2B, M, h, w]
        x = x + appearance.flatten(2).transpose(1, 2)
        return x + self.mlp(self.norm2(x), h, w), motion


class MotionFormer(nn.Module):
    """The encoder: 4 conv stages, then two parallel MotionFormer stages fed by cross-scale patch embeddings."""

    def __init__(self, config: GaraMoStConfig):
        super().__init__()
        e, d = config.embed_dims, config.depths
        for i in range(CONV_STAGES):
            if i > 0:  # stride-2 conv + PReLU into the stage
                setattr(self, f"patch_embed{i + 1}", nn.Sequential(nn.Conv2d(e[i - 1], e[i], 3, 2, 1), nn.PReLU(e[i])))
            setattr(self, f"block{i + 1}", ConvBlock(config.in_chans if i == 0 else e[i], e[i], d[i]))
        for j, stage in enumerate(config.lambda_stages):
            # registered in upstream's order (norm, patch_embed, block) so state_dict keys come in the same order
            setattr(self, f"norm{stage + 1}", nn.LayerNorm(e[stage], eps=1e-6))
            # stage 5 reads conv stages 1-3, stage 6 reads 2-4: both from the conv features, side by side
            setattr(self, f"patch_embed{stage + 1}", CrossScalePatchEmbed(e[j:j + 3], e[stage]))
            setattr(self, f"block{stage + 1}", nn.ModuleList(
                MotionFormerBlock(e[stage], dim_k=config.lambda_dim_k[j], dim_u=config.lambda_dim_u[j],
                                  r=config.lambda_r[j], motion_dim=config.motion_dims[stage],
                                  heads=config.num_heads[j], mlp_ratio=config.mlp_ratios[j])
                for _ in range(d[stage])))
        self.lambda_stages = config.lambda_stages
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """[2B, C, H, W] (both frames) -> 6 structure maps [2B, e_i, H/s_i, W/s_i] (s = 1, 2, 4, 8, 8, 16) and
        2 motion maps [2B, depth * motion_dim, H/s, W/s] (s = 8, 16)."""
        convs: list[Tensor] = []
        for i in range(CONV_STAGES):
            if i > 0:
                x = getattr(self, f"patch_embed{i + 1}")(x)
            x = getattr(self, f"block{i + 1}")(x)
            convs.append(x)
        struct, motion = list(convs), []
        for j, stage in enumerate(self.lambda_stages):
            tokens, h, w = getattr(self, f"patch_embed{stage + 1}")(convs[j:j + 3])  # [2B, h*w, E]
            cor = _coordinate_grid(tokens.shape[0], h, w, like=tokens)            # [2B, 2, h, w]
            per_block = []
            for blk in getattr(self, f"block{stage + 1}"):
                tokens, m = blk(tokens, cor, h, w)
                per_block.append(m)
            struct.append(_tokens_to_map(getattr(self, f"norm{stage + 1}")(tokens), h, w))
            motion.append(torch.cat(per_block, 1))
        return struct, motion


# ----------------------------------------------------------------------------------------------------------------
# Decoder: flow/mask heads and the refine U-Net


class Head(nn.Module):
    """One flow/mask estimator: features arrive at 1/scale of the frame size and are pixel-shuffled to 4/scale, where
    the convs run; the output is upsampled to full size: 4 flow channels (t->0, t->1) + 1 mask logit."""

    def __init__(self, in_planes: int, scale: int, c: int, in_else: int):
        super().__init__()
        self.upsample = nn.Sequential(nn.PixelShuffle(2), nn.PixelShuffle(2))  # not PixelShuffle(4): channel order
        self.scale = scale
        self.conv = nn.Sequential(_conv_prelu(in_planes * 2 // 16 + in_else, c), _conv_prelu(c, c), _conv_prelu(c, 5))

    def forward(self, features: Tensor, images: Tensor, flow: Tensor | None) -> tuple[Tensor, Tensor]:
        # features [B, 2P, H/s, W/s]; images [B, k, H, W]; flow [B, 4, H, W] or None
        features = self.upsample(features)  # [B, 2P/16, 4H/s, 4W/s]
        down = 4.0 / self.scale
        if self.scale != 4:
            images = F.interpolate(images, scale_factor=down, mode="bilinear", align_corners=False)
        if flow is not None:
            if self.scale != 4:
                flow = F.interpolate(flow, scale_factor=down, mode="bilinear", align_corners=False) * down
            images = torch.cat([images, flow], 1)
        x = self.conv(torch.cat([features, images], 1))  # [B, 5, 4H/s, 4W/s]
        if self.scale != 4:
            up = self.scale // 4
            x = F.interpolate(x, scale_factor=up, mode="bilinear", align_corners=False)
            return x[:, :4] * up, x[:, 4:5]
        return x[:, :4], x[:, 4:5]


class Conv2(nn.Module):
    """Two conv + PReLU, the first with a stride."""

    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.conv1 = _conv_prelu(cin, cout, stride)
        self.conv2 = _conv_prelu(cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    """4x4 stride-2 transposed conv (x2 upsampling) + PReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.PReLU(cout))


class Unet(nn.Module):
    """The refiner: 4 stride-2 levels taking the warped structure features of both frames at 1, 1/2, 1/4, 1/8 and
    the 1/16 ones at the bottleneck, then 4 transposed-conv levels with skips; sigmoid output.

    Upstream writes the input widths as multiples of c, which holds when c = 2F; here they follow embed_dims,
    which gives the same layers for c = 2F and lets a narrower refiner pair with any encoder.
    """

    def __init__(self, c: int, *, in_chans: int, embed_dims: tuple[int, ...]):
        super().__init__()
        e = embed_dims
        images = 4 * in_chans + 1 + 4  # img0, img1, both warped, mask, flow
        self.down0 = Conv2(images + 2 * e[0], 2 * c)
        self.down1 = Conv2(2 * c + 2 * e[1], 4 * c)
        self.down2 = Conv2(4 * c + 2 * e[2], 8 * c)
        self.down3 = Conv2(8 * c + 2 * e[3], 16 * c)
        self.up0 = _deconv(16 * c + 2 * e[5], 8 * c)
        self.up1 = _deconv(16 * c, 4 * c)
        self.up2 = _deconv(8 * c, 2 * c)
        self.up3 = _deconv(4 * c, c)
        self.conv = nn.Conv2d(c, in_chans, 3, 1, 1)
        self.apply(_init_weights)

    def forward(self, images: Tensor, c0: Sequence[Tensor], c1: Sequence[Tensor]) -> Tensor:
        # images [B, 4C + 5, H, W]; c0/c1: warped structure features of frame 0 / 1 at 1, 1/2, 1/4, 1/8, 1/16
        s0 = self.down0(torch.cat([images, c0[0], c1[0]], 1))  # [B, 2c, H/2, W/2]
        s1 = self.down1(torch.cat([s0, c0[1], c1[1]], 1))      # [B, 4c, H/4, W/4]
        s2 = self.down2(torch.cat([s1, c0[2], c1[2]], 1))      # [B, 8c, H/8, W/8]
        s3 = self.down3(torch.cat([s2, c0[3], c1[3]], 1))      # [B, 16c, H/16, W/16]
        x = self.up0(torch.cat([s3, c0[4], c1[4]], 1))         # [B, 8c, H/8, W/8]
        x = self.up1(torch.cat([x, s2], 1))                    # [B, 4c, H/4, W/4]
        x = self.up2(torch.cat([x, s1], 1))                    # [B, 2c, H/2, W/2]
        x = self.up3(torch.cat([x, s0], 1))                    # [B, c, H, W]
        return torch.sigmoid(self.conv(x))                     # [B, C, H, W]


# ----------------------------------------------------------------------------------------------------------------
# Network


@dataclass
class Encoded:
    """One encoder pass over a pair. Each tensor holds both frames stacked on the batch axis: [img0 batch; img1
    batch], i.e. [2B, ...] with frame 0's samples first."""

    struct_features: list[Tensor]   # 6 maps [2B, embed_dims[i], H/s, W/s], s = 1, 2, 4, 8, 8, 16 (upstream `sf`)
    motion_features: list[Tensor]   # 2 maps [2B, depth * motion_dim, H/s, W/s], s = 8, 16 (upstream `mf[4:]`)

    @property
    def batch(self) -> int:
        return self.struct_features[0].shape[0] // 2


@dataclass
class Decoded:
    prediction: Tensor    # [B, C, H, W] in [0, 1]
    flow: Tensor          # [B, 4, H, W]: F_t->0 (x, y) then F_t->1 (x, y), in pixels
    mask: Tensor          # [B, 1, H, W] logits; the blend weight of warped frame 0 is sigmoid(mask)
    residual: Tensor      # [B, C, H, W] the refiner's residual (2 * sigmoid - 1), before the clamp
    merged: list[Tensor]  # [B, C, H, W] the blended warps after each flow head (coarse, fine), for the loss


class GaraMoSt(nn.Module):
    """`forward(img0, img1, t)` -> Decoded; `encode` once + `decode` per timestep for several timesteps."""

    pad_multiple: int = PAD_MULTIPLE

    def __init__(self, config: GaraMoStConfig):
        super().__init__()
        if not isinstance(config, GaraMoStConfig):
            raise TypeError(f"GaraMoSt expects a GaraMoStConfig, got {type(config).__name__}")
        self.config = config
        cin = config.in_chans
        self.feature_bone = MotionFormer(config)
        # head i reads lambda stage -1 - i (coarse first); the first sees the two frames, the second also the two
        # warped frames, the mask and the flow
        self.block = nn.ModuleList(
            Head(config.head_in_planes(stage), config.scales[-1 - i], config.hidden_dims[-1 - i],
                 2 * cin if i == 0 else 4 * cin + 5)
            for i, stage in enumerate(reversed(config.lambda_stages))
        )
        self.unet = Unet(2 * config.c, in_chans=cin, embed_dims=config.embed_dims)
        # Start as linear blending: zero flow and mask from every head, zero residual (sigmoid(0) * 2 - 1).
        for head in self.block:
            nn.init.zeros_(head.conv[-1][0].weight)
            nn.init.zeros_(head.conv[-1][0].bias)
        nn.init.zeros_(self.unet.conv.weight)
        nn.init.zeros_(self.unet.conv.bias)

    # ---- checks -----------------------------------------------------------------------------------------------
    def _check_pair(self, img0: Tensor, img1: Tensor) -> None:
        if img0.ndim != 4 or img0.shape != img1.shape:
            raise ValueError(f"GaraMoSt takes two [B, C, H, W] frames of one shape, got {tuple(img0.shape)} and "
                             f"{tuple(img1.shape)}")
        if img0.shape[1] != self.config.in_chans:
            raise ValueError(f"this GaraMoSt takes {self.config.in_chans}-channel frames, got {img0.shape[1]}")
        h, w = img0.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {self.pad_multiple}: pad the frames first "
                             f"(upstream replicate-pads to {self.pad_multiple})")

    @staticmethod
    def _timesteps(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
        """A float, a scalar or a [B] tensor -> [B, 1, 1, 1] in `like`'s dtype and device."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a float or a [B] = [{batch}] tensor, got shape {tuple(t.shape)}")
        return t.view(batch, 1, 1, 1)

    # ---- the network -------------------------------------------------------------------------------------------
    def encode(self, img0: Tensor, img1: Tensor) -> Encoded:
        """[B, C, H, W] x 2 in [0, 1] -> features of both frames (one encoder pass over the pair)."""
        self._check_pair(img0, img1)
        struct, motion = self.feature_bone(torch.cat([img0, img1], 0))
        return Encoded(struct_features=struct, motion_features=motion)

    def decode(self, img0: Tensor, img1: Tensor, encoded: Encoded, t: Tensor | float) -> Decoded:
        """Frames and their features -> the frame at t (per sample, in (0, 1)); one pass of heads and refiner."""
        self._check_pair(img0, img1)
        b = img0.shape[0]
        if encoded.batch != b:
            raise ValueError(f"encoded features are for batch {encoded.batch}, frames have batch {b}")
        tt = self._timesteps(t, b, like=img0)  # [B, 1, 1, 1]

        def head_features(i: int) -> Tensor:
            # head i reads the coarse stage first; the timestep scales the motion features only (t for frame 0's,
            # 1 - t for frame 1's), which is why one encoder pass serves every t
            mf, sf = encoded.motion_features[-1 - i], encoded.struct_features[-1 - i]
            return torch.cat([tt * mf[:b], (1 - tt) * mf[b:], sf[:b], sf[b:]], 1)  # [B, 2P, H/s, W/s]

        flow, mask = self.block[0](head_features(0), torch.cat([img0, img1], 1), None)  # [B, 4 | 1, H, W]
        if self.config.time_mask_prior:
            # logit of frame 0's linear-blend weight 1 - t, a fixed offset: head output 0 means linear blending
            p = tt.clamp(TIME_EPS, 1 - TIME_EPS)
            mask = mask + torch.log((1 - p) / p)
        merged: list[Tensor] = []
        for i in range(len(self.block)):
            if i > 0:  # refine: the finer head sees the frames warped by the flow so far, and adds to flow and mask
                d_flow, d_mask = self.block[i](
                    head_features(i), torch.cat([img0, img1, warped0, warped1, mask], 1), flow)
                flow, mask = flow + d_flow, mask + d_mask
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])  # [B, C, H, W] each
            weight = torch.sigmoid(mask)
            merged.append(warped0 * weight + warped1 * (1 - weight))
        c0, c1 = self._warp_features(encoded.struct_features, flow, b)
        refined = self.unet(torch.cat([img0, img1, warped0, warped1, mask, flow], 1), c0, c1)
        residual = refined * 2 - 1
        return Decoded(prediction=torch.clamp(merged[-1] + residual, 0, 1), flow=flow, mask=mask,
                       residual=residual, merged=merged)

    @staticmethod
    def _warp_features(struct: Sequence[Tensor], flow: Tensor, b: int) -> tuple[list[Tensor], list[Tensor]]:
        """Backward-warp both frames' structure features at 1, 1/2, 1/4, 1/8 and 1/16 (the refiner's inputs).

        The flow is halved one octave at a time, as upstream (a direct 1/8 resize would sample differently).
        Stage 5's map (the second 1/8 one) is skipped: the refiner does not read it.
        """
        c0, c1 = [], []
        for i, x in enumerate(struct):
            if i == CONV_STAGES:
                continue
            while flow.shape[-1] > x.shape[-1]:
                flow = _half_flow(flow)
            c0.append(warp(x[:b], flow[:, :2]))
            c1.append(warp(x[b:], flow[:, 2:4]))
        return c0, c1

    def forward(self, img0: Tensor, img1: Tensor, t: Tensor | float) -> Decoded:
        return self.decode(img0, img1, self.encode(img0, img1), t)

    def multi_inference(self, img0: Tensor, img1: Tensor, times: Sequence[float]) -> Tensor:
        """[B, C, H, W] x 2 -> predictions [T, B, C, H, W] at `times`: one encoder pass, len(times) decoder passes.
        Gradient mode is the caller's (upstream wraps this in no_grad)."""
        if len(times) == 0:
            raise ValueError("multi_inference needs at least one timestep")
        encoded = self.encode(img0, img1)
        return torch.stack([self.decode(img0, img1, encoded, float(t)).prediction for t in times])
