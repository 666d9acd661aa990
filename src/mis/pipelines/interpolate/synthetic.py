"""Seeded synthetic cerebral DSA and X-ray coronary angiography (XCA) sequences with exact ground truth.

Public DSA sequences with dense frames are essentially unavailable, so the interpolation network is trained and
checked on rendered ones: every frame at the internal rate is known, so any (i, i + k) pair has its k - 1 middle
frames as exact targets. The recipe is section 7 of the DSA interpolation reference:

1. vessel tree: recursive 2D bifurcation (with a depth coordinate for parallax); radii follow Murray's law
   r_p^3 = r_1^3 + r_2^3, daughters split an angle of 25-75 degrees in Murray's optimal proportion, segments are
   8-20 radii long and wiggle (smooth heading noise). A venous tree drains to a large root (a sinus in DSA);
   XCA adds the catheter.
2. iodine: the path length through a cylinder, 2 sqrt(r^2 - d^2), times a gamma-variate concentration c(s, t)
   delayed by path distance s over the flow velocity (and broadened with s); then a capillary blush and a venous
   phase, later and broader.
3. motion: XCA has cardiac (contraction + twist about the heart) and respiratory (affine) motion; DSA small rigid
   head motion (shifts and roll, plus yaw/pitch and often a slow turn of the view that move vessels by
   parallax). The live frame moves; the DSA mask does not, so subtraction leaves residue of the anatomy.
4. detector: veiling glare, Poisson quantum noise, PSF blur, a display gamma (big vessels saturate towards
   black), Gaussian electronic noise, 8-bit quantisation.

Ranges were set by looking at the real frames (../shared/data/dsa, see PROVENANCE.md), never tuned to one frame:
the DSA pair's content (rows 141-883) has median 190 and mean 183.5 grey levels with dark vessels 3-23 px wide at
1024 px, and the pair differs by PSNR 28.8 dB once both are reduced to 256 px; the coronary cine has mean 110,
interior std ~24 before contrast, temporal noise ~3.7 grey levels, vessels 3-17 px wide at 512 px, and its
frames move by ~8 px (median) between i and i + 2; both have radial power spectra falling as ~f^-3. Geometry is
given in pixels of a 256-pixel frame (REFERENCE_SIZE) and scales with the frame; noise is per output pixel.

Only numpy and scipy. Every random draw comes from the generator passed down, so a seed fixes the output.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import expit

KINDS = ("dsa", "xca")
# Internal frame rates at which synthetic frames differ about as much as the real ones do: coronary cine is
# typically 15 fps; cerebral DSA runs at 2-6 fps, and at 3 fps (i, i + 2) pairs differ about like the real demo
# pair (which GaraMoSt interpolates between).
DEFAULT_FPS = {"dsa": 3.0, "xca": 15.0}
REFERENCE_SIZE = 256
MASK_TIME = -1.0          # s: the DSA mask is exposed before the bolus reaches the field (t = 0 at the root)
SAMPLE_SEED = 2033        # sample data: a window with the arteries filled, moving, and the sinus starting to fill

ARTERY, VEIN, CATHETER = 0, 1, 2


@dataclass
class SyntheticSequence:
    frames: np.ndarray      # float32 [T, H, W] in [0, 1] at the internal rate (every frame is exact ground truth)
    times: np.ndarray       # float64 [T] seconds
    kind: str               # "dsa" or "xca"
    fps: float              # internal rate


# ---- vessel trees ---------------------------------------------------------------------------------------
@dataclass
class VesselSegment:
    points: np.ndarray      # float64 [n, 3]: centreline x, y (pixels, reference pose) and depth z (pixels)
    radius: float           # lumen radius in pixels, constant along the segment (so Murray's law is exact)
    path_start: float       # path length s from the tree's root to points[0], pixels
    parent: int             # index of the parent segment, -1 for a root
    children: list[int] = field(default_factory=list)


@dataclass
class VesselTree:
    segments: list[VesselSegment]

    def bifurcations(self) -> list[tuple[VesselSegment, list[VesselSegment]]]:
        return [(s, [self.segments[c] for c in s.children]) for s in self.segments if s.children]

    def depth(self) -> float:
        """Longest path length from a root to a segment end, pixels."""
        return max((s.path_start + _polyline_length(s.points) for s in self.segments), default=0.0)


@dataclass(frozen=True)
class TreeStyle:
    min_radius: float                 # px: daughters thinner than this are not grown (sub-pixel blush takes over)
    tortuosity: float                 # rad: amplitude of the heading wiggles
    max_segments: int                 # the thickest branches are grown first, so the budget trims the finest
    end_probability: float = 0.15     # a thin branch may leave the projection (end) instead of dividing
    bend: float = 0.4                 # rad: largest random steady turn over one segment (smooth curves)
    length_per_radius: tuple[float, float] = (8.0, 20.0)
    # r_small / r_large at a bifurcation. The reference suggests 0.6-1.0; the real frames also show long trunks
    # giving off thin side branches (diagonals, perforators), so thinner side branches are allowed.
    asymmetry: tuple[float, float] = (0.35, 1.0)
    branch_angle: tuple[float, float] = (25.0, 75.0)   # degrees between the two daughters
    depth_spread: float = 0.8         # range of the depth slope a branch adds to its parent's (parallax)


@dataclass(frozen=True)
class TreeRoot:
    start: tuple[float, float, float]
    heading: float          # rad, image coordinates (x right, y down)
    radius: float
    curvature: float = 0.0  # rad / px: a steady bend (a sinus following the skull)
    length: float | None = None
    path: float = 0.0       # path length already travelled at the start (a vein joining a sinus)


def _polyline_length(points: np.ndarray) -> float:
    return float(np.hypot(*np.diff(points[:, :2], axis=0).T).sum())


def _murray_daughters(radius: float, ratio: float) -> tuple[float, float]:
    """Radii (large, small) of two daughters with r_small / r_large = ratio and r^3 conserved."""
    large = radius / (1.0 + ratio ** 3) ** (1.0 / 3.0)
    return large, ratio * large


def _lowest_ratio(radius: float, min_radius: float) -> float:
    """Smallest r_small / r_large for which the thinner Murray daughter is at least `min_radius` (above 1:
    even a symmetric split is too thin). Inverts r_small / r = q / (1 + q^3)^(1/3)."""
    y = min_radius / radius
    return math.inf if y ** 3 >= 0.5 else y / (1.0 - y ** 3) ** (1.0 / 3.0)


def _murray_angle_shares(r0: float, r1: float, r2: float) -> tuple[float, float]:
    """How the angle between the daughters is shared: Murray's minimum-work angles put the thinner daughter
    further from the parent's direction (cos t1 = (r0^4 + r1^4 - r2^4) / (2 r0^2 r1^2))."""
    cos1 = (r0 ** 4 + r1 ** 4 - r2 ** 4) / (2 * r0 ** 2 * r1 ** 2)
    cos2 = (r0 ** 4 + r2 ** 4 - r1 ** 4) / (2 * r0 ** 2 * r2 ** 2)
    a1, a2 = math.acos(min(1.0, max(-1.0, cos1))), math.acos(min(1.0, max(-1.0, cos2)))
    return a1 / (a1 + a2), a2 / (a1 + a2)


