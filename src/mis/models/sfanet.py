"""M-SFANet and M-SegNet (Thanasutives et al., ICPR 2020): an image -> a crowd density map and an attention map.

From https://github.com/Pongpisit-Thanasutives/Variations-of-SFANet-for-Crowd-Counting (commit de41c94,
``models/M_SFANet.py``, ``models/M_SegNet.py``, ``models/contextual_layer.py``: the ShanghaiTech versions); an
independent re-implementation. Module and attribute names are upstream's (including its ``spm.assp`` spelling of
ASPP), so a released ShanghaiTech ``.pth`` loads by name: the state dict sits under ``"model"``, and the one tensor
group upstream keeps but never uses (``conv_out.bn.*``) is dropped on import (``SFANET_KEY_MAP``,
docs/sfanet_keymap.md).

Layout (paper config, input [B, 3, H, W], H and W multiples of 16; every conv block is conv + BN + ReLU):

    M-SFANet ("m-sfanet", 22.90 M parameters)
      vgg       VGG16-bn, 13 convs, 2x2 max-pools after conv1_2, conv2_2, conv3_3, conv4_3; taps
                conv2_2 128 ch 1/2, conv3_3 256 ch 1/4, conv4_3 512 ch 1/8, conv5_3 512 ch 1/16
      spm.can   context-aware module on conv4_3: average-pool to 1, 2, 3, 6 cells, 1x1 conv, bilinear back;
                contrast weights w_j = sigmoid(weight_net(f - s_j)); ReLU(bottleneck(cat[sum w_j s_j / sum w_j, f]))
                -> 512 ch 1/8
      spm.assp  ASPP on conv5_3: 1x1 branch + 3x3 atrous branches (rates 6, 12, 18) + image pooling, 256 ch each,
                cat (1280) -> 1x1 conv 256 + BN + ReLU + dropout 0.5 -> 256 ch 1/16
      amp, dmp  two decoders (attention path, density path), same layout, separate weights:
                up2(aspp) | can        768 -> conv1 1x1 256 -> conv2 3x3 256                      1/8
                up2 | conv3_3 | up4(aspp) 768 -> conv3 1x1 128 -> conv4 3x3 128                   1/4
                up2 | conv2_2          256 -> conv5 1x1 64 -> conv6 3x3 64 -> conv7 3x3 32        1/2
                (bilinear upsampling with align_corners=True)
    M-SegNet ("m-segnet", 9.75 M parameters)
      vgg       VGG16-bn, first 10 convs; a max-pool with indices after conv1_2, conv2_2, conv3_3, conv4_3; the
                decoder reads the *pooled* maps: 64 ch 1/2, 128 ch 1/4, 256 ch 1/8, 512 ch 1/16
      amp, dmp  max-unpool (with the stored indices) instead of upsampling, no CAN and no ASPP:
                unpool(512) | 256      768 -> 256 -> 256          1/8
                unpool(256) | 128      384 -> 128 -> 128          1/4
                unpool(128) | 64       192 -> 64 -> 64 -> 32      1/2
    heads (both)
      conv_att  attention = sigmoid(BN(1x1 conv 32 -> 1)) on the amp output
      conv_out  density = 1x1 conv 32 -> 1 on attention * dmp output (no BN, no activation)

forward returns (density, attention), both [B, 1, H/2, W/2] (output stride 2). The count is density.sum(): upstream
applies no constant to the output, at training or at inference (``DENSITY_SCALE = 1``). Its training target is the
full-resolution density (delta map * Gaussian, sigma 5 px) resized to H/2 x W/2 and multiplied by stride^2 = 4 so
the sum is kept (``OUTPUT_STRIDE``), and the attention target is (full-resolution density > 0.001) resized the same
way, without the factor. Inputs upstream: RGB in [0, 1] normalised with the ImageNet mean and std, resized so H and
W are round(h / 16) * 16.

`width` scales every channel count (rounded, at least 4); the M-SegNet decoder widths follow the encoder's, so the
unpooling indices always fit. The encoder can be initialised from torchvision's ImageNet VGG16-bn weights (as
upstream does) with `vgg16_bn_encoder_state`, which renames a state dict the caller has loaded.

Measured here (torch 2.14.1 CPU build, 2-vCPU VM shared with other jobs (load average about 4 during the runs, so
the spread is wide; the lowest time is the better guide), torch.set_num_threads(2), float32, random init):

    config                               parameters   1x3x384x512 forward, eval   batch 4 x 128x128, forward + backward
    paper m-sfanet (SFANetConfig())      22,904,388   4.2-6.5 s                   -
    paper m-segnet                        9,747,524   3.1-4.0 s                   -
    demo m-sfanet (width 0.25)            1,436,052   0.42-2.4 s                  0.57-1.8 s
    demo m-segnet (width 0.25)              612,116   0.33-0.74 s                 0.42-4.6 s

On one H200 (torch 2.11, fp32 with TF32 off for the comparison, cudnn.benchmark for the timings): CUDA matches the
CPU to 1e-7 (m-sfanet) and 3e-5 (m-segnet: max-unpool) on densities up to 0.3; bf16 autocast is finite and moves the
count by 0.2 %. Adam step, batch 8 x 400x400 (upstream's crop): paper m-sfanet 150 ms and 33 GiB peak, paper
m-segnet 95 ms and 11 GiB, demos 36 / 24 ms; one 1x3x384x512 forward 9.0 / 6.1 ms (paper), 3.4 / 2.4 ms (demo).

Upstream's own networks count 2 more parameters (22,904,390 and 9,747,526: the unused conv_out.bn); both round to the
published 22.90 M and 9.75 M. Ours and upstream's (built from its code with its ImageNet download switched off, weights copied through
`SFANET_KEY_MAP`) give bit-identical outputs in eval and train mode (tests/test_sfanet.py keeps upstream's numbers).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (part of this module's API)
from mis.spec import KeyMap

__all__ = ["SFANetConfig", "SFANet", "MSFANet", "MSegNet", "build_sfanet", "vgg16_bn_encoder_state",
           "SFANET_KEY_MAP", "DENSITY_SCALE", "OUTPUT_STRIDE", "SIZE_MULTIPLE", "VARIANTS", "count_parameters"]

VARIANTS = ("m-sfanet", "m-segnet")
DENSITY_ACTIVATIONS = ("none", "relu")
OUTPUT_STRIDE = 2      # density and attention are H/2 x W/2; a count-preserving target resize multiplies by 2^2
SIZE_MULTIPLE = 16     # four 2x2 pools: H and W must be multiples of 16
DENSITY_SCALE = 1.0    # upstream's density sums to the count as it is (no x100 or / stride^2 anywhere)
MIN_CHANNELS = 4
WEIGHT_INITS = ("upstream", "kaiming")   # how `mis train count` draws a from-scratch network's conv weights

# Upstream checkpoint names -> ours: the identity once DataParallel's `module.` (if any) is stripped, except that
# upstream's conv_out carries a BatchNorm it never applies (BaseConv always builds one); we do not build it.
SFANET_KEY_MAP = KeyMap(drop_prefixes=("conv_out.bn.",))

# VGG16 conv names and their paper widths, stage by stage (a 2x2 max-pool between stages)
_VGG_STAGES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("conv1_1", 64), ("conv1_2", 64)),
    (("conv2_1", 128), ("conv2_2", 128)),
    (("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)),
    (("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)),
    (("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)),
)
_ASPP_WIDTH = 256
_HEAD_WIDTH = 32
# torchvision vgg16_bn `features` indices of the 13 convs (each followed by its BatchNorm at index + 1)
_TORCHVISION_CONV_INDEX = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)


@dataclass(frozen=True, kw_only=True)
class SFANetConfig(DictConfig):
    """Constructor arguments of :class:`SFANet` (defaults: upstream's ShanghaiTech M-SFANet)."""

    variant: str = "m-sfanet"                   # "m-sfanet" | "m-segnet"
    in_channels: int = 3                        # 3 = upstream (ImageNet-normalised RGB); 1 = grayscale
    width: float = 1.0                          # scales every channel count (rounded, >= 4)
    aspp_rates: tuple[int, ...] = (6, 12, 18)   # atrous rates of the 3x3 ASPP branches (m-sfanet only)
    can_scales: tuple[int, ...] = (1, 2, 3, 6)  # CAN pooling grid sizes (m-sfanet only)
    dropout: float = 0.5                        # after the ASPP projection (m-sfanet only)
    density_activation: str = "none"            # "none" = upstream (a linear 1x1 head); "relu": no negative density

    def __post_init__(self) -> None:
        # JSON gives lists and may give ints for floats: normalise, then validate.
        for name in ("aspp_rates", "can_scales"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ValueError(f"SFANetConfig.{name} must be a sequence of ints, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        object.__setattr__(self, "in_channels", int(self.in_channels))
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "dropout", float(self.dropout))

        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"SFANetConfig.density_activation must be one of {DENSITY_ACTIVATIONS}, "
                             f"got {self.density_activation!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"SFANetConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if not self.can_scales or min(self.can_scales) < 1:
            raise ValueError(f"can_scales must be a non-empty sequence of positive grid sizes, got {self.can_scales}")
        if min(self.aspp_rates, default=1) < 1:
            raise ValueError(f"aspp_rates must be positive, got {self.aspp_rates}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def channels(self, n: int) -> int:
        """Paper channel count n at this width."""
        return max(MIN_CHANNELS, int(round(n * self.width)))

    @property
    def encoder_widths(self) -> tuple[int, ...]:
        """Output channels of the five VGG stages (paper: 64, 128, 256, 512, 512)."""
        return tuple(self.channels(stage[-1][1]) for stage in _VGG_STAGES)

    @property
    def decoder_widths(self) -> tuple[int, int, int, int]:
        """Outputs of decoder conv2, conv4, conv6/conv5 and conv7 (paper: 256, 128, 64, 32). The first three are the
        widths of encoder stages 3, 2, 1, which M-SegNet's unpooling needs."""
        e = self.encoder_widths
        return (e[2], e[1], e[0], self.channels(_HEAD_WIDTH))

    @property
    def aspp_width(self) -> int:
        return self.channels(_ASPP_WIDTH)

    @classmethod
    def paper(cls, variant: str = "m-sfanet", **overrides) -> SFANetConfig:
        """Upstream's ShanghaiTech network (what its released `.pth` files load into)."""
        return cls(**{"variant": variant, **overrides})

    @classmethod
    def demo(cls, variant: str = "m-sfanet", **overrides) -> SFANetConfig:
        """A quarter of every width (VGG 16-128 channels), for training on 2 CPU cores: 1.44 M parameters
        (m-sfanet), 0.61 M (m-segnet); RGB, so the demo and imported weights take the same input."""
        return cls(**{"variant": variant, "width": 0.25, **overrides})


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (attribute names are upstream's: they are the state-dict keys)


class ConvBlock(nn.Module):
    """conv (bias) -> optional BatchNorm -> optional activation; upstream's `BaseConv` layout (`conv`, `bn`)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, activation: str | None = "relu", use_bn: bool = True):
        super().__init__()
        if activation not in (None, "relu", "sigmoid"):
            raise ValueError(f"activation must be None, 'relu' or 'sigmoid', got {activation!r}")
        self.activation = activation
        self.conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2)
        self.bn = nn.BatchNorm2d(cout) if use_bn else None
        nn.init.normal_(self.conv.weight, 0.0, 0.01)   # upstream's init (before the ImageNet encoder weights)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activation == "relu":
            x = F.relu(x)
        elif self.activation == "sigmoid":
            x = torch.sigmoid(x)
        return x


class VGGEncoder(nn.Module):
    """VGG16-bn convs `conv1_1` ... (the first `n_stages` stages); `stage(i, x)` runs stage i's convs."""

    def __init__(self, config: SFANetConfig, n_stages: int):
        super().__init__()
        self._stages: list[list[str]] = []
        cin = config.in_channels
        for stage in _VGG_STAGES[:n_stages]:
            names = []
            for name, paper_width in stage:
                cout = config.channels(paper_width)
                self.add_module(name, ConvBlock(cin, cout, 3))
                names.append(name)
                cin = cout
            self._stages.append(names)

    def stage(self, i: int, x: Tensor) -> Tensor:
        for name in self._stages[i]:
            x = getattr(self, name)(x)
        return x


CAN_MIN_WEIGHT = 1e-12     # CAN's denominator floor: 1 / it times any loss stays finite (ContextualModule)


class ContextualModule(nn.Module):
    """CAN (Liu et al., CVPR 2019): multi-scale average pools weighted by their contrast with the input."""

    def __init__(self, features: int, out_features: int, sizes: Sequence[int]):
        super().__init__()
        self.scales = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d((s, s)), nn.Conv2d(features, features, 1, bias=False)) for s in sizes)
        self.bottleneck = nn.Conv2d(features * 2, out_features, 1)
        self.weight_net = nn.Conv2d(features, features, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, f: Tensor) -> Tensor:
        size = f.shape[-2:]
        num = torch.zeros_like(f)
        den = torch.zeros_like(f)
        for scale in self.scales:
            s = F.interpolate(scale(f), size=size, mode="bilinear", align_corners=False)  # [B, C, h, w]
            w = torch.sigmoid(self.weight_net(f - s))
            num = num + w * s
            den = den + w
        # Upstream's ratio wherever the four weights sum to at least CAN_MIN_WEIGHT (some logit above about -28);
        # below it the context fades to 0 with the sum. Upstream's bare ratio is 0 / 0 (NaN) where every sigmoid
        # underflows, and a denominator clamped only at the smallest float (as here before) still overflowed
        # backward: 1 / 1e-38 times a loss of the count demo's size is inf, and inf times the slope 0 of an
        # underflowed sigmoid is NaN. A Kaiming bf16 run skipped 2215 of its 17000 steps for that, the dense crops'.
        # The exact softmax of log-sigmoids made a training step 8-15 % slower (forward and backward timed alone, and
        # a run's first 600 steps), too much for the count demo's 45 minutes.
        fused = num / den.clamp_min(CAN_MIN_WEIGHT)
        return F.relu(self.bottleneck(torch.cat([fused, f], 1)))


class _ASPPBranch(nn.Module):
    """Atrous conv (no bias) -> BN -> ReLU (`atrous_conv`, `bn`)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int):
        super().__init__()
        pad = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(cin, cout, kernel, 1, pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """DeepLab-v3 ASPP: `aspp1` (1x1), `aspp2..` (3x3 atrous), `global_avg_pool`, `conv1` + `bn1`, dropout."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int], dropout: float):
        super().__init__()
        self._branches = [f"aspp{i + 1}" for i in range(len(rates) + 1)]
        for i, name in enumerate(self._branches):   # aspp1: 1x1; aspp2..: 3x3 at dilation rates[i - 1]
            self.add_module(name, _ASPPBranch(cin, cout, 1, 1) if i == 0 else _ASPPBranch(cin, cout, 3, rates[i - 1]))
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(cin, cout, 1, bias=False),
                                             nn.BatchNorm2d(cout), nn.ReLU())
        self.conv1 = nn.Conv2d(cout * (len(self._branches) + 1), cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        parts = [getattr(self, name)(x) for name in self._branches]
        parts.append(self.global_avg_pool(x).expand(-1, -1, *x.shape[-2:]))  # 1x1 -> h x w (a constant)
        return self.dropout(F.relu(self.bn1(self.conv1(torch.cat(parts, 1)))))


class ScalePyramidModule(nn.Module):
    """`can` on the 1/8 tap, `assp` (upstream's spelling) on the 1/16 tap."""

    def __init__(self, config: SFANetConfig):
        super().__init__()
        e = config.encoder_widths
        self.assp = ASPP(e[4], config.aspp_width, config.aspp_rates, config.dropout)
        self.can = ContextualModule(e[3], e[3], config.can_scales)


def _up(x: Tensor, factor: int) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class BackEnd(nn.Module):
    """One decoder path (`conv1` ... `conv7`); `unpool=True` is M-SegNet's, else M-SFANet's."""

    def __init__(self, config: SFANetConfig, *, unpool: bool):
        super().__init__()
        e = config.encoder_widths
        d = config.decoder_widths
        if unpool:
            ins = (e[3] + e[2], d[0] + e[1], d[1] + e[0])
        else:
            a = config.aspp_width
            ins = (a + e[3], d[0] + e[2] + a, d[1] + e[1])
        self.conv1 = ConvBlock(ins[0], d[0], 1)
        self.conv2 = ConvBlock(d[0], d[0], 3)
        self.conv3 = ConvBlock(ins[1], d[1], 1)
        self.conv4 = ConvBlock(d[1], d[1], 3)
        self.conv5 = ConvBlock(ins[2], d[2], 1)
        self.conv6 = ConvBlock(d[2], d[2], 3)
        self.conv7 = ConvBlock(d[2], d[3], 3)

    def forward_upsample(self, tap2: Tensor, tap3: Tensor, can: Tensor, aspp: Tensor) -> Tensor:
        x = self.conv2(self.conv1(torch.cat([_up(aspp, 2), can], 1)))                  # 1/8
        x = self.conv4(self.conv3(torch.cat([_up(x, 2), tap3, _up(aspp, 4)], 1)))      # 1/4
        return self.conv7(self.conv6(self.conv5(torch.cat([_up(x, 2), tap2], 1))))    # 1/2

    def forward_unpool(self, pooled: Sequence[Tensor], indices: Sequence[Tensor], sizes: Sequence[torch.Size]
                       ) -> Tensor:
        """pooled[k], indices[k], sizes[k]: the k-th max-pool's output, its indices and its input size (k = 0..3)."""
        x = F.max_unpool2d(pooled[3], indices[3], 2, 2, 0, sizes[3][-2:])                   # 1/8
        x = self.conv2(self.conv1(torch.cat([x, pooled[2]], 1)))
        x = F.max_unpool2d(x, indices[2], 2, 2, 0, sizes[2][-2:])                           # 1/4
        x = self.conv4(self.conv3(torch.cat([x, pooled[1]], 1)))
        x = F.max_unpool2d(x, indices[1], 2, 2, 0, sizes[1][-2:])                           # 1/2
        return self.conv7(self.conv6(self.conv5(torch.cat([x, pooled[0]], 1))))


# ----------------------------------------------------------------------------------------------------------------
# Networks


def kaiming_init(model: nn.Module) -> int:
    """Redraw the weights of every conv block that has a BatchNorm (VGG, decoders, attention head) Kaiming-normal
    (fan-out, ReLU), as torchvision initialises VGG16-bn to train from scratch; returns how many were redrawn.

    Upstream draws N(0, 0.01) only for its ImageNet encoder weights to overwrite. Trained from scratch with Adam,
    that is the wrong scale: BatchNorm makes a conv's output independent of its weights' norm, so an Adam step of size
    lr turns them by about lr / std, 10 % per step at lr 1e-3 and std 0.01, until they have grown (the M-SFANet demo
    trained from upstream's draw ended at std 0.06-0.11 in these layers). ASPP keeps upstream's Kaiming draw; the CAN
    module and the density head (no BatchNorm) keep their small ones, so training starts from an empty density."""
    redrawn = 0
    for module in model.modules():
        if isinstance(module, ConvBlock) and module.bn is not None:
            nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
            redrawn += 1
    return redrawn


class SFANet(nn.Module):
    """The family's network class: `SFANet(config)` builds :class:`MSFANet` or :class:`MSegNet` by
    `config.variant` (both subclass SFANet, so the state-dict keys are the variant's, with no extra prefix)."""

    config: SFANetConfig

    def __new__(cls, config: SFANetConfig | None = None, *args, **kwargs):
        if cls is SFANet:
            if config is None:
                raise TypeError("SFANet(config) needs an SFANetConfig")
            cls = MSegNet if config.variant == "m-segnet" else MSFANet
        return super().__new__(cls)

    def __init__(self, config: SFANetConfig):
        super().__init__()
        self.config = config

    def _heads(self, amp: Tensor, dmp: Tensor) -> tuple[Tensor, Tensor]:
        attention = self.conv_att(amp)              # [B, 1, H/2, W/2] in [0, 1]
        density = self.conv_out(attention * dmp)    # [B, 1, H/2, W/2], unbounded (count = sum)
        if self.config.density_activation == "relu":
            # The linear head's bias is a density everywhere: trained from scratch it settled at +13 people per
            # empty 256 x 320 scene. Clamping at zero lets background be exactly zero (upstream's QNRF variants
            # take abs() of the density for the same reason).
            density = F.relu(density)
        return density, attention

    def _build_heads(self) -> None:
        d = self.config.decoder_widths[3]
        self.conv_att = ConvBlock(d, 1, 1, activation="sigmoid", use_bn=True)
        self.conv_out = ConvBlock(d, 1, 1, activation=None, use_bn=False)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected [B, {self.config.in_channels}, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
            raise ValueError(f"H and W must be positive multiples of {SIZE_MULTIPLE}, got {h}x{w} "
                             f"(resize to round(side / {SIZE_MULTIPLE}) * {SIZE_MULTIPLE}, as upstream)")


class MSFANet(SFANet):
    """M-SFANet: VGG16-bn (13 convs) + CAN + ASPP + two upsampling decoders. forward(x [B, C, H, W]) ->
    (density, attention), both [B, 1, H/2, W/2]."""

    def __init__(self, config: SFANetConfig):
        if config.variant != "m-sfanet":
            raise ValueError(f"MSFANet needs variant 'm-sfanet', got {config.variant!r}")
        super().__init__(config)
        self.vgg = VGGEncoder(config, 5)
        self.spm = ScalePyramidModule(config)
        self.amp = BackEnd(config, unpool=False)
        self.dmp = BackEnd(config, unpool=False)
        self._build_heads()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_input(x)
        vgg = self.vgg
        tap2 = vgg.stage(1, F.max_pool2d(vgg.stage(0, x), 2, 2))          # [B, 128, H/2, W/2]
        tap3 = vgg.stage(2, F.max_pool2d(tap2, 2, 2))                     # [B, 256, H/4, W/4]
        tap4 = vgg.stage(3, F.max_pool2d(tap3, 2, 2))                     # [B, 512, H/8, W/8]
        tap5 = vgg.stage(4, F.max_pool2d(tap4, 2, 2))                     # [B, 512, H/16, W/16]
        can = self.spm.can(tap4)                                          # [B, 512, H/8, W/8]
        aspp = self.spm.assp(tap5)                                        # [B, 256, H/16, W/16]
        amp = self.amp.forward_upsample(tap2, tap3, can, aspp)            # [B, 32, H/2, W/2]
        dmp = self.dmp.forward_upsample(tap2, tap3, can, aspp)
        return self._heads(amp, dmp)


class MSegNet(SFANet):
    """M-SegNet: VGG16-bn (first 10 convs) with pooling indices + two max-unpooling decoders. forward(x [B, C, H, W])
    -> (density, attention), both [B, 1, H/2, W/2]."""

    def __init__(self, config: SFANetConfig):
        if config.variant != "m-segnet":
            raise ValueError(f"MSegNet needs variant 'm-segnet', got {config.variant!r}")
        super().__init__(config)
        self.vgg = VGGEncoder(config, 4)
        self.amp = BackEnd(config, unpool=True)
        self.dmp = BackEnd(config, unpool=True)
        self._build_heads()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_input(x)
        pooled, indices, sizes = [], [], []
        for i in range(4):
            x = self.vgg.stage(i, x)                                      # [B, e_i, H/2^i, W/2^i]
            sizes.append(x.shape)
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)          # [B, e_i, H/2^(i+1), W/2^(i+1)]
            pooled.append(x)
            indices.append(idx)
        amp = self.amp.forward_unpool(pooled, indices, sizes)             # [B, 32, H/2, W/2]
        dmp = self.dmp.forward_unpool(pooled, indices, sizes)
        return self._heads(amp, dmp)


def build_sfanet(config: SFANetConfig) -> SFANet:
    """MSFANet or MSegNet by `config.variant` (the same as `SFANet(config)`)."""
    return SFANet(config)


def vgg16_bn_encoder_state(state: Mapping[str, Tensor], config: SFANetConfig) -> dict[str, Tensor]:
    """torchvision `vgg16_bn` weights (keys `features.<i>.*`, as the caller loaded them) -> this network's
    `vgg.convX_Y.{conv,bn}.*` keys, for `model.load_state_dict(..., strict=False)` (upstream's `load_vgg`).

    Needs width 1. With `in_channels` 1 the first kernel is summed over RGB (a gray image is R = G = B); other
    channel counts are refused.
    """
    if config.channels(512) != 512:
        raise ValueError(f"ImageNet VGG16-bn weights need width 1, got {config.width}")
    if config.in_channels not in (1, 3):
        raise ValueError(f"ImageNet VGG16-bn weights take 3 (or, summed, 1) input channels, not {config.in_channels}")
    names = [name for stage in _VGG_STAGES[:5 if config.variant == "m-sfanet" else 4] for name, _ in stage]
    out: dict[str, Tensor] = {}
    for name, index in zip(names, _TORCHVISION_CONV_INDEX):
        for ours, theirs in (("conv.weight", f"{index}.weight"), ("conv.bias", f"{index}.bias"),
                             ("bn.weight", f"{index + 1}.weight"), ("bn.bias", f"{index + 1}.bias"),
                             ("bn.running_mean", f"{index + 1}.running_mean"),
                             ("bn.running_var", f"{index + 1}.running_var")):
            key = f"features.{theirs}"
            if key not in state:
                raise KeyError(f"{key} not in the VGG16-bn state dict")
            out[f"vgg.{name}.{ours}"] = state[key]
    if config.in_channels == 1:
        out["vgg.conv1_1.conv.weight"] = out["vgg.conv1_1.conv.weight"].sum(1, keepdim=True)
    return out
