"""InterpolationPipeline: two frames and timesteps -> the frames in between (GaraMoSt).

    pipeline = InterpolationPipeline.from_checkpoint(path, runtime)
    out = pipeline(frame0, frame1, times=(0.25, 0.5, 0.75))     # float frames in [0, 1]

The encoder runs once per pair and the decoder once per timestep (the paper's one-pass multi-frame
interpolation); the timestep is an input of the network, so one checkpoint serves any N and any `--times`.
Frames are grayscale [H, W] or RGB [H, W, 3]: a 3-channel network (imported upstream weights) gets grayscale
replicated and gives back the channel mean, a 1-channel network (the demo) refuses colour frames.

`flow_scale` < 1 estimates flow, blend mask and refinement on frames resized by that factor and applies them,
upsampled, to the full-resolution frames (RIFE's `--scale`): memory and time shrink with the square of the
factor, for frames too large for the network at full size.
"""
from __future__ import annotations

import math
from fractions import Fraction
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mis.errors import InputError
from mis.models.garamost import GaraMoStConfig, warp
from mis.pipelines.base import Pipeline

TASK = "interpolate"
BIT_DEPTHS = (8, 16)
MIN_SIDE = 16      # pixels: a smaller frame has nothing a flow network can use
RATIO_TOLERANCE = 1e-3   # relative: a frame-rate ratio this close to a simple fraction is that fraction


@dataclass
class InterpolationOutput:
    frames: np.ndarray          # float32 [T, H, W] or [T, H, W, 3] in [0, 1], one per timestep
    times: tuple[float, ...]


def check_times(times: Sequence[float], source: str = "times") -> tuple[float, ...]:
    times = tuple(float(t) for t in times)
    if not times:
        raise InputError(source, "no timesteps to interpolate at")
    bad = [t for t in times if not (0.0 < t < 1.0)]
    if bad:
        raise InputError(source, f"timesteps must lie strictly between 0 and 1 (the two input frames), not {bad}")
    if len({round(t, 3) for t in times}) < len(times):
        raise InputError(source, f"timesteps {list(times)} repeat (to 3 decimals): each new frame once")
    return times


def even_times(count: int) -> tuple[float, ...]:
    """N frames evenly between two: k / (N + 1), k = 1..N (0.5; 1/3, 2/3; 0.25, 0.5, 0.75 ...)."""
    return tuple(k / (count + 1) for k in range(1, count + 1))