def _tortuous_centreline(start: np.ndarray, heading: float, length: float, radius: float, tortuosity: float,
                         curvature: float, depth_slope: float, draws: np.ndarray) -> tuple[np.ndarray, float]:
    """Centreline points and the end heading. The heading wiggles with two smooth harmonics whose wavelength
    scales with the radius (thin vessels meander on a finer scale); depth changes linearly (for parallax)."""
    step = min(2.0, max(0.7, 0.5 * radius))           # finer for thin vessels: their boxes are small anyway
    n = max(2, int(math.ceil(length / step)) + 1)
    s = np.linspace(0.0, length, n)
    wavelength = (4.0 + 8.0 * draws[0]) * max(radius, 1.0)
    phase = 2 * np.pi * s / wavelength
    # thin vessels are the tortuous ones (corkscrew distal coronaries, cortical branches)
    amplitude = tortuosity * min(3.0, max(0.5, 2.0 / radius))
    wiggle = amplitude * ((2 * draws[1] - 1) * np.sin(phase + 6.283 * draws[2])
                           + 0.5 * (2 * draws[3] - 1) * np.sin(2 * phase + 6.283 * draws[4]))
    theta = heading + curvature * s + wiggle - wiggle[0]
    mid = 0.5 * (theta[1:] + theta[:-1])
    points = np.empty((n, 3))
    points[0] = start
    points[1:, 0] = start[0] + np.cumsum(np.diff(s) * np.cos(mid))
    points[1:, 1] = start[1] + np.cumsum(np.diff(s) * np.sin(mid))
    points[:, 2] = start[2] + depth_slope * s
    return points, float(theta[-1])


@dataclass
class _Branch:
    """A branch waiting to be grown."""
    parent: int                 # segment it divides from, -1 for a root
    start: np.ndarray           # [3] x, y, depth
    heading: float              # rad
    radius: float
    path: float                 # path length from the root at `start`
    origin: np.ndarray          # [2] where its tree starts: daughters lean away from it
    depth_slope: float = 0.0    # depth change per px of length
    curvature: float = 0.0      # rad / px, a steady bend (roots only)
    turn: float = 0.0           # rad, extra turn over its length (back into the field)
    length: float | None = None


def _grow_tree(rng: np.random.Generator, roots: list[TreeRoot], style: TreeStyle, shape: tuple[int, int]
               ) -> VesselTree:
    """Grow thickest-first from the roots; a segment divides at its end (Murray radii and angles) unless it
    left the field, was drawn to end, or its thinner daughter would fall below the minimum radius."""
    h, w = shape
    slack = 0.05 * max(h, w)
    segments: list[VesselSegment] = []
    queue: list = []        # (-radius, creation order, branch): thickest first, ties in creation order
    for root in roots:
        origin = np.asarray(root.start, float)
        heapq.heappush(queue, (-root.radius, len(queue), _Branch(
            -1, origin, root.heading, root.radius, root.path, origin[:2], curvature=root.curvature,
            length=root.length)))
    created = len(queue)
    while queue and len(segments) < style.max_segments:
        branch = heapq.heappop(queue)[2]
        draws = rng.random(13)          # every random number of this segment at once (fewer generator calls)
        length = branch.length
        if length is None:
            lo, hi = style.length_per_radius
            length = max(3.0, (lo + (hi - lo) * draws[6]) * branch.radius)
        bend = branch.curvature + (branch.turn + style.bend * (2 * draws[11] - 1)) / length
        points, end_heading = _tortuous_centreline(branch.start, branch.heading, length, branch.radius,
                                                   style.tortuosity, bend, branch.depth_slope, draws)
        index = len(segments)
        segments.append(VesselSegment(points, branch.radius, branch.path, branch.parent))
        if branch.parent >= 0:
            segments[branch.parent].children.append(index)
        end = points[-1]
        inside = -slack <= end[0] <= w + slack and -slack <= end[1] <= h + slack
        # trunks do not just stop; thin branches may dive out of the projection
        ends_here = branch.radius < 2 * style.min_radius and draws[8] < style.end_probability
        if inside and not ends_here:
            for daughter in _daughters(branch, index, points, end_heading, style, shape, draws):
                heapq.heappush(queue, (-daughter.radius, created, daughter))
                created += 1
    # Children that were queued but never grown (budget spent) would break Murray's law at their parent:
    # the parent then simply ends there.
    for segment in segments:
        if len(segment.children) == 1:
            segment.children.clear()
    return _drop_orphans(segments)


def _daughters(branch: _Branch, index: int, points: np.ndarray, end_heading: float, style: TreeStyle,
               shape: tuple[int, int], draws: np.ndarray) -> list[_Branch]:
    """The two daughters at the end of a grown segment: Murray radii and angle shares, each leaning a little
    away from the tree's origin (left alone, headings random-walk and trees curl into balls), turned back
    into the field near its border, and keeping part of the parent's depth trend (so branches reach across
    the depth of the head or heart). None when even a symmetric split would be thinner than the minimum."""
    lowest = _lowest_ratio(branch.radius, style.min_radius)     # keeps the thinner daughter above the minimum
    if lowest > 1.0:
        return []
    lo = max(style.asymmetry[0], lowest)
    large, small = _murray_daughters(branch.radius, lo + (style.asymmetry[1] - lo) * draws[7])
    lo, hi = style.branch_angle
    spread = math.radians(lo + (hi - lo) * draws[9])
    share_large, share_small = _murray_angle_shares(branch.radius, large, small)
    side = 1.0 if draws[10] < 0.5 else -1.0
    end = points[-1]
    away = math.atan2(end[1] - branch.origin[1], end[0] - branch.origin[0])
    path = branch.path + _polyline_length(points)
    daughters = []
    for radius, angle, u in ((large, side * spread * share_large, draws[5]),
                             (small, -side * spread * share_small, draws[12])):
        heading = end_heading + angle
        heading += 0.35 * _wrap(away - heading)
        daughters.append(_Branch(index, end.copy(), heading, radius, path, branch.origin,
                                 depth_slope=0.8 * branch.depth_slope + style.depth_spread * (u - 0.5),
                                 turn=_turn_inwards(end, heading, shape)))
    return daughters


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _merge_trees(*trees: VesselTree) -> VesselTree:
    segments: list[VesselSegment] = []
    for tree in trees:
        shift = len(segments)
        segments += [VesselSegment(s.points, s.radius, s.path_start, s.parent + shift if s.parent >= 0 else -1,
                                   [c + shift for c in s.children]) for s in tree.segments]
    return VesselTree(segments)


def _turn_inwards(point: np.ndarray, heading: float, shape: tuple[int, int]) -> float:
    """Total turn (rad) for a branch starting near the border and heading out: back towards the centre, more
    the closer it starts (vessels follow the curved surface of the brain or heart)."""
    h, w = shape
    zone = 0.12 * min(shape)
    border = min(point[0], w - point[0], point[1], h - point[1])
    if border > zone:
        return 0.0
    off = _wrap(math.atan2(h / 2 - point[1], w / 2 - point[0]) - heading)
    if abs(off) < np.pi / 2:
        return 0.0
    return off * (0.2 + 0.4 * (1 - border / zone))


def _drop_orphans(segments: list[VesselSegment]) -> VesselTree:
    """Remove segments whose parent no longer lists them (see `_grow_tree`) and renumber."""
    keep = [i for i, s in enumerate(segments) if s.parent < 0 or i in segments[s.parent].children]
    # a dropped segment's descendants must go too: walk in growth order (parents come first)
    kept: set[int] = set()
    for i in keep:
        if segments[i].parent < 0 or segments[i].parent in kept:
            kept.add(i)
    new_index = {old: new for new, old in enumerate(sorted(kept))}
    out = []
    for old in sorted(kept):
        s = segments[old]
        out.append(VesselSegment(s.points, s.radius, s.path_start, new_index.get(s.parent, -1),
                                 [new_index[c] for c in s.children]))
    return VesselTree(out)


# ---- iodine transport -----------------------------------------------------------------------------------
def _gamma_variate(tau: np.ndarray, alpha: float, beta: np.ndarray | float) -> np.ndarray:
    """K tau^alpha exp(-tau / beta) for tau > 0, scaled to a peak of 1 (at tau = alpha beta)."""
    x = np.maximum(tau, 0.0) / (alpha * beta)
    return np.where(tau > 0, x ** alpha * np.exp(alpha * (1.0 - x)), 0.0)


