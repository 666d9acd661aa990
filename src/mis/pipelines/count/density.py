"""Ground-truth density maps from head points, count-preserving resizing, and counting metrics. numpy/scipy only
(data-loader workers import this, so it must stay light: no torch).

Density: each in-bounds head contributes a Gaussian that sums to exactly 1, so a map sums to its head count.

- Upstream (SFANet, CSRNet) puts a delta at pixel (int(y), int(x)) and blurs it with `gaussian_filter(mode=
  'constant')`, which throws away the part of the Gaussian that falls outside the image: a head 2 px from the border
  with sigma 5 keeps about 65 % of its mass, so the target undercounts crowded borders. Here each head's Gaussian,
  truncated at 4 sigma (scipy's default) and at the image border, is renormalised to sum to 1. The peak pixel is the
  same as upstream's (int(y), int(x)).
- `fixed:S`: sigma = S pixels for every head (SFANet's ShanghaiTech target: fixed:5; CSRNet's SHB: fixed:15).
- `adaptive:k=K,beta=B`: CSRNet's geometry-adaptive kernel, sigma = B * (d1 + ... + dK), the sum of the distances
  to the K nearest other heads. CSRNet's SHA rule is k=3, beta=0.1 (0.1 * (d1 + d2 + d3)); the MCNN paper writes
  the same kernel as 0.3 * mean distance. With fewer than K other heads the available ones are used, scaled to K
  (B * K * mean). A lone head has no neighbour: it gets `fallback` (default 5 px, the fixed ShanghaiTech sigma)
  instead of CSRNet's mean(H, W) / 4, which would spread one head over a quarter of the image (sigma 224 px on
  1024x768): a faint haze no network can localise. Sigma is at least 0.5 px (two heads on the same spot would
  otherwise get sigma 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DEFAULT_FIXED_SIGMA = 5.0  # SFANet's ShanghaiTech ground truth
MIN_SIGMA = 0.5
TRUNCATE = 4.0  # Gaussian support in sigmas, as scipy.ndimage.gaussian_filter's default (upstream used it)
_SIGMA_HELP = "expected 'fixed:<pixels>' (e.g. fixed:5) or 'adaptive:k=<int>,beta=<float>' (e.g. adaptive:k=3,beta=0.1)"


@dataclass(frozen=True)
class SigmaRule:
    """How wide each head's Gaussian is: kind "fixed" (sigma pixels) or "adaptive" (k, beta, fallback)."""

    kind: str = "fixed"
    sigma: float = DEFAULT_FIXED_SIGMA
    k: int = 3
    beta: float = 0.1
    fallback: float = DEFAULT_FIXED_SIGMA

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.sigma:g}"
        text = f"adaptive:k={self.k},beta={self.beta:g}"
        return text if self.fallback == DEFAULT_FIXED_SIGMA else f"{text},fallback={self.fallback:g}"


def parse_sigma(text: str) -> SigmaRule:
    """'fixed:5', 'fixed:15', 'adaptive', 'adaptive:k=3,beta=0.1[,fallback=5]' (or a bare number: fixed) -> rule.

    Raises ValueError with a message fit for the command line on anything else."""
    raw = str(text).strip()
    kind, _, rest = raw.partition(":")
    kind = kind.strip().lower()
    if _is_positive_number(kind) and not rest:
        return SigmaRule("fixed", sigma=float(kind))
    if kind == "fixed":
        if not _is_positive_number(rest):
            raise ValueError(f"--sigma {raw!r}: fixed sigma must be a positive number of pixels; {_SIGMA_HELP}")
        return SigmaRule("fixed", sigma=float(rest))
    if kind == "adaptive":
        return SigmaRule("adaptive", **_adaptive_options(raw, rest))
    raise ValueError(f"--sigma {raw!r}: {_SIGMA_HELP}")


def _is_positive_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def _adaptive_options(raw: str, rest: str) -> dict:
    options: dict = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        name, _, value = (s.strip().lower() for s in item.partition("="))
        if name == "k" and value.isdigit() and int(value) >= 1:
            options["k"] = int(value)
        elif name in ("beta", "fallback") and _is_positive_number(value):
            options[name] = float(value)
        else:
            raise ValueError(f"--sigma {raw!r}: bad option {item!r} (k: a whole number >= 1; beta, fallback: "
                             f"positive numbers); {_SIGMA_HELP}")
    return options


# --------------------------------------------------------------------------- density maps


def head_sigmas(points: np.ndarray, sigma: SigmaRule | str = SigmaRule()) -> np.ndarray:
    """Sigma in pixels for each head (N,), by the rule (see the module docstring for the adaptive one)."""
    rule = parse_sigma(sigma) if isinstance(sigma, str) else sigma
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if rule.kind == "fixed" or len(points) == 0:
        return np.full(len(points), max(rule.sigma, MIN_SIGMA))
    if len(points) == 1:
        return np.full(1, max(rule.fallback, MIN_SIGMA))
    from scipy.spatial import cKDTree

    neighbours = min(rule.k, len(points) - 1)
    distances, _ = cKDTree(points).query(points, k=neighbours + 1)  # the first neighbour is the head itself
    mean_distance = distances[:, 1:].mean(axis=1)
    return np.maximum(rule.beta * rule.k * mean_distance, MIN_SIGMA)


