"""FPNN: Flexible Parallel Neural Network for early battery-life prediction (Jiang et al., 2024).

The paper (arXiv 2401.16102) combines InceptionBlocks, a 3-D CNN over "video-like" cycling data, a
2-D CNN and a dual-stream network, with an adjustable number of InceptionBlocks (NOI). No public code
exists, so the layer names here are ours; the structure follows the paper's description:

- video_stream: each cycle's curves (Q, dQ, dQ/dV on 250 voltage points, zero-padded to 256)
  become 16 x 16 frames; groups of 4 cycles are averaged (time_pool), and the frames form a clip
  [C, T', 16, 16]; a 3-D stem and NOI InceptionBlocks (1x1x1 | 3x3x3 | two 3x3x3 | pool + 1x1x1
  branches), each followed by pooling. These reductions keep 100 cells under a second on a CPU
  (the curves are smooth: 250 points and 4-cycle averages lose little).
- matrix_stream: a 2-D CNN over the same data as a cycles x voltage-points image [C, T, P] (keeps the
  voltage neighbourhood that the frame reshape breaks).
- summary path (the second of the dual streams): per-cell scalars (log variance of dQ, capacity
  fade, ...), used by the fusion head and by a linear skip, so the network starts from the Severson
  linear model and the CNNs learn corrections (41 training cells: the skip is what keeps it sane).
- FPNNEnsemble averages independently seeded members (in the standardised log-life space).

The output is standardised log10 cycle life; the pipeline maps it back with the card's statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mis.models.common import DictConfig, count_parameters  # noqa: F401  (re-exported)


@dataclass(frozen=True, kw_only=True)
class FPNNConfig(DictConfig):
    in_channels: int = 3          # Q(V), dQ(V), dQ/dV
    n_points: int = 250           # voltage points per curve (the 1000-point grid averaged in 4s)
    frame_size: int = 16          # frames are frame_size^2 points (curves padded or averaged to fit)
    time_pool: int = 4            # cycles averaged per frame (the clip has ceil(T / time_pool) frames)
    summary_features: int = 6
    channels: int = 8             # width of the 3-D stream; the 2-D stream uses the same
    num_inception_blocks: int = 2  # NOI
    hidden: int = 32
    dropout: float = 0.2
    ensemble_size: int = 1


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: batches are a handful of cells and train/eval must agree.
    return nn.GroupNorm(min(4, channels), channels)


class ConvNormAct3d(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int | tuple, stride: int | tuple = 1):
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        super().__init__(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), _norm(cout), nn.ReLU(inplace=True))


class InceptionBlock3d(nn.Module):
    """Four parallel branches concatenated: [B, cin, T, H, W] -> [B, cout, T, H, W]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        width = cout // 4
        self.branch1 = ConvNormAct3d(cin, width, 1)
        self.branch3 = nn.Sequential(ConvNormAct3d(cin, width, 1), ConvNormAct3d(width, width, 3))
        self.branch5 = nn.Sequential(ConvNormAct3d(cin, width, 1), ConvNormAct3d(width, width, 3),
                                     ConvNormAct3d(width, width, 3))  # two 3x3x3 = one 5x5x5 field of view
        self.branch_pool = nn.Sequential(nn.MaxPool3d(3, 1, 1), ConvNormAct3d(cin, cout - 3 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class VideoStream(nn.Module):
    """[B, C, T, P] curves -> frames [B, C, T, S, S] -> 3-D CNN -> [B, out_features]."""

    def __init__(self, config: FPNNConfig):
        super().__init__()
        c = config.channels
        self.frame_size = config.frame_size
        self.time_pool = config.time_pool
        self.stem = ConvNormAct3d(config.in_channels, c, 3, stride=2)   # [B, c, T'/2, S/2, S/2]
        blocks = []
        for i in range(config.num_inception_blocks):
            blocks += [InceptionBlock3d(c * 2 ** min(i, 2), c * 2 ** min(i + 1, 2)),
                       nn.MaxPool3d(2, 2, ceil_mode=True)]                        # halves T, H, W
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c * 2 ** min(config.num_inception_blocks, 2)

    def forward(self, curves: torch.Tensor) -> torch.Tensor:
        b, c, t, p = curves.shape
        area = self.frame_size ** 2
        pooled = F.avg_pool2d(curves, (self.time_pool, 1), ceil_mode=True)          # [B, C, T', P]
        if p <= area:
            pooled = F.pad(pooled, (0, area - p))
        else:
            pooled = F.adaptive_avg_pool2d(pooled, (pooled.shape[2], area))         # [B, C, T', S*S]
        frames = pooled.reshape(b, c, pooled.shape[2], self.frame_size, self.frame_size)
        return self.blocks(self.stem(frames)).mean(dim=(2, 3, 4))


class MatrixStream(nn.Module):
    """[B, C, T, P] as a cycles x voltage image -> 2-D CNN -> [B, out_features]."""

    def __init__(self, config: FPNNConfig):
        super().__init__()
        c = config.channels
        layers, cin = [], config.in_channels
        for cout, stride in ((c, (2, 4)), (2 * c, (2, 2)), (2 * c, (2, 2))):
            layers += [nn.Conv2d(cin, cout, (3, 9), stride, (1, 4), bias=False), _norm(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, curves: torch.Tensor) -> torch.Tensor:
        return self.layers(curves).mean(dim=(2, 3))


class FPNN(nn.Module):
    """(curves [B, C, T, P], summary [B, S]) -> standardised log10 cycle life [B]."""

    def __init__(self, config: FPNNConfig):
        super().__init__()
        self.config = config
        self.video_stream = VideoStream(config)
        self.matrix_stream = MatrixStream(config)
        fused = self.video_stream.out_features + self.matrix_stream.out_features + config.summary_features
        self.fusion = nn.Sequential(nn.Linear(fused, config.hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(config.dropout), nn.Linear(config.hidden, 1))
        self.summary_skip = nn.Linear(config.summary_features, 1)
        nn.init.zeros_(self.fusion[-1].weight)  # start as the linear model; the CNNs add corrections
        nn.init.zeros_(self.fusion[-1].bias)

    def forward(self, curves: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.video_stream(curves), self.matrix_stream(curves), summary], dim=1)
        return (self.fusion(features) + self.summary_skip(summary)).squeeze(1)


class FPNNEnsemble(nn.Module):
    """Mean of `ensemble_size` FPNN members (members.0, members.1, ...)."""

    def __init__(self, config: FPNNConfig):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(FPNN(config) for _ in range(config.ensemble_size))

    def forward(self, curves: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(curves, summary) for member in self.members]).mean(dim=0)
