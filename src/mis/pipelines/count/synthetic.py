"""Seeded synthetic crowd scenes with head-point annotations, for tests, sample data and CPU smoke training.

Clearly synthetic, not photographic: the point is to give a counting network the cues that matter in real crowds.

- Perspective: a ground plane seen from above head height. Head radius grows linearly with the distance below the
  horizon (near = bottom); the horizon may lie above the image (a camera looking down) or inside it (a sky above).
  People stand denser in image space where they are small (the same ground density), inside crowd regions drawn
  from a smooth random field, so scenes have dense patches, sparse edges and empty areas. Nobody stands where a
  head would be under MIN_HEAD_RADIUS (2 px across): farther heads are not resolved by a camera's blur, and were
  they placed, they could only be drawn larger than their perspective size, piled onto each other.
- People: a body silhouette (shoulders and torso in a clothing colour) under a head (skin, with hair or a hat on
  top, or all hair for people facing away), shaded, drawn far to near so nearer people occlude farther ones.
- Annotation: one point per head centre, ShanghaiTech's convention: every head at least partly visible counts;
  heads hidden completely by nearer people do not (rare: heads are kept about a head apart when placed).
- Backgrounds: sky and ground gradients, textured ground, buildings / stands with rows of lines, random colours.
- Distractors (in about half the scenes): head-sized round blobs that are not people (balls on the ground, lamps on
  poles, round signs, balloons), so the shape context (a body under the head) has to be learnt.
- Lighting (brightness, contrast, colour cast, vignette), blur and sensor noise.

Counts range from 0 to a few thousand: by default log-uniform on 1..2000 with about 8 % empty scenes. Fast: people
are pasted as small cached stamps (one per head size), so a 256x320 scene with 1000 people takes well under 0.2 s.
numpy + scipy only; deterministic per seed (one `np.random.default_rng(seed)`, drawn in a fixed order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

SAMPLE_SEED = 23
MAX_DEFAULT_COUNT = 2000
EMPTY_SCENE_PROBABILITY = 0.08
# The smallest head placed, in pixels of radius. Below it the ground plane is empty: a head of one pixel is noise
# after blur, so no annotation could mark it. (Earlier scenes packed people up to the horizon at the density of
# 0.5 px heads while drawing each at least 0.75 px, so a third of all annotated heads were single pixels in piles
# where one visible pixel made a head "visible"; see the README's crowd-counting section.)
MIN_HEAD_RADIUS = 1.0

SKIN_TONES = np.array([[233, 196, 170], [214, 167, 130], [189, 140, 100], [150, 100, 70], [105, 70, 50],
                       [80, 55, 40]], dtype=np.float32)
HAIR_COLOURS = np.array([[20, 18, 16], [45, 32, 22], [80, 55, 35], [120, 90, 55], [180, 150, 100],
                         [160, 160, 160], [30, 30, 30]], dtype=np.float32)


@dataclass
class CrowdScene:
    image: np.ndarray  # uint8 [H, W, 3]
    points: np.ndarray  # float64 (N, 2): visible head centres as x, y pixels
    head_sizes: np.ndarray  # float64 (N,): head radius in pixels, per point
    params: dict = field(default_factory=dict)  # drawn scene parameters (placed, horizon, near_radius, ...)


def make_crowd_scene(seed: int, height: int = 256, width: int = 320, count: int | None = None, *,
                     distractors: bool | None = None, blur: float | None = None,
                     noise: float | None = None) -> CrowdScene:
    """One synthetic scene. count: people placed (None: drawn, see the module docstring); the annotated points are
    the visible heads, so len(points) <= count (equal in all but the densest scenes). distractors / blur (Gaussian
    sigma, px) / noise (standard deviation, grey levels): None draws them."""
    if height < 16 or width < 16:
        raise ValueError(f"a crowd scene needs at least 16x16 pixels, got {height}x{width}")
    rng = np.random.default_rng(seed)
    drawn_count = _draw_count(rng)
    count = drawn_count if count is None else int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    horizon, near_radius = _draw_perspective(rng, height, width, count)
    image = _background(rng, height, width, horizon)
    use_distractors = rng.random() < 0.5 if distractors is None else distractors
    balloons = _draw_distractors(rng, image, horizon, near_radius) if use_distractors else []
    centres, radii = _place_heads(rng, height, width, count, horizon, near_radius)
    visible = _draw_people(rng, image, centres, radii)
    for balloon in balloons:  # in the air in front of the crowd
        _paste_blob(image, *balloon)
    image = _camera(rng, image, blur, noise)
    points = centres[visible] + rng.uniform(-0.3, 0.3, (int(visible.sum()), 2))  # annotators are not exact
    points = np.clip(points, 0.0, np.array([width, height]) - 1e-3)
    params = {"placed": count, "horizon": horizon, "near_radius": near_radius, "distractors": use_distractors}
    return CrowdScene(image=image, points=points, head_sizes=radii[visible], params=params)


def _draw_count(rng: np.random.Generator) -> int:
    if rng.random() < EMPTY_SCENE_PROBABILITY:
        return 0
    return int(math.exp(rng.uniform(0.0, math.log(MAX_DEFAULT_COUNT + 1))))


def _draw_perspective(rng: np.random.Generator, height: int, width: int, count: int) -> tuple[float, float]:
    """(horizon row, may be negative; head radius at the bottom row). Fewer people: larger heads (a closer view)."""
    horizon = float(rng.choice([rng.uniform(-2.0, -0.3), rng.uniform(0.05, 0.35)])) * height
    spacing = math.sqrt(height * width / max(count, 1))  # typical distance between heads in a full image
    near_radius = float(np.clip(0.3 * spacing * rng.uniform(0.6, 1.6), 2.5, height / 10))
    return horizon, near_radius


def _radius_at(rows: np.ndarray, height: int, horizon: float, near_radius: float) -> np.ndarray:
    return near_radius * np.maximum(rows - horizon, 1e-3) / (height - horizon)


# --------------------------------------------------------------------------- background


def _smooth_noise(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    field_ = gaussian_filter(rng.standard_normal((height, width)), scale, mode="wrap")
    return field_ / (field_.std() + 1e-9)


def _random_colour(rng: np.random.Generator, low: float = 30, high: float = 220) -> np.ndarray:
    return rng.uniform(low, high, 3).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int, horizon: float) -> np.ndarray:
    """float32 [H, W, 3] in 0..255: ground (gradient + texture), sky above an in-image horizon, structures."""
    rows = np.arange(height, dtype=np.float32)[:, None, None] / height
    ground_far, ground_near = _random_colour(rng), _random_colour(rng)
    image = ground_far + (ground_near - ground_far) * rows + np.zeros((1, width, 1), np.float32)
    texture = _smooth_noise(rng, height, width, rng.uniform(0.7, 3.0)) * rng.uniform(4, 22)
    image += texture[..., None]
    if rng.random() < 0.4:  # paving / floor tiles: a grid of faint lines
        step = int(rng.integers(6, 24))
        image[::step] *= 0.85
        image[:, ::step] *= 0.85
    sky_rows = int(max(horizon, 0))
    if sky_rows:
        sky_top, sky_low = _random_colour(rng, 120, 250), _random_colour(rng, 150, 255)
        blend = np.linspace(0, 1, sky_rows, dtype=np.float32)[:, None, None]
        image[:sky_rows] = sky_top + (sky_low - sky_top) * blend
    for _ in range(int(rng.integers(0, 5))):
        _structure(rng, image, max(sky_rows - 1, 0))
    return image


def _structure(rng: np.random.Generator, image: np.ndarray, base_row: int) -> None:
    """A building, stand or wall: a rectangle with rows of lines (windows, seats, stairs)."""
    height, width = image.shape[:2]
    top = int(rng.integers(0, max(base_row, height // 3) + 1))
    bottom = int(min(height, top + rng.integers(height // 10, height // 2 + 2)))
    left = int(rng.integers(-width // 4, width))
    right = int(min(width, left + rng.integers(width // 8, width // 2 + 2)))
    left = max(left, 0)
    if right <= left or bottom <= top:
        return
    image[top:bottom, left:right] = _random_colour(rng)
    step = int(rng.integers(3, 14))
    image[top:bottom:step, left:right] *= rng.uniform(0.5, 0.9)
    if rng.random() < 0.5:
        image[top:bottom, left:right:step] *= rng.uniform(0.6, 0.95)


# --------------------------------------------------------------------------- distractors


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, horizon: float,
                      near_radius: float) -> list[tuple]:
    """Balls, lamps on poles and round signs into the background; returns balloons to draw over the crowd."""
    height, width = image.shape[:2]
    balloons = []
    for _ in range(int(rng.integers(1, 13))):
        kind = rng.choice(["ball", "lamp", "sign", "balloon"])
        row = float(rng.uniform(max(horizon, 0), height))
        radius = float(max(_radius_at(np.array([row]), height, horizon, near_radius)[0] * rng.uniform(0.7, 1.4), 1.0))
        column = float(rng.uniform(0, width))
        colour = _random_colour(rng, 10, 255)
        if kind == "lamp":  # a pole under a bright globe
            top = int(max(row - 8 * radius, 0))
            half = max(int(radius * 0.25), 0)
            image[top:int(row), max(int(column) - half, 0):int(column) + half + 1] = _random_colour(rng, 20, 90)
            _paste_blob(image, top, column, radius, _random_colour(rng, 200, 255))
        elif kind == "balloon":
            balloons.append((row - rng.uniform(2, 8) * radius, column, radius, colour))
        else:
            _paste_blob(image, row, column, radius, colour)
    return balloons


def _paste_blob(image: np.ndarray, row: float, column: float, radius: float, colour: np.ndarray) -> None:
    """A shaded disc (no body under it: a head-sized thing that is not a head)."""
    alpha, shade, (cy, cx) = _disc_stamp(_size_bin(radius))
    _composite(image, int(round(row)) - cy, int(round(column)) - cx, alpha, colour * shade[..., None])


@lru_cache(maxsize=256)
def _disc_stamp(radius: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    half = int(math.ceil(radius)) + 1
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    distance = np.hypot(y, x)
    alpha = np.clip(radius + 0.5 - distance, 0, 1)
    shade = 1.15 - 0.35 * np.clip((y + x) / (2 * radius + 1e-6) + 0.5, 0, 1)  # lit from the upper left
    return alpha, shade, (half, half)


# --------------------------------------------------------------------------- people


def _place_heads(rng: np.random.Generator, height: int, width: int, count: int, horizon: float,
                 near_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) head centres x, y (pixel centres) and radii, sorted far to near (drawing order)."""
    if count == 0:
        return np.zeros((0, 2)), np.zeros(0)
    rows = np.arange(height, dtype=np.float64)
    radius = _radius_at(rows, height, horizon, near_radius)
    crowd = _smooth_noise(rng, height // 4 + 1, width // 4 + 1, rng.uniform(2, 8))
    crowd = np.repeat(np.repeat(crowd, 4, axis=0), 4, axis=1)[:height, :width]
    threshold = rng.uniform(-1.0, 0.6)  # how much of the ground the crowd covers
    weight = np.clip(crowd - threshold, 0, None) + 0.02  # a few people everywhere
    weight *= (1.0 / np.maximum(radius, MIN_HEAD_RADIUS) ** 2)[:, None]  # same ground density: denser where small
    weight[radius < MIN_HEAD_RADIUS] = 0  # nobody above the horizon, nor where heads are too small to resolve
    probability = (weight / weight.sum()).ravel()
    cells = rng.choice(probability.size, size=count, p=probability)
    centres = np.stack([cells % width, cells // width], axis=1).astype(np.float64) + 0.5
    centres = _spread_apart(rng, centres, probability, width, height, horizon, near_radius)
    radii = _radius_at(centres[:, 1], height, horizon, near_radius)
    order = np.argsort(centres[:, 1], kind="stable")
    return centres[order], radii[order]


def _spread_apart(rng: np.random.Generator, centres: np.ndarray, probability: np.ndarray, width: int, height: int,
                  horizon: float, near_radius: float, rounds: int = 3) -> np.ndarray:
    """Move heads that sit less than a head radius from another to new places (a few rounds; what stays crowded
    may be hidden and is then not annotated)."""
    for _ in range(rounds):
        radii = _radius_at(centres[:, 1], height, horizon, near_radius)
        pairs = cKDTree(centres).query_pairs(r=float(radii.max()) * 1.0, output_type="ndarray")
        if len(pairs) == 0:
            break
        distance = np.hypot(*(centres[pairs[:, 0]] - centres[pairs[:, 1]]).T)
        close = pairs[distance < np.minimum(radii[pairs[:, 0]], radii[pairs[:, 1]])]
        if len(close) == 0:
            break
        moved = np.unique(close[:, 0])
        cells = rng.choice(probability.size, size=len(moved), p=probability)
        centres[moved] = np.stack([cells % width, cells // width], axis=1) + 0.5
    return centres


def _draw_people(rng: np.random.Generator, image: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Paste people far to near; returns a boolean mask of the heads that stay at least partly visible."""
    height, width = image.shape[:2]
    owner = np.full((height, width), -1, dtype=np.int64)  # who was drawn last at each pixel ...
    on_head = np.zeros((height, width), dtype=bool)  # ... and whether that pixel is their head
    n = len(centres)
    skin = SKIN_TONES[rng.integers(0, len(SKIN_TONES), n)] * rng.uniform(0.85, 1.1, (n, 1))
    hair = HAIR_COLOURS[rng.integers(0, len(HAIR_COLOURS), n)]
    hats = rng.random(n) < 0.12
    hair[hats] = rng.uniform(10, 255, (int(hats.sum()), 3))
    cloth = rng.uniform(10, 245, (n, 3))
    cloth *= rng.uniform(0.4, 1.0, (n, 1))  # many dark clothes
    variants = rng.integers(0, 3, n)  # facing the camera, facing away, hat/hood
    palette = np.zeros((n, 4, 3), dtype=np.float32)  # per person: nothing, body, face, hair
    palette[:, 1], palette[:, 2], palette[:, 3] = cloth, skin, hair
    for index in range(n):
        layer, alpha, shade, (cy, cx) = _person_stamp(_size_bin(radii[index]), int(variants[index]))
        top, left = int(centres[index, 1]) - cy, int(centres[index, 0]) - cx
        colour = palette[index][layer] * shade[..., None]
        region = _composite(image, top, left, alpha, colour)
        if region is not None:
            (image_rows, image_cols), (stamp_rows, stamp_cols) = region
            painted = alpha[stamp_rows, stamp_cols] > 0.5
            owner[image_rows, image_cols][painted] = index
            on_head[image_rows, image_cols][painted] = layer[stamp_rows, stamp_cols][painted] >= 2
    visible = np.zeros(n, dtype=bool)
    visible[np.unique(owner[on_head & (owner >= 0)])] = True
    return visible


def _size_bin(radius: float) -> float:
    """Radii rounded to 0.25 px below 4 px and to 5 % steps above, so that stamps can be cached."""
    if radius < 4:
        return max(round(radius * 4) / 4, 0.75)  # distractors may be smaller than MIN_HEAD_RADIUS
    return round(4 * 1.05 ** round(math.log(radius / 4) / math.log(1.05)), 3)


@lru_cache(maxsize=512)
def _person_stamp(radius: float, variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(layer index 0 none / 1 body / 2 face / 3 hair, alpha, shading, head centre (row, col)) for a head radius.

    The body: shoulders (an ellipse under the head) and a torso running down about 6 head radii."""
    half_width = int(math.ceil(2.0 * radius)) + 1
    above, below = int(math.ceil(radius)) + 1, int(math.ceil(7 * radius)) + 1
    y, x = np.mgrid[-above:below + 1, -half_width:half_width + 1].astype(np.float32)
    head = np.clip(radius + 0.5 - np.hypot(y, x * 1.08), 0, 1)
    shoulders = np.clip(1.0 - np.hypot((y - 2.3 * radius) / (1.3 * radius), x / (1.8 * radius)), 0, 1) * 6
    torso_half = 1.45 * radius - 0.05 * np.clip(y - 2.3 * radius, 0, None)
    torso = np.clip(torso_half + 0.5 - np.abs(x), 0, 1) * (y > 2.3 * radius)
    body = np.clip(np.maximum(shoulders, torso), 0, 1)
    alpha = np.maximum(head, body * (1 - head))
    layer = np.where(head > 0, 2, np.where(body > 0, 1, 0)).astype(np.int64)
    hair_line = {0: -0.35, 1: 1.5, 2: -0.05}[variant] * radius  # face towards the camera / away / hood or hat
    layer[(layer == 2) & (y < hair_line)] = 3
    shade = np.where(layer >= 2, 1.15 - 0.3 * np.clip((y + 0.5 * x) / (2 * radius) + 0.5, 0, 1),
                     1.0 - 0.35 * np.clip(np.abs(x) / (2 * radius), 0, 1) - 0.1 * np.clip(y / (7 * radius), 0, 1))
    return layer, alpha.astype(np.float32), shade.astype(np.float32), (above, half_width)


def _composite(image: np.ndarray, top: int, left: int, alpha: np.ndarray, colour: np.ndarray):
    """Alpha-blend a stamp with its upper-left corner at (top, left), clipped to the image. Returns the slices
    ((image rows, image cols), (stamp rows, stamp cols)) that were drawn, or None if it lies outside."""
    height, width = image.shape[:2]
    top_clip, left_clip = max(top, 0), max(left, 0)
    bottom, right = min(top + alpha.shape[0], height), min(left + alpha.shape[1], width)
    if bottom <= top_clip or right <= left_clip:
        return None
    image_slices = (slice(top_clip, bottom), slice(left_clip, right))
    stamp_slices = (slice(top_clip - top, bottom - top), slice(left_clip - left, right - left))
    a = alpha[stamp_slices][..., None]
    target = image[image_slices]
    target += a * (colour[stamp_slices] - target)
    return image_slices, stamp_slices


# --------------------------------------------------------------------------- camera


def _camera(rng: np.random.Generator, image: np.ndarray, blur: float | None, noise: float | None) -> np.ndarray:
    """Lighting (gain, contrast, colour cast, vignette), optical blur, sensor noise -> uint8."""
    height, width = image.shape[:2]
    gain, contrast = rng.uniform(0.6, 1.25), rng.uniform(0.7, 1.2)
    cast = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    mean = image.mean()
    image = ((image - mean) * contrast + mean) * gain * cast
    y, x = np.ogrid[-1:1:complex(0, height), -1:1:complex(0, width)]
    image *= (1 - rng.uniform(0, 0.35) * (x ** 2 + y ** 2) / 2)[..., None].astype(np.float32)
    sigma = rng.uniform(0, 1.0) if blur is None else blur
    if sigma > 0:
        image = gaussian_filter(image, (sigma, sigma, 0))
    level = rng.uniform(0, 8) if noise is None else noise
    if level > 0:
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * level
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- sample data


def write_sample_data(out_dir: Path) -> list[Path]:
    """out_dir/crowd/crowd_scene.png and crowd_scene.json (its head points, readable by `read_points`): one seeded
    synthetic scene (320x256, a few hundred people; labelled synthetic: not for accuracy claims)."""
    from PIL import Image

    from mis.io.points import write_points_json

    folder = Path(out_dir) / "crowd"
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_crowd_scene(SAMPLE_SEED, count=300)
    image_path, points_path = folder / "crowd_scene.png", folder / "crowd_scene.json"
    Image.fromarray(scene.image).save(image_path)
    write_points_json(points_path, scene.points, {"source": "synthetic", "seed": SAMPLE_SEED,
                                                  "generator": "mis.pipelines.count.synthetic"})
    return [image_path, points_path]