@dataclass(frozen=True)
class Bolus:
    iodine: float           # line integral per pixel of path at full concentration
    alpha: float            # arterial gamma-variate shape
    beta: float             # s, arterial gamma-variate scale at the root
    velocity: float         # px / s along the arteries
    dispersion: float       # px of path over which the bolus broadens by its own width (it disperses downstream)
    arterial_depth: float   # px, longest arterial path
    blush_delay: float      # s
    blush_alpha: float
    blush_beta: float
    blush_strength: float   # line integral of the densest tissue at the blush peak
    vein_delay: float       # s, when the most distal veins start to fill
    vein_alpha: float
    vein_beta: float
    vein_velocity: float    # px / s; veins fill from their distal ends towards the root (the sinus)
    venous_depth: float     # px, longest venous path
    vein_strength: float    # peak venous concentration relative to the arterial one (dilution)
    catheter: float         # concentration-equivalent of the catheter (radio-opaque wall, contrast inside)

    def concentration(self, role: np.ndarray, path: np.ndarray, t: float) -> np.ndarray:
        beta = self.beta * (1.0 + path / self.dispersion)
        arterial = _gamma_variate(t - path / self.velocity, self.alpha, beta)
        venous = self.vein_strength * _gamma_variate(
            t - self.vein_delay - (self.venous_depth - path) / self.vein_velocity, self.vein_alpha, self.vein_beta)
        return np.select([role == ARTERY, role == VEIN], [arterial, venous], self.catheter)

    def blush(self, t: float) -> float:
        return self.blush_strength * float(_gamma_variate(np.asarray(t - self.blush_delay), self.blush_alpha,
                                                          self.blush_beta))

    def phases(self) -> dict[str, tuple[float, float]]:
        """Time ranges (s) of the arterial, capillary and venous phases."""
        arterial_end = (self.alpha * self.beta * (1 + self.arterial_depth / self.dispersion)
                        + self.arterial_depth / self.velocity)
        blush_peak = self.blush_delay + self.blush_alpha * self.blush_beta
        venous_end = (self.vein_delay + self.venous_depth / self.vein_velocity
                      + 2 * self.vein_alpha * self.vein_beta)
        first_filling = 0.3 * self.alpha * self.beta        # the root is visibly opacified from here on
        return {"arterial": (first_filling, arterial_end),
                "capillary": (self.blush_delay, blush_peak + self.blush_beta),
                "venous": (self.vein_delay, venous_end)}


# ---- motion ---------------------------------------------------------------------------------------------
def _rotate(xy: np.ndarray, angle) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], axis=-1)


@dataclass(frozen=True)
class CardiacMotion:
    """XCA: the heart contracts towards its centre and twists (weight falling off with distance, so the
    catheter's far end barely beats), and the whole thorax breathes (translation + slight scaling)."""
    centre: np.ndarray          # px
    reach: float                # px, e-folding distance of the cardiac displacement
    contraction: float          # fractional shortening at end-systole
    twist: float                # rad at end-systole
    sway: np.ndarray            # px, heart translation at end-systole
    heart_rate: float           # Hz
    cardiac_phase: float        # cycles
    breath_rate: float          # Hz
    breath_phase: float         # cycles
    breath_shift: np.ndarray    # px at full inspiration, mostly cranio-caudal
    breath_scale: float         # fractional

    def _systole(self, t: float) -> float:
        """0 at end-diastole, 1 at end-systole; the phase warp makes contraction quicker than relaxation."""
        phase = 2 * np.pi * (self.heart_rate * t + self.cardiac_phase)
        return 0.5 - 0.5 * math.cos(phase + 0.6 * math.sin(phase))

    def _cardiac_displacement(self, xy: np.ndarray, t: float, scale: float) -> np.ndarray:
        rel = xy - self.centre
        weight = np.exp(-(rel ** 2).sum(-1) / (2 * self.reach ** 2))[..., None]
        systole = scale * self._systole(t)
        moved = (1.0 - self.contraction * systole * weight) * _rotate(rel, self.twist * systole * weight[..., 0])
        return moved - rel + weight * self.sway * systole

    def _breathing(self, t: float, scale: float) -> tuple[float, np.ndarray]:
        rho = scale * math.sin(2 * np.pi * (self.breath_rate * t + self.breath_phase))
        return 1.0 + self.breath_scale * rho, self.breath_shift * rho

    def move_points(self, xyz: np.ndarray, t: float, scale: float) -> np.ndarray:
        xy = xyz[:, :2] + self._cardiac_displacement(xyz[:, :2], t, scale)
        zoom, shift = self._breathing(t, scale)
        return self.centre + zoom * (xy - self.centre) + shift

    def body_source(self, xy: np.ndarray, t: float, scale: float) -> np.ndarray:
        """Where the thorax (ribs, spine, diaphragm) shown at xy at time t sits in the reference pose."""
        zoom, shift = self._breathing(t, scale)
        return self.centre + (xy - shift - self.centre) / zoom

    def heart_source(self, xy: np.ndarray, t: float, scale: float) -> np.ndarray:
        """Inverse of `move_points` for the heart layer: undo breathing exactly, then invert the cardiac
        displacement by fixed-point iteration (its gradient is well below 1, so a few steps suffice)."""
        target = self.body_source(xy, t, scale)
        source = target.copy()
        for _ in range(5):
            source = target - self._cardiac_displacement(source, t, scale)
        return source


@dataclass(frozen=True)
class HeadMotion:
    """Cerebral DSA: the head is nearly still, with a slow drift and a few smooth jerks; shifts and roll move
    everything (the mask no longer matches: residue). Yaw and pitch turn the vessels in 3D, so they move by
    parallax, each by its depth. Many runs also turn the view about the vertical axis (rotational / 4D DSA,
    where a matching mask run keeps the bone subtracted): the vessels of the real demo pair move by ~3 px at
    1024 px over a clean background. The turn is a slow swing of bounded amplitude: the trees are flat apart
    from a depth coordinate, so they cannot be shown from far-off angles."""
    centre: np.ndarray          # px, rotation centre
    steps: np.ndarray           # [k, 7]: time (s), duration (s), dx, dy (px), roll, yaw, pitch (rad)
    drift: np.ndarray           # [5]: dx, dy (px / s), roll, yaw, pitch (rad / s)
    swing: tuple[float, float, float] = (0.0, 0.0, 0.0)   # yaw amplitude (rad), angular frequency (rad/s), phase

    def _pose(self, t: float, scale: float) -> np.ndarray:
        ramps = 0.5 * (1.0 + np.tanh(2.5 * (t - self.steps[:, 0]) / self.steps[:, 1]))
        pose = self.drift * (t - MASK_TIME) + ramps @ self.steps[:, 2:]
        amplitude, frequency, phase = self.swing
        pose[3] += amplitude * math.sin(frequency * t + phase)
        return scale * pose

    def move_points(self, xyz: np.ndarray, t: float, scale: float) -> np.ndarray:
        dx, dy, roll, yaw, pitch = self._pose(t, scale)
        rel = xyz[:, :2] - self.centre
        # turn about the vertical axis (yaw: x and depth mix), then the horizontal one (pitch), then roll
        x = rel[:, 0] * math.cos(yaw) + xyz[:, 2] * math.sin(yaw)
        depth = xyz[:, 2] * math.cos(yaw) - rel[:, 0] * math.sin(yaw)
        y = rel[:, 1] * math.cos(pitch) + depth * math.sin(pitch)
        return self.centre + _rotate(np.stack([x, y], axis=-1), roll) + (dx, dy)

    def body_source(self, xy: np.ndarray, t: float, scale: float) -> np.ndarray:
        dx, dy, roll, _, _ = self._pose(t, scale)
        return self.centre + _rotate(xy - (dx, dy) - self.centre, -roll)

    heart_source = body_source


