"""Training losses for frame interpolation that need no downloaded weights.

- Laplacian-pyramid L1 (upstream's LapLoss: 5 levels, 5x5 binomial Gaussian): errors at every scale count,
  so a blurry in-between frame (what linear blending gives) is penalised at the fine levels.
- Census (ternary) loss (IFRNet, 7x7): compares local intensity orderings, which are unchanged by the
  brightness differences between frames of a bolus passage, so it rewards putting edges in the right place.
Upstream adds FILM's VGG-19 perceptual and style losses; their ImageNet weights cannot be downloaded here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LEVELS = 5
CENSUS_PATCH = 7


def _gaussian_kernel(channels: int, device, dtype) -> torch.Tensor:
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    kernel = torch.outer(row, row) / 256.0
    return kernel.expand(channels, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
    """[B, C, H, W] -> `levels` band-pass images (fine to coarse), the last one the low-pass residual."""
    kernel = _gaussian_kernel(x.shape[1], x.device, x.dtype)
    bands, current = [], x
    for _ in range(levels - 1):
        low = _blur(current, kernel)
        down = low[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down * 4          # zero-insertion upsampling, blurred: the standard pyramid
        bands.append(current - _blur(up, kernel))
        current = down
    return bands + [current]


def laplacian_l1(predicted: torch.Tensor, target: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """Sum over levels of the mean absolute difference of the two pyramids (upstream's LapLoss)."""
    pairs = zip(laplacian_pyramid(predicted, levels), laplacian_pyramid(target, levels))
    return sum(F.l1_loss(p, t) for p, t in pairs)


def _ternary(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, patch^2, H, W]: each neighbour's difference from the centre, soft-signed."""
    gray = x.mean(dim=1, keepdim=True)
    eye = torch.eye(patch * patch, device=x.device, dtype=x.dtype).view(patch * patch, 1, patch, patch)
    neighbours = F.conv2d(F.pad(gray, [patch // 2] * 4, mode="replicate"), eye)
    diff = neighbours - gray
    return diff / torch.sqrt(0.81 + diff ** 2)


def census_loss(predicted: torch.Tensor, target: torch.Tensor, patch: int = CENSUS_PATCH) -> torch.Tensor:
    """Mean soft Hamming distance between the ternary census transforms (borders excluded)."""
    d = (_ternary(predicted, patch) - _ternary(target, patch)) ** 2
    distance = (d / (0.1 + d)).mean(dim=1)
    edge = patch // 2
    return distance[..., edge:-edge, edge:-edge].mean()