class InterpolationPipeline(Pipeline):
    """`pipeline(frame0, frame1, times)` -> InterpolationOutput; `batch(pairs, times)` for several pairs."""

    task = TASK
    default_batch_size = 1
    default_gpu_batch_size = 4

    def __init__(self, model: torch.nn.Module, card: dict, policy=None, *, flow_scale: float = 1.0,
                 reuse_encoder: bool = True, **base_options):
        super().__init__(model, card, policy, **base_options)
        if not 0.0 < flow_scale <= 1.0:
            raise ValueError(f"flow_scale must be in (0, 1], not {flow_scale}")
        config: GaraMoStConfig = model.config
        self.channels = config.in_chans
        self.bit_depth = int(card["preprocessing"]["bit_depth"])
        self.flow_scale = float(flow_scale)
        self.reuse_encoder = reuse_encoder
        self.pad_multiple = model.pad_multiple

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        pre = card.get("preprocessing")
        if not isinstance(pre, dict) or pre.get("bit_depth") not in BIT_DEPTHS:
            return [f"preprocessing.bit_depth must be one of {BIT_DEPTHS} (the frames the model was trained on)"]
        return []

    def run_info(self) -> dict:
        return {**super().run_info(), "flow_scale": self.flow_scale, "encoder_once_per_pair": self.reuse_encoder,
                "bit_depth": self.bit_depth}

    def network_call(self, img0: torch.Tensor, img1: torch.Tensor, times: torch.Tensor):
        """[B, C, H, W] x 2, times [T] -> one Decoded per timestep. The encoder runs once for the pair unless
        `reuse_encoder` is off (the benchmark's comparison: once per timestep, as a two-frame model would)."""
        model, batch = self.model, img0.shape[0]
        if not self.reuse_encoder:
            return [model(img0, img1, t.expand(batch)) for t in times]
        encoded = model.encode(img0, img1)
        return [model.decode(img0, img1, encoded, t.expand(batch)) for t in times]

    # ---- inputs ------------------------------------------------------------------------------------
    def check_pair(self, frame0: np.ndarray, frame1: np.ndarray, source: str = "frames") -> None:
        for frame in (frame0, frame1):
            if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[-1] != 3):
                raise InputError(source, f"a frame has shape {frame.shape}; expected [H, W] grayscale or "
                                 "[H, W, 3] RGB")
        if frame0.shape != frame1.shape:
            raise InputError(source, f"the two frames differ in size: {frame0.shape} and {frame1.shape}")
        if min(frame0.shape[:2]) < MIN_SIDE:
            raise InputError(source, f"frames of {frame0.shape[1]}x{frame0.shape[0]} pixels are too small to "
                             f"interpolate (at least {MIN_SIDE}x{MIN_SIDE})")
        if frame0.ndim == 3 and self.channels == 1:
            raise InputError(source, "colour frames (R, G, B differ): this model is grayscale (angiography); "
                             "convert to grayscale or use a 3-channel model")
        for frame in (frame0, frame1):
            if not np.isfinite(frame).all():
                raise InputError(source, "a frame contains NaN or infinite values")

    def _to_network(self, frames: np.ndarray) -> torch.Tensor:
        """[B, H, W] or [B, H, W, 3] floats -> [B, C, H, W] with the network's channel count."""
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).to(self.device)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)   # grayscale into an RGB network, as upstream feeds its DSA PNGs
        return x.clamp(0.0, 1.0)

    def _from_network(self, y: torch.Tensor, colour: bool) -> np.ndarray:
        """[T, B, C, H, W] -> [T, B, H, W] (grayscale: channel mean) or [T, B, H, W, 3]."""
        y = y.float()
        y = y.permute(0, 1, 3, 4, 2) if colour else y.mean(dim=2)
        return y.clamp(0.0, 1.0).cpu().numpy()

    # ---- the network -------------------------------------------------------------------------------
    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """Right/bottom replicate padding to the network's multiple (upstream pads to 32 the same way)."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        return F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")

    @torch.inference_mode()
    def interpolate_tensors(self, img0: torch.Tensor, img1: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
        """[B, C, H, W] x 2 in [0, 1] -> [T, B, C, H, W]."""
        h, w = img0.shape[-2:]
        t = torch.tensor(times, dtype=torch.float32, device=img0.device)
        if self.flow_scale == 1.0:
            decoded = self.forward(self._padded(img0), self._padded(img1), t)
            return torch.stack([d.prediction[..., :h, :w].float() for d in decoded])
        small = [F.interpolate(x, scale_factor=self.flow_scale, mode="bilinear", align_corners=False,
                               antialias=True) for x in (img0, img1)]
        sh, sw = small[0].shape[-2:]
        decoded = self.forward(self._padded(small[0]), self._padded(small[1]), t)
        return torch.stack([self._full_size(d, img0, img1, (sh, sw)) for d in decoded])

    def _full_size(self, decoded, img0: torch.Tensor, img1: torch.Tensor, small: tuple[int, int]) -> torch.Tensor:
        """Flow, mask and residual found on the resized frames, applied to the full-size ones."""
        h, w = img0.shape[-2:]
        sh, sw = small

        def up(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x[..., :sh, :sw].float(), size=(h, w), mode="bilinear", align_corners=False)

        flow = up(decoded.flow)
        scale = torch.tensor([w / sw, h / sh, w / sw, h / sh], device=flow.device).view(1, 4, 1, 1)
        flow = flow * scale                      # displacements in full-size pixels
        weight = torch.sigmoid(up(decoded.mask))
        blended = warp(img0, flow[:, :2]) * weight + warp(img1, flow[:, 2:]) * (1 - weight)
        return (blended + up(decoded.residual)).clamp(0.0, 1.0)

    # ---- arrays ------------------------------------------------------------------------------------
    def batch(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], times: Sequence[float],
              source: str = "frames") -> list[np.ndarray]:
        """Several pairs: those of one shape go through the network together, `batch_size` at a time. Each
        result ([T, H, W] or [T, H, W, 3]) equals `pipeline(*pair, times).frames` to float rounding."""
        times = check_times(times, source)
        for frame0, frame1 in pairs:
            self.check_pair(np.asarray(frame0), np.asarray(frame1), source)
        results: list[np.ndarray | None] = [None] * len(pairs)
        shapes = [np.shape(p[0]) for p in pairs]
        for shape in dict.fromkeys(shapes):
            group = [i for i, s in enumerate(shapes) if s == shape]
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                first = self._to_network(np.stack([pairs[i][0] for i in chunk]))
                second = self._to_network(np.stack([pairs[i][1] for i in chunk]))
                out = self._from_network(self.interpolate_tensors(first, second, times), colour=len(shape) == 3)
                for row, i in enumerate(chunk):
                    results[i] = out[:, row]
        return results  # type: ignore[return-value]

    def iter_sequence(self, frames: np.ndarray, plan: list[tuple[int, float]], source: str = "sequence"
                      ) -> Iterator[np.ndarray]:
        """Float frames [T, H, W(, 3)] in [0, 1] and a `sequence_plan` -> the output frames in order, one at a
        time (memory holds the input and one batch of pairs). Gaps that need the same timesteps are batched."""
        wanted: dict[int, list[float]] = {}
        for i, t in plan:
            if t > 0:
                wanted.setdefault(i, []).append(t)
        made: dict[tuple[int, float], np.ndarray] = {}
        gaps = sorted(wanted)
        for i, t in plan:
            if t == 0:
                yield frames[i]
                continue
            if (i, t) not in made:
                made = {key: frame for key, frame in made.items() if key[0] >= i}   # earlier gaps are done
                start = gaps.index(i)
                batch = [g for g in gaps[start:start + self.batch_size] if wanted[g] == wanted[i]]
                outputs = self.batch([(frames[g], frames[g + 1]) for g in batch], wanted[i], source)
                for g, out in zip(batch, outputs):
                    made.update({(g, tt): out[k] for k, tt in enumerate(wanted[g])})
            yield made[(i, t)]

    def __call__(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float] = (0.5,),
                 source: str = "frames") -> InterpolationOutput:
        times = check_times(times, source)
        return InterpolationOutput(self.batch([(frame0, frame1)], times, source)[0], times)


def sequence_plan(count: int, *, factor: int | None = None, times: Sequence[float] | None = None,
                  fps: float | None = None, frame_time_ms: float | None = None, source: str = "sequence"
                  ) -> list[tuple[int, float]]:
    """The output sequence as (i, t) entries: t = 0 is input frame i itself, 0 < t < 1 a new frame between
    frames i and i + 1. `factor` k inserts k - 1 evenly spaced frames per gap, `times` the given timesteps in
    every gap, `fps` resamples onto a regular grid at that rate (needs the input's frame time)."""
    if count < 2:
        raise InputError(source, "one frame: nothing to interpolate between")
    if fps is not None:
        if not frame_time_ms:
            raise InputError(source, "the frame rate of this sequence is unknown (no frame time in the file): "
                             "use --factor or --times instead of --fps")
        return _resampled(count, frame_time_ms / 1000.0, 1.0 / fps)
    inserted = check_times(times, source) if times is not None else even_times((factor or 2) - 1)
    plan = []
    for i in range(count - 1):
        plan.append((i, 0.0))
        plan.extend((i, t) for t in sorted(inserted))
    return plan + [(count - 1, 0.0)]


def _resampled(count: int, period: float, step: float) -> list[tuple[int, float]]:
    """Output times k * step on the input's time line, as exact fractions of a frame period. Frame times are
    stored rounded (66.67 ms for 15 fps): a rate ratio within 0.1 % of a simple fraction (2, 5/2, 1001/1000 ...)
    is taken as that fraction, so acquired frames stay acquired frames however long the run."""
    ratio = Fraction(period / step)
    simple = ratio.limit_denominator(1001)
    if abs(simple - ratio) <= RATIO_TOLERANCE * ratio:
        ratio = simple
    plan = []
    for k in range(int(math.floor((count - 1) * ratio)) + 1):
        position = Fraction(k) / ratio            # in input frames, exact
        i = min(math.floor(position), count - 1)
        t = float(position - i)
        plan.append((i, 0.0) if t == 0 or i == count - 1 else (i, t))
    return plan


def keeps_every_input(plan: list[tuple[int, float]], count: int) -> bool:
    """True when every acquired frame is in the output once (factor, times, fps raised by a whole ratio): the
    writers can then mark which frames are new."""
    return [i for i, t in plan if t == 0] == list(range(count))


def import_preprocessing(network_config: dict) -> dict:
    """The card's preprocessing for imported upstream weights: trained on 8-bit PNG frames."""
    return {"bit_depth": 8}