# ---- the scene ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Detector:
    photons: float              # N0: photons per pixel of the unattenuated beam
    psf_sigma: float            # px
    glare: float                # fraction of the signal spread by veiling glare
    glare_sigma: float          # px
    electronic_noise: float     # std in display units ([0, 1])
    level: float                # display value of `reference`
    gain: float                 # display gamma: shown = level * exp(-gain * (signal - reference)), so big
                                # vessels saturate towards black as in the real frames
    reference: float            # XCA: mean anatomy line integral (shown at `level`); DSA: 0 (subtracted)
    collimator: np.ndarray | None = field(default=None, repr=False)   # XCA: static border shading [H, W]
    mask_log: np.ndarray | None = field(default=None, repr=False)     # DSA: -log(mask exposure / N0) [H, W]


@dataclass
class _Capsules:
    """All centrelines as short capsules between consecutive points (rendered vectorised)."""
    points: np.ndarray          # [M, 3]
    first: np.ndarray           # [n] index of each capsule's start point (its end is first + 1)
    radius: np.ndarray          # [n]
    path: np.ndarray            # [n] path length from the tree root at the capsule's middle
    role: np.ndarray            # [n] ARTERY, VEIN or CATHETER


@dataclass
class Scene:
    """Everything drawn for one scene; frames at any time t are rendered from it (`_render_frames`)."""
    kind: str
    shape: tuple[int, int]
    arteries: VesselTree
    veins: VesselTree
    catheter: np.ndarray | None = field(repr=False)   # [n, 3] polyline (XCA)
    catheter_radius: float
    margin: int                                       # anatomy maps extend this many px beyond the frame
    body: np.ndarray = field(repr=False)              # line integral of the anatomy moving with the body
    heart: np.ndarray | None = field(repr=False)      # XCA: the heart shadow (moves with the heart)
    tissue: np.ndarray = field(repr=False)            # where the capillary blush shows (moves with the vessels)
    bolus: Bolus
    motion: CardiacMotion | HeadMotion
    detector: Detector
    capsules: _Capsules = field(repr=False)
    motion_scale: float = 1.0                         # 0 freezes all motion (tests); 1 as drawn


def _capsules(trees: list[tuple[int, VesselTree]], catheter: np.ndarray | None, catheter_radius: float
              ) -> _Capsules:
    polylines = [(role, s.points, s.radius, s.path_start) for role, tree in trees for s in tree.segments]
    if catheter is not None:
        polylines.append((CATHETER, catheter, catheter_radius, 0.0))
    points, first, radius, path, role = [], [], [], [], []
    offset = 0
    for kind, pts, r, s0 in polylines:
        n = len(pts)
        step = np.hypot(*np.diff(pts[:, :2], axis=0).T)
        points.append(pts)
        first.append(offset + np.arange(n - 1))
        radius.append(np.full(n - 1, r))
        path.append(s0 + np.cumsum(step) - 0.5 * step)
        role.append(np.full(n - 1, kind, np.int8))
        offset += n
    return _Capsules(np.concatenate(points), np.concatenate(first), np.concatenate(radius),
                     np.concatenate(path), np.concatenate(role))


def _fractal_field(rng: np.random.Generator, shape: tuple[int, int], slope: float = 3.0,
                   finest: float = 1.5) -> np.ndarray:
    """Unit-std noise with radial power ~ f^-slope (the real frames' spectra fall as ~f^-3), with detail
    finer than `finest` px removed so that bilinear resampling under motion does not visibly soften it."""
    h, w = shape
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1.0
    amplitude = f ** (-slope / 2) * np.exp(-(f * finest) ** 2 * 4)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
    field_ = np.fft.irfft2(spectrum, s=shape)
    return field_ / field_.std()