def density_from_points(points: np.ndarray, shape: tuple[int, ...], sigma: SigmaRule | str = SigmaRule()) -> np.ndarray:
    """float32 [H, W] density whose sum is the number of in-bounds heads (to float precision).

    points: (N, 2) x, y pixels; those outside 0 <= x < W, 0 <= y < H are dropped (as upstream). Adaptive sigmas are
    measured among the in-bounds heads. Each head's Gaussian is centred on pixel (int(y), int(x)), truncated at
    4 sigma and at the border, and renormalised there (see the module docstring)."""
    height, width = int(shape[0]), int(shape[1])
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    points = points[inside]
    density = np.zeros((height, width), dtype=np.float64)
    sigmas = head_sigmas(points, sigma)
    columns, rows = points[:, 0].astype(np.int64), points[:, 1].astype(np.int64)
    kernels: dict[float, tuple[np.ndarray, int]] = {}  # fixed sigma: one kernel for every head
    for row, column, s in zip(rows, columns, sigmas):
        kernel, radius = kernels.get(s) or kernels.setdefault(s, _kernel_1d(s))
        top, bottom = max(row - radius, 0), min(row + radius + 1, height)
        left, right = max(column - radius, 0), min(column + radius + 1, width)
        along_y = kernel[top - row + radius:bottom - row + radius]
        along_x = kernel[left - column + radius:right - column + radius]
        # The 2-D Gaussian is separable, so normalising each clipped 1-D part makes the clipped 2-D part sum to 1.
        density[top:bottom, left:right] += np.outer(along_y / along_y.sum(), along_x / along_x.sum())
    return density.astype(np.float32)


def _kernel_1d(sigma: float) -> tuple[np.ndarray, int]:
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (offsets / sigma) ** 2), radius


# --------------------------------------------------------------------------- resizing


def resize_density(density: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 density resampled to shape (H', W') with its sum kept (to float32 precision).

    Area resampling: output cell i covers input rows [i * H / H', (i + 1) * H / H'), and every input pixel gives its
    mass to the cells it overlaps in proportion to the overlap. This works for any factor (1/2, 1/3, 2x, 334 -> 167
    or 500 -> 333) and conserves mass by construction, unlike upstream's bilinear cv2.resize followed by x stride^2,
    which is only right on average. Downsampling sums blocks; upsampling spreads a pixel evenly over its cells."""
    density = np.asarray(density, dtype=np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be [H, W], got shape {density.shape}")
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize a density map to {height}x{width}")
    rows = _overlap_matrix(density.shape[0], height)
    columns = _overlap_matrix(density.shape[1], width)
    resized = np.asarray((columns @ (rows @ density).T).T)
    total, kept = density.sum(), resized.sum()
    if kept != 0:
        resized *= total / kept  # removes the last float rounding
    return resized.astype(np.float32)


@lru_cache(maxsize=256)
def _overlap_matrix(size_in: int, size_out: int):
    """Sparse (size_out, size_in): entry [i, j] = the fraction of input pixel j that lies in output cell i. Cached:
    training resamples every crop with the same few sizes (read only: callers multiply, never write)."""
    from scipy.sparse import csr_matrix

    edges = np.arange(size_out + 1, dtype=np.float64) * (size_in / size_out)  # output edges in input pixels
    cells, pixels, weights = [], [], []
    for i in range(size_out):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(math.floor(lo)), min(int(math.ceil(hi)), size_in)):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 0:
                cells.append(i), pixels.append(j), weights.append(overlap)
    return csr_matrix((weights, (cells, pixels)), shape=(size_out, size_in))


def downsample_density(density: np.ndarray, stride: int) -> np.ndarray:
    """The training target at the model's output stride: [H // stride, W // stride], same sum (upstream: cv2.resize
    to half size, then x stride^2 = 4)."""
    height, width = np.asarray(density).shape[:2]
    return resize_density(density, (max(height // stride, 1), max(width // stride, 1)))


def attention_target(density: np.ndarray, threshold: float = 0.001) -> np.ndarray:
    """float32 mask, 1 where density > threshold (SFANet's attention ground truth, on the full-resolution map).

    Upstream thresholds the full-resolution density and then resizes the mask to the output stride; to follow it,
    use `resize_density(mask, shape) / stride**2` (the fraction of attention pixels in each output cell)."""
    return (np.asarray(density) > threshold).astype(np.float32)


# --------------------------------------------------------------------------- metrics


def game(pred_density: np.ndarray, true_density: np.ndarray, level: int) -> float:
    """Grid Average Mean absolute Error of one image, GAME(L): split the map into 4^L regions (2^L x 2^L, as equal
    as the size allows: region boundaries at floor(i * H / 2^L)), add up |pred count - true count| over regions.
    GAME(0) is the absolute count error; the regions of level L nest in those of level L - 1, so GAME never falls
    with L. Average it over images for the dataset figure."""
    pred, true = np.asarray(pred_density, dtype=np.float64), np.asarray(true_density, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"GAME needs two [H, W] maps of the same shape, got {pred.shape} and {true.shape}")
    if level < 0:
        raise ValueError(f"GAME level must be >= 0, got {level}")
    cells = 2 ** level
    difference = pred - true
    integral = np.zeros((difference.shape[0] + 1, difference.shape[1] + 1))
    integral[1:, 1:] = difference.cumsum(axis=0).cumsum(axis=1)
    rows = (np.arange(cells + 1) * difference.shape[0]) // cells
    columns = (np.arange(cells + 1) * difference.shape[1]) // cells
    corners = integral[np.ix_(rows, columns)]
    regions = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    return float(np.abs(regions).sum())


def count_metrics(pred_counts, true_counts) -> dict:
    """{"mae", "rmse", "n"} over images. Crowd-counting papers call RMSE "MSE" (sqrt(mean(err^2)), not the mean
    square): print it as "MSE (RMSE)" next to their tables."""
    pred = np.asarray(pred_counts, dtype=np.float64).reshape(-1)
    true = np.asarray(true_counts, dtype=np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{len(pred)} predicted counts but {len(true)} true counts")
    if len(pred) == 0:
        raise ValueError("no counts to score")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("counts must be finite")
    error = pred - true
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())), "n": int(len(pred))}