def _smooth_fractal_field(rng: np.random.Generator, shape: tuple[int, int], slope: float) -> np.ndarray:
    """A steep-spectrum (slope >= 2.5) fractal field drawn on a 4x coarser grid and interpolated up: it has
    almost no detail at the scale that is lost, and costs a sixteenth."""
    factor = 4
    coarse = _fractal_field(rng, (shape[0] // factor + 2, shape[1] // factor + 2), slope)
    return _upsample(coarse, shape, factor)


def _upsample(coarse: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """Linear interpolation of a grid sampled every `factor` pixels (knot k at pixel k * factor) to `shape`."""
    return _interpolate_grid(coarse, np.arange(coarse.shape[0]) * float(factor),
                             np.arange(coarse.shape[1]) * float(factor), shape)


def _interpolate_grid(coarse: np.ndarray, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of values at knots (ys x xs, increasing pixel positions) to every pixel of
    `shape`, clamped beyond the last knots; leading axes of `coarse` are (y, x), any trailing ones ride along.
    Plain indexing rather than matrix products: tiny BLAS calls spawn threads that cost more than they save."""
    out = coarse
    for axis, (knots, n) in enumerate(((ys, shape[0]), (xs, shape[1]))):
        position = np.interp(np.arange(n), knots, np.arange(len(knots), dtype=float))
        lower = np.minimum(position.astype(int), max(len(knots) - 2, 0))
        upper = np.minimum(lower + 1, len(knots) - 1)
        frac = (position - lower).reshape((-1,) + (1,) * (out.ndim - axis - 1))
        out = np.take(out, lower, axis=axis) * (1.0 - frac) + np.take(out, upper, axis=axis) * frac
    return out


def _anatomy_grid(shape: tuple[int, int], margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame coordinates (x, y) of the anatomy maps, which extend `margin` px beyond the frame on each side."""
    h, w = shape
    y, x = np.mgrid[-margin:h + margin, -margin:w + margin].astype(float)
    return x, y


def _thorax(rng: np.random.Generator, shape: tuple[int, int], margin: int, unit: float,
            heart_centre: np.ndarray, heart_axes: np.ndarray, heart_angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(body, heart) line integrals for XCA: lung field, diaphragm, ribs and sometimes the spine move with
    breathing; the heart shadow also beats."""
    x, y = _anatomy_grid(shape, margin)
    size = min(shape)
    # smooth variation plus a finer mottle (lung markings, soft tissue): in the real cine the moving background
    # texture, not only the vessels, makes consecutive frames differ
    body = (rng.uniform(1.3, 1.8) + rng.uniform(0.02, 0.05) * _smooth_fractal_field(rng, x.shape, 3.0)
            + rng.uniform(0.03, 0.07) * _fractal_field(rng, x.shape, slope=1.7))
    # lung: a brighter (less attenuating) region behind a soft edge
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.1, 0.45) * size
    across = (x - shape[1] / 2) * math.cos(angle) + (y - shape[0] / 2) * math.sin(angle) - offset
    body -= rng.uniform(0.15, 0.35) * expit(across / (rng.uniform(3, 10) * unit))
    # diaphragm: a curved, fairly sharp edge with the (denser) abdomen beyond it
    if rng.random() < 0.7:
        angle = rng.uniform(0, 2 * np.pi)
        u = (x - shape[1] / 2) * math.cos(angle) + (y - shape[0] / 2) * math.sin(angle)
        v = -(x - shape[1] / 2) * math.sin(angle) + (y - shape[0] / 2) * math.cos(angle)
        edge = rng.uniform(0.2, 0.6) * size + rng.uniform(0.3, 1.5) * u ** 2 / size
        body += rng.uniform(0.2, 0.45) * expit((v - edge) / (rng.uniform(1.5, 4.0) * unit))
    # ribs: parallel arcs of bone with brighter cortical edges
    angle = rng.uniform(0, 2 * np.pi)
    arc_centre = np.array(shape[::-1]) / 2 + rng.uniform(1.0, 2.0) * size * np.array([math.cos(angle),
                                                                                      math.sin(angle)])
    rho = np.hypot(x - arc_centre[0], y - arc_centre[1])
    near = np.hypot(*(arc_centre - np.array(shape[::-1]) / 2)) - 0.7 * size
    spacing = rng.uniform(0.13, 0.2) * size
    width, edge = rng.uniform(0.04, 0.07) * size, rng.uniform(1.0, 2.0) * unit
    strength = rng.uniform(0.04, 0.1)
    count = int(1.4 * size / spacing) + 1
    centres = near + spacing * (np.arange(count) + rng.uniform(-0.1, 0.1, count))
    nearest = centres[np.clip(np.rint((rho - near) / spacing), 0, count - 1).astype(int)]
    d = np.abs(rho - nearest) - width / 2                     # distance outside the nearest rib
    body += strength * (expit(-d / edge) + 0.6 * np.exp(-(d / edge) ** 2))
    # spine: a band of vertebral bodies, present in some projections
    if rng.random() < 0.5:
        angle = math.pi / 2 + rng.uniform(-0.35, 0.35)
        x0 = rng.uniform(0.1, 0.9) * shape[1]
        across = (x - x0) * math.sin(angle) - (y - shape[0] / 2) * math.cos(angle)
        along = (x - x0) * math.cos(angle) + (y - shape[0] / 2) * math.sin(angle)
        half = rng.uniform(0.07, 0.11) * size
        period = rng.uniform(0.1, 0.15) * size
        blocks = 1.0 + 0.3 * np.cos(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        body += rng.uniform(0.1, 0.25) * expit((half - np.abs(across)) / (2 * unit)) * blocks
    # heart shadow: a soft ellipse (its edge moves as the heart beats)
    rel = np.stack([x - heart_centre[0], y - heart_centre[1]], axis=-1)
    u, v = _rotate(rel, -heart_angle).transpose(2, 0, 1)
    # an ellipse with a lumpy outline (atria, ventricles, fat pads); its border against the lung is the
    # strongest moving edge of a real cine
    rho = np.hypot(u / heart_axes[0], v / heart_axes[1]) + 0.06 * _smooth_fractal_field(rng, x.shape, 4.0)
    heart = rng.uniform(0.2, 0.45) * expit((1.0 - rho) / rng.uniform(0.01, 0.03))
    heart += rng.uniform(0.03, 0.06) * _fractal_field(rng, x.shape, slope=1.7) * expit((1.2 - rho) / 0.05)
    return body, heart


def _head(rng: np.random.Generator, shape: tuple[int, int], margin: int, unit: float) -> np.ndarray:
    """Line integral of a head for DSA: soft tissue, a skull ring with cortical edges, a lumpy skull-base / face
    region and fine texture. Subtraction removes it, except where the head moved since the mask. Its edges are
    kept a few times fainter than real bone, as after the pixel-shift registration scanners apply: the real
    demo pair shows only faint residue, and at full strength a 1 px jerk would leave 100+ grey-level rings."""
    x, y = _anatomy_grid(shape, margin)
    size = min(shape)
    centre = np.array(shape[::-1]) / 2 + rng.uniform(-0.1, 0.1, 2) * size
    axes = rng.uniform(0.45, 0.65, 2) * size
    rel = np.stack([x - centre[0], y - centre[1]], axis=-1)
    u, v = _rotate(rel, -rng.uniform(-0.3, 0.3)).transpose(2, 0, 1)
    rho = np.hypot(u / axes[0], v / axes[1])
    depth = (1.0 - rho) * axes.mean()                          # px inside the head outline
    line = rng.uniform(1.5, 2.2) + rng.uniform(0.1, 0.2) * expit(depth / (4 * unit))
    thickness, edge = rng.uniform(0.02, 0.04) * size, rng.uniform(1.5, 3.0) * unit
    d = np.abs(depth - thickness / 2) - thickness / 2
    line += rng.uniform(0.03, 0.07) * (expit(-d / edge) + 0.5 * np.exp(-(d / edge) ** 2))
    angle = rng.uniform(0, 2 * np.pi)
    toward = (x - centre[0]) * math.cos(angle) + (y - centre[1]) * math.sin(angle)
    region = expit((toward - rng.uniform(0.1, 0.3) * size) / (0.08 * size))
    line += rng.uniform(0.01, 0.03) * region * np.abs(_fractal_field(rng, x.shape, slope=2.5))
    line += rng.uniform(0.004, 0.01) * _smooth_fractal_field(rng, x.shape, 3.0)
    return line


def _tissue_density(rng: np.random.Generator, tree: VesselTree, shape: tuple[int, int], margin: int,
                    unit: float) -> np.ndarray:
    """Where the capillary blush shows: the arterial tree's terminal flow (r^3 per leaf, by Murray's law)
    spread over the tissue it feeds, mottled; peak 1."""
    factor = 4
    h, w = shape[0] + 2 * margin, shape[1] + 2 * margin
    coarse_shape = (h // factor + 1, w // factor + 1)
    leaves = [s for s in tree.segments if not s.children]
    density = np.zeros(coarse_shape)
    if leaves:
        ends = np.array([s.points[-1, :2] for s in leaves]) + margin
        flow = np.array([s.radius ** 3 for s in leaves])
        cx = np.clip((ends[:, 0] / factor).astype(int), 0, coarse_shape[1] - 1)
        cy = np.clip((ends[:, 1] / factor).astype(int), 0, coarse_shape[0] - 1)
        np.add.at(density, (cy, cx), flow)
    density = _upsample(ndimage.gaussian_filter(density, 20 * unit / factor), (h, w), factor)  # ~8 % of the frame
    density /= max(density.max(), 1e-12)
    return density * (0.7 + 0.3 * expit(1.5 * _smooth_fractal_field(rng, (h, w), 2.5)))


def _catheter(rng: np.random.Generator, ostium: np.ndarray, heading: float, shape: tuple[int, int]
              ) -> np.ndarray:
    """The guiding catheter: from the ostium out of the field with a gentle, steady bend."""
    size = max(shape)
    length = 1.6 * size
    n = int(length / 1.5) + 1
    s = np.linspace(0, length, n)
    theta = heading + rng.uniform(-1.5, 1.5) / size * s + 0.15 * np.sin(2 * np.pi * s / size + rng.uniform(0, 6.3))
    points = np.zeros((n, 3))
    points[0, :2] = ostium
    points[1:, 0] = ostium[0] + np.cumsum(np.diff(s) * np.cos(theta[1:]))
    points[1:, 1] = ostium[1] + np.cumsum(np.diff(s) * np.sin(theta[1:]))
    slack = 0.1 * size
    outside = ((points[:, 0] < -slack) | (points[:, 0] > shape[1] + slack)
               | (points[:, 1] < -slack) | (points[:, 1] > shape[0] + slack))
    last = int(np.argmax(outside)) if outside.any() else n - 1
    return points[:max(last + 1, 2)]


def _psf_noise_factor(sigma: float) -> float:
    """How much a Gaussian PSF of `sigma` px lowers the std of white noise (sum of squared kernel weights)."""
    radius = int(4 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return float((kernel ** 2).sum())


def _collimator(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray | None:
    """Static darkening of the borders (collimator blades / image-intensifier vignetting) seen in cine frames."""
    if rng.random() < 0.4:
        return None
    h, w = shape
    width = rng.uniform(0.005, 0.02) * min(shape)
    y, x = np.mgrid[0:h, 0:w]
    border = np.minimum(np.minimum(x, w - 1 - x), np.minimum(y, h - 1 - y)).astype(float)
    return 1.0 - rng.uniform(0.2, 0.6) * expit((width - border) / (0.3 * width + 0.5))


def _draw_scene(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> Scene:
    """One random scene: trees, anatomy, bolus, motion and detector (the tree is `scene.arteries`)."""
    shape = (int(size[0]), int(size[1]))
    side = min(shape)
    unit = side / REFERENCE_SIZE
    area = shape[0] * shape[1] / REFERENCE_SIZE ** 2
    margin = int(math.ceil(0.12 * max(shape))) + 4
    centre = np.array(shape[::-1], float) / 2
    draw = _draw_coronary if kind == "xca" else _draw_cerebral
    return draw(rng, shape, unit, area, margin, centre)


def _bolus(rng: np.random.Generator, kind: str, iodine: float, side: int, arteries: VesselTree,
           veins: VesselTree) -> Bolus:
    """Arterial gamma-variate and transit, then blush and venous phase later and broader (blush strength and
    the catheter are set by the caller, which knows the display)."""
    fov_mm = rng.uniform(200, 240) if kind == "dsa" else rng.uniform(100, 140)
    velocity = rng.uniform(100, 400) * side / fov_mm             # 10-40 cm/s in px/s
    # coronary injections are short and hand-driven: the real cine fills within ~0.5 s, faster than the
    # reference's beta of 0.5-1.5 s (kept for DSA)
    alpha = rng.uniform(2.0, 4.0)
    beta = rng.uniform(0.5, 1.5) if kind == "dsa" else rng.uniform(0.25, 0.6)
    depth = arteries.depth()
    blush_delay = depth / velocity + alpha * beta * rng.uniform(0.6, 1.2)
    blush_alpha, blush_beta = rng.uniform(2.0, 4.0), rng.uniform(0.8, 1.6)
    vein_delay = blush_delay + rng.uniform(0.5, 2.0)
    return Bolus(iodine=iodine, alpha=alpha, beta=beta, velocity=velocity, dispersion=rng.uniform(1.0, 3.0) * side,
                 arterial_depth=depth, blush_delay=blush_delay, blush_alpha=blush_alpha, blush_beta=blush_beta,
                 blush_strength=0.0, vein_delay=vein_delay, vein_alpha=rng.uniform(2.0, 4.0),
                 vein_beta=rng.uniform(1.0, 2.0), vein_velocity=velocity * rng.uniform(0.2, 0.5),
                 venous_depth=veins.depth(),
                 vein_strength=rng.uniform(0.6, 0.9) if kind == "dsa" else rng.uniform(0.3, 0.6),
                 catheter=0.0)


def _draw_coronary(rng, shape, unit, area, margin, centre) -> Scene:
    side = min(shape)
    # the heart fills most of a coronary view: only part of its border crosses the frame
    heart_centre = centre + rng.uniform(-0.35, 0.35, 2) * side
    heart_axes = rng.uniform(0.55, 0.9, 2) * side
    heart_angle = rng.uniform(0, np.pi)
    # the ostium sits on the heart's upper rim; the tree runs across the shadow
    around = rng.uniform(0, 2 * np.pi)
    rim = _rotate(np.array([math.cos(around) * heart_axes[0], math.sin(around) * heart_axes[1]]), heart_angle)
    ostium = np.clip(heart_centre + rng.uniform(0.6, 0.9) * rim, 0.1 * side, np.array(shape[::-1]) - 0.1 * side)
    inward = math.atan2(*(centre - ostium)[::-1]) + rng.uniform(-0.6, 0.6)
    root_radius = rng.uniform(3.2, 5.0) * unit
    style = TreeStyle(min_radius=rng.uniform(0.5, 0.8), tortuosity=rng.uniform(0.15, 0.45),
                      max_segments=max(24, int(380 * area)))
    # the left main stem is short: it divides soon after the ostium
    arteries = _grow_tree(rng, [TreeRoot((*ostium, 0.0), inward, root_radius,
                                         length=rng.uniform(3.0, 8.0) * root_radius)], style, shape)
    vein_start = ostium + rng.uniform(-0.15, 0.15, 2) * side
    veins = _grow_tree(rng, [TreeRoot((*vein_start, 0.0), inward + rng.uniform(-0.8, 0.8),
                                      root_radius * rng.uniform(0.6, 0.9))],
                       TreeStyle(min_radius=style.min_radius + 0.2, tortuosity=0.5 * style.tortuosity,
                                 max_segments=max(8, int(90 * area))), shape)
    catheter_heading = inward + np.pi + rng.uniform(-0.5, 0.5)
    catheter = _catheter(rng, ostium, catheter_heading, shape)
    catheter_radius = max(0.8, rng.uniform(1.3, 2.0) * unit)
    body, heart = _thorax(rng, shape, margin, unit, heart_centre, heart_axes, heart_angle)
    tissue = _tissue_density(rng, arteries, shape, margin, unit)
    motion = CardiacMotion(
        centre=heart_centre, reach=rng.uniform(0.5, 0.9) * side, contraction=rng.uniform(0.08, 0.22),
        twist=rng.uniform(-0.1, 0.1), sway=rng.uniform(-12, 12, 2) * unit, heart_rate=rng.uniform(1.0, 1.5),
        cardiac_phase=rng.uniform(0, 1), breath_rate=rng.uniform(0.2, 0.3), breath_phase=rng.uniform(0, 1),
        # cine is often acquired in breath-hold: respiratory motion from none to 15 px cranio-caudal
        breath_shift=np.array([rng.uniform(-2, 2), rng.uniform(0, 15) * rng.choice([-1, 1])]) * unit,
        breath_scale=rng.uniform(0, 0.02))
    # display: anatomy mean at `level` (real cine ~110), anatomy std 20-32 grey levels (real interior ~24 before
    # contrast); the root vessel at peak removes 60-82 % of the light (real: the darkest vessels reach ~30,
    # branches a third of its width still ~40 grey levels below their surroundings)
    inner = (slice(margin, margin + shape[0]), slice(margin, margin + shape[1]))
    anatomy = body[inner] + heart[inner]
    reference, spread = float(anatomy.mean()), float(anatomy.std())
    level = rng.uniform(100, 125) / 255
    gamma = rng.uniform(20, 32) / 255 / level / spread
    root_line = -math.log(1.0 - rng.uniform(0.6, 0.82)) / gamma
    # quantum noise after the PSF of 3.5-5.5 grey levels at the mean transmission (the real cine's temporal
    # noise is ~3.7 in its quiet areas); the dose N0 follows
    psf = rng.uniform(0.5, 1.0)
    noise = rng.uniform(3.5, 5.5) / 255 / _psf_noise_factor(psf)
    detector = Detector(photons=math.exp(reference) * (level * gamma / noise) ** 2, psf_sigma=psf,
                        glare=rng.uniform(0.02, 0.08), glare_sigma=0.15 * side,
                        electronic_noise=rng.uniform(0.5, 2.0) / 255, level=level, gain=gamma,
                        reference=reference, collimator=_collimator(rng, shape))
    bolus = _bolus(rng, "xca", root_line / (2 * root_radius), side, arteries, veins)
    # the catheter (radio-opaque, filled with contrast) looks about as dark as the vessel it feeds
    bolus = replace(bolus, blush_strength=rng.uniform(0.02, 0.08) * root_line,
                    catheter=rng.uniform(0.5, 0.9) * root_radius / catheter_radius)
    return Scene("xca", shape, arteries, veins, catheter, catheter_radius, margin, body, heart, tissue, bolus,
                 motion, detector, _capsules([(ARTERY, arteries), (VEIN, veins)], catheter, catheter_radius))


def _cerebral_veins(rng: np.random.Generator, shape: tuple[int, int], flip: float, root_radius: float,
                    arterial_style: TreeStyle, area: float) -> VesselTree:
    """A sinus that follows the skull up the back and over the top (grown from its downstream end, so path
    length counts upstream), and cortical veins that join it along the way."""
    h, w = shape
    side = min(shape)
    bend_radius = rng.uniform(0.4, 0.5) * side
    sinus_radius = root_radius * rng.uniform(1.0, 1.4)
    start = (w * (0.5 + flip * rng.uniform(0.3, 0.4)), h * rng.uniform(0.5, 0.7), 0.0)
    style = TreeStyle(min_radius=arterial_style.min_radius, tortuosity=0.5 * arterial_style.tortuosity,
                      max_segments=1)
    sinus = _grow_tree(rng, [TreeRoot(start, -np.pi / 2, sinus_radius, curvature=-flip / bend_radius,
                                      length=rng.uniform(1.1, 1.5) * bend_radius)], style, shape)
    points = sinus.segments[0].points
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points[:, :2], axis=0).T))])
    arc_centre = np.array([start[0] - flip * bend_radius, start[1]])
    roots = []
    for k in np.sort(rng.integers(int(0.1 * len(points)), len(points), int(rng.integers(3, 7)))):
        inward = math.atan2(*(arc_centre - points[k, :2])[::-1]) + rng.uniform(-0.5, 0.5)
        roots.append(TreeRoot(tuple(points[k]), inward, sinus_radius * rng.uniform(0.3, 0.5), path=along[k]))
    cortical = _grow_tree(rng, roots, TreeStyle(min_radius=style.min_radius, tortuosity=style.tortuosity,
                                                max_segments=max(8, int(150 * area))), shape)
    return _merge_trees(sinus, cortical)


def _draw_cerebral(rng, shape, unit, area, margin, centre) -> Scene:
    side = min(shape)
    h, w = shape
    flip = rng.choice([-1.0, 1.0])                     # facing left or right
    root_radius = rng.uniform(2.8, 4.2) * unit
    # the cerebral arteries spread through the depth of the head (which is what parallax shows)
    style = TreeStyle(min_radius=rng.uniform(0.5, 0.8), tortuosity=rng.uniform(0.25, 0.55),
                      max_segments=max(24, int(600 * area)), depth_spread=1.4)
    # internal carotid from the bottom edge, sometimes an external carotid beside it
    ica = TreeRoot((w * (0.5 + flip * rng.uniform(-0.15, 0.1)), h + 2.0, rng.uniform(-0.1, 0.1) * side),
                   -np.pi / 2 + rng.uniform(-0.25, 0.25), root_radius)
    roots = [ica]
    if rng.random() < 0.6:
        roots.append(TreeRoot((ica.start[0] - flip * rng.uniform(0.04, 0.1) * side, h + 2.0,
                               rng.uniform(-0.15, 0.15) * side),
                              -np.pi / 2 - flip * rng.uniform(0.2, 0.6), root_radius * rng.uniform(0.5, 0.7)))
    arteries = _grow_tree(rng, roots, style, shape)
    veins = _cerebral_veins(rng, shape, flip, root_radius, style, area)
    body = _head(rng, shape, margin, unit)
    tissue = _tissue_density(rng, arteries, shape, margin, unit)
    steps = np.zeros((rng.poisson(1.5), 7))
    if len(steps):
        steps[:, 0] = rng.uniform(MASK_TIME, 16.0, len(steps))
        steps[:, 1] = rng.uniform(0.3, 1.5, len(steps))
        steps[:, 2:4] = rng.normal(0.0, 0.6, (len(steps), 2)) * unit
        steps[:, 4:7] = rng.normal(0.0, math.radians(0.3), (len(steps), 3))
    drift = np.concatenate([rng.normal(0, 0.05, 2) * unit, rng.normal(0, math.radians(0.02), 3)])
    swing = (0.0, 0.0, 0.0)
    if rng.random() < 0.8:                            # the view turns at up to 5-20 degrees per second
        amplitude = math.radians(rng.uniform(10.0, 25.0))
        swing = (amplitude, math.radians(rng.uniform(5.0, 20.0)) / amplitude, rng.uniform(0, 2 * np.pi))
    motion = HeadMotion(centre=centre + rng.uniform(-0.3, 0.3, 2) * side, steps=steps, drift=drift, swing=swing)
    inner = (slice(margin, margin + h), slice(margin, margin + w))
    reference = float(body[inner].mean())
    contrast = rng.uniform(0.3, 0.6)                      # line integral of the root vessel at peak
    # Windowed display, level * exp(-gamma S): a 1.5 px-radius artery at peak is shown 45-65 % darker than the
    # background (the real pair's small vessels are ~60-90 grey levels below ~190), the big ones near black.
    level = rng.uniform(176, 200) / 255
    gamma = -math.log(1.0 - rng.uniform(0.45, 0.65)) / (contrast * 1.5 / root_radius)
    psf = rng.uniform(0.5, 1.0)
    noise = rng.uniform(1.5, 3.5) / 255 / _psf_noise_factor(psf)      # live and mask together, after the PSF
    detector = Detector(photons=2 * math.exp(reference) * (level * gamma / noise) ** 2, psf_sigma=psf,
                        glare=rng.uniform(0.02, 0.08), glare_sigma=0.15 * side,
                        electronic_noise=rng.uniform(0.5, 2.0) / 255, level=level, gain=gamma, reference=0.0)
    iodine = contrast / (2 * root_radius)
    bolus = replace(_bolus(rng, "dsa", iodine, side, arteries, veins),
                    blush_strength=rng.uniform(0.04, 0.12) * contrast)
    scene = Scene("dsa", shape, arteries, veins, None, 0.0, margin, body, None, tissue, bolus, motion, detector,
                  _capsules([(ARTERY, arteries), (VEIN, veins)], None, 0.0))
    # the mask: one exposure of the anatomy before the bolus, subtracted from every live frame
    mask_line = _sample(body, _smooth_map(lambda xy: motion.body_source(xy, MASK_TIME, 1.0), shape), margin)
    mask_log = _expose(mask_line, detector, rng)
    scene.detector = replace(detector, mask_log=mask_log)
    return scene


# ---- rendering ------------------------------------------------------------------------------------------
def _sample(image: np.ndarray, xy: np.ndarray, margin: int) -> np.ndarray:
    return ndimage.map_coordinates(image, [xy[..., 1] + margin, xy[..., 0] + margin], order=1, mode="nearest")


def _cross_section(dist2: np.ndarray, radius: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Iodine path length at squared distance d^2 from the centreline: the chord 2 sqrt(r^2 - d^2) for vessels
    wider than a pixel; for thinner ones the chord averaged over the pixel (a Gaussian of the same area, pi r^2,
    and variance r^2 / 4 + 1/12), so sub-pixel vessels neither vanish between pixel centres nor flicker when
    they move; blended between r = 1 and 2."""
    blend = np.clip(radius - 1.0, 0.0, 1.0)
    chord = smooth = 0.0
    if blend.max() > 0:
        chord = 2.0 * np.sqrt(np.maximum(radius ** 2 - dist2, 0.0))
    if blend.min() < 1:
        smooth = (np.pi * radius ** 2 / (np.sqrt(2 * np.pi) * sigma)) * np.exp(-dist2 / (2 * sigma ** 2))
    return blend * chord + (1.0 - blend) * smooth


def _rasterise_capsules(start: np.ndarray, end: np.ndarray, radius: np.ndarray, weight: np.ndarray,
                        shape: tuple[int, int]) -> np.ndarray:
    """Draw capsules (centreline pieces with a radius) as iodine line integrals. Each capsule fills a square
    box around it; all capsules with the same box size are evaluated at once. Overlaps keep the largest value,
    so the joints of a polyline and the bifurcations are not counted twice (crossing vessels show the denser
    one rather than the sum: a small loss where vessels cross in projection)."""
    h, w = shape
    out = np.zeros(h * w)
    sigma = np.sqrt(radius ** 2 / 4 + 1 / 12)
    reach = np.where(radius >= 2.0, radius, np.maximum(radius, 3 * sigma))
    middle = 0.5 * (start + end)
    box = np.ceil(reach + 0.5 * np.hypot(*(end - start).T) + 0.5).astype(int)
    visible = ((middle[:, 0] > -box) & (middle[:, 0] < w + box) & (middle[:, 1] > -box)
               & (middle[:, 1] < h + box))
    for half in np.unique(box[visible]):
        sel = np.flatnonzero(visible & (box == half))
        offsets = np.arange(-half, half + 1)
        cx, cy = np.rint(middle[sel, 0]).astype(np.int64), np.rint(middle[sel, 1]).astype(np.int64)
        px = cx[:, None, None] + offsets[None, None, :]                      # [n, 1, B]
        py = cy[:, None, None] + offsets[None, :, None]                      # [n, B, 1]
        a, d = start[sel], end[sel] - start[sel]
        rx = px - a[:, 0, None, None]
        ry = py - a[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        t = np.clip((rx * dx + ry * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)   # [n, B, B]
        dist2 = (rx - t * dx) ** 2 + (ry - t * dy) ** 2
        value = _cross_section(dist2, radius[sel, None, None], sigma[sel, None, None]) * weight[sel, None, None]
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h) & (value > 0)
        flat = np.broadcast_to(py * w + px, value.shape)
        np.maximum.at(out, flat[inside], value[inside])       # same dtypes: numpy's fast path
    return out.reshape(shape)


def _vessel_line_integral(scene: Scene, t: float, roles: tuple[int, ...] = (ARTERY, VEIN, CATHETER),
                          full_contrast: bool = False) -> np.ndarray:
    """Iodine (and catheter) line integral at time t in the frame's pose; `full_contrast` fills every vessel
    at concentration 1 (vessel masks for tests)."""
    caps = scene.capsules
    if full_contrast:
        concentration = np.ones(len(caps.radius))
    else:
        concentration = scene.bolus.concentration(caps.role, caps.path, t)
    # skip capsules without contrast (before arrival, after washout): most of the work early in a run
    keep = np.isin(caps.role, roles) & (concentration > 1e-3)
    xy = scene.motion.move_points(caps.points, t, scene.motion_scale)
    first = caps.first[keep]
    return _rasterise_capsules(xy[first], xy[first + 1], caps.radius[keep],
                               scene.bolus.iodine * concentration[keep], scene.shape)


def _smooth_map(source, shape: tuple[int, int]) -> np.ndarray:
    """source(xy) for every pixel, evaluated on a grid 32 steps across and linearly interpolated in between.
    The motion fields are smooth on the scale of the heart or head (affine maps are reproduced exactly; the
    cardiac one within ~0.02 px), and this saves the fixed-point inversion on every pixel."""
    h, w = shape
    step = max(2, min(shape) // 32)
    ys, xs = np.linspace(0, h - 1, -(-(h - 1) // step) + 1), np.linspace(0, w - 1, -(-(w - 1) // step) + 1)
    coarse = source(np.stack(np.meshgrid(xs, ys), axis=-1))          # [len(ys), len(xs), 2]
    return _interpolate_grid(coarse, ys, xs, shape)


def _line_integral(scene: Scene, t: float) -> np.ndarray:
    """Total line integral of the live exposure at time t: moved anatomy, blush and iodine."""
    scale, motion = scene.motion_scale, scene.motion
    body_source = _smooth_map(lambda xy: motion.body_source(xy, t, scale), scene.shape)
    line = _sample(scene.body, body_source, scene.margin)
    vessel_source = body_source
    if scene.heart is not None:
        vessel_source = _smooth_map(lambda xy: motion.heart_source(xy, t, scale), scene.shape)
        line += _sample(scene.heart, vessel_source, scene.margin)
    blush = scene.bolus.blush(t)
    if blush > 0:
        line += blush * _sample(scene.tissue, vessel_source, scene.margin)
    return line + _vessel_line_integral(scene, t)


def _veiling_glare(signal: np.ndarray, fraction: float, sigma: float) -> np.ndarray:
    """Mix in a wide blur of the signal (scatter in the detector); computed on a 4x coarser grid because the
    kernel is tens of pixels wide."""
    wide = _upsample(ndimage.gaussian_filter(signal[::4, ::4], sigma / 4, mode="nearest"), signal.shape, 4)
    return (1.0 - fraction) * signal + fraction * wide


def _expose(line: np.ndarray, detector: Detector, rng: np.random.Generator) -> np.ndarray:
    """-log(detected / N0) of one exposure: expected photons, glare, Poisson quantum noise, then the PSF
    (the scintillator spreads the detected quanta, so noise is blurred together with the signal)."""
    expected = _veiling_glare(detector.photons * np.exp(-line), detector.glare, detector.glare_sigma)
    counts = rng.poisson(expected).astype(float)
    counts = ndimage.gaussian_filter(counts, detector.psf_sigma, mode="nearest")
    return -np.log(np.maximum(counts, 0.5) / detector.photons)


def _render_frames(scene: Scene, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    det = scene.detector
    frames = np.empty((len(times), *scene.shape), np.float32)
    for k, t in enumerate(times):
        signal = _expose(_line_integral(scene, float(t)), det, rng)
        signal -= det.mask_log if det.mask_log is not None else det.reference   # log subtraction (DSA)
        display = det.level * np.exp(-det.gain * signal) + det.electronic_noise * rng.standard_normal(scene.shape)
        if det.collimator is not None:
            display *= det.collimator
        frames[k] = np.clip(np.round(display * 255.0), 0, 255) / 255.0             # 8-bit output
    return frames


# ---- sampling -------------------------------------------------------------------------------------------
# How often a window starts in each phase. Coronary cine covers mostly the arterial filling (runs last a few
# seconds, the venous phase is faint and rarely filmed); cerebral DSA runs cover all three.
PHASE_WEIGHTS = {"dsa": (1 / 3, 1 / 3, 1 / 3), "xca": (0.6, 0.3, 0.1)}


def _window_start(rng: np.random.Generator, scene: Scene, duration: float) -> float:
    """A start time in the arterial, capillary or venous phase."""
    phases = scene.bolus.phases()
    lo, hi = phases[("arterial", "capillary", "venous")[int(rng.choice(3, p=PHASE_WEIGHTS[scene.kind]))]]
    return float(rng.uniform(lo, max(lo, hi - 0.5 * duration)))


def _check_arguments(kind: str | None, size: tuple[int, int]) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both at least 16 pixels, not {size}")


def make_sequence(seed: int, *, kind: str = "dsa", size: tuple[int, int] = (256, 256), frames: int = 9,
                  fps: float | None = None) -> SyntheticSequence:
    """One random scene (tree, bolus, motion and noise level drawn from `seed`) seen for `frames` consecutive
    frames at the internal rate `fps` (default DEFAULT_FPS[kind]), starting at a random point of the bolus
    passage. Every frame is exact ground truth for interpolating between any two others."""
    _check_arguments(kind, size)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, not {frames}")
    rate = DEFAULT_FPS[kind] if fps is None else float(fps)
    if not rate > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    rng = np.random.default_rng(seed)
    scene = _draw_scene(rng, kind, size)
    times = _window_start(rng, scene, (frames - 1) / rate) + np.arange(frames) / rate
    return SyntheticSequence(_render_frames(scene, times, rng), times, kind, rate)


def training_clip(rng: np.random.Generator, *, size: tuple[int, int] = (192, 192), inter_frames: int = 1,
                  kind: str | None = None) -> np.ndarray:
    """float32 [inter_frames + 2, H, W]: two input frames and the exact frames evenly between them, from a
    fresh scene. The time between the inputs is 0.05-1.5x that of a real (i, i + 2) pair at the kind's default
    rate, so motion runs from nearly static to somewhat beyond the real coronary cine pairs. Only these frames
    are rendered."""
    _check_arguments(kind, size)
    if inter_frames < 0:
        raise ValueError(f"inter_frames must be at least 0, not {inter_frames}")
    kind = kind or KINDS[int(rng.integers(2))]
    scene = _draw_scene(rng, kind, size)
    gap = rng.uniform(0.05, 1.5) * 2.0 / DEFAULT_FPS[kind]
    times = _window_start(rng, scene, gap) + np.linspace(0.0, gap, inter_frames + 2)
    return _render_frames(scene, times, rng)


def write_sample_data(out_dir: Path) -> list[Path]:
    """out_dir/dsa/sequence: a seeded synthetic DSA run (256x256, 9 frames at the DSA default rate) as numbered
    8-bit PNGs, frame_001.png ... frame_009.png (labelled synthetic: not for quality claims)."""
    from PIL import Image

    folder = Path(out_dir) / "dsa" / "sequence"
    folder.mkdir(parents=True, exist_ok=True)
    sequence = make_sequence(SAMPLE_SEED, kind="dsa", size=(256, 256), frames=9)
    paths = []
    for k, frame in enumerate(sequence.frames, start=1):
        path = folder / f"frame_{k:03d}.png"
        Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
