"""`mis train interpolate`: GaraMoSt on synthetic angiography sequences and, when given, real ones.

Each training sample is a clip of N + 2 frames (N = 1..3 drawn per sample) from a sequence: the first and
last are the inputs and one of the N frames between them, at t = k / (N + 1), the target, so one network
learns every timestep. Synthetic sequences (`synthetic.py`: exact ground truth at every frame) are rendered
once into a pool at the start (rendering per step would cost more than the step on a CPU); real sequences
(numbered-frame folders, DICOM, NIfTI) give clips from their own frames. Augmentation as upstream: random
crop, flips, 90-degree rotations, plus time reversal (inputs swapped, t -> 1 - t).

Loss: Laplacian-pyramid L1 on the prediction plus the same on each flow head's merged warp (weight 1 / heads)
and a census term (`losses.py`); upstream's VGG perceptual and style terms need downloaded weights. AdamW
(lr 2e-4, weight decay 1e-4), linear warm-up then cosine decay to 0.1 x lr, as upstream. Validation: PSNR on a
fixed set of fresh synthetic clips (and on `val_data` sequences when given), linear blending scored on the
same clips for the card; the shipped weights are the best validation's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mis.checkpoints import build_card, save_checkpoint
from mis.errors import InputError, UsageError
from mis.io.frames import read_sequence
from mis.io.image import to_unit
from mis.models.garamost import GaraMoSt, GaraMoStConfig
from mis.pipelines.interpolate.evaluate import psnr
from mis.pipelines.interpolate.losses import census_loss, laplacian_l1
from mis.pipelines.interpolate.pipeline import TASK
from mis.pipelines.interpolate.synthetic import make_sequence
from mis.runtime.training import RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

POOL_FRAMES = 9          # frames per pooled synthetic sequence: N = 3 with stride 2 fits (1 + 4 * 2)
VAL_SEED = 10_000_000    # validation scenes come from seeds no training pool uses


@dataclass(kw_only=True)
class InterpolateTrainOptions(RunOptions):
    out: Path
    network: GaraMoStConfig = field(default_factory=GaraMoStConfig.demo)
    steps: int = 3000
    batch_size: int = 4
    crop: int = 160
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup: int = 200
    census_weight: float = 0.5
    synthetic: int = 240             # sequences in the synthetic pool (0: real data only)
    synthetic_size: int = 224        # their side in pixels
    max_inter: int = 3               # N drawn from 1..max_inter
    max_stride: int = 3              # frames of the sequence between consecutive clip frames, 1..max_stride
    val_clips: int = 24
    validate_every: int = 250
    bit_depth: int = 8


# ---- data ----------------------------------------------------------------------------------------------
def synthetic_pool(options: InterpolateTrainOptions, log: Callable[[str], None]) -> list[np.ndarray]:
    """uint8 [POOL_FRAMES, S, S] sequences (the generator quantises to 8 bits anyway: 4x less memory)."""
    start = time.perf_counter()
    size = (options.synthetic_size, options.synthetic_size)
    pool = []
    for k in range(options.synthetic):
        kind = "dsa" if k % 3 == 0 else "xca"    # two thirds coronary: their motion is what must be learnt
        frames = make_sequence(options.seed * 100_003 + k, kind=kind, size=size, frames=POOL_FRAMES).frames
        pool.append(np.round(frames * 255).astype(np.uint8))
    if pool:
        log(f"rendered {len(pool)} synthetic sequences in {time.perf_counter() - start:.0f} s")
    return pool


def read_real(paths: list[Path], bit_depth: int, crop: int | None = None) -> list[np.ndarray]:
    """Real sequences as float32 [T, H, W] in [0, 1], checked before training starts (not at the step that
    first draws one): grayscale, the run's bit depth, at least 3 frames, frames no smaller than the crop."""
    sequences = []
    for path in paths:
        frames, meta = read_sequence(path)
        if meta.bit_depth > bit_depth:
            raise InputError(path, f"{meta.bit_depth}-bit frames; this run trains a {bit_depth}-bit model "
                             "(--bit-depth 16)")
        if frames.ndim != 3:
            raise InputError(path, "colour frames: training takes grayscale sequences")
        if len(frames) < 3:
            raise InputError(path, f"{len(frames)} frames: training needs at least 3 (two inputs and a target)")
        if crop is not None and min(frames.shape[1:]) < crop:
            raise InputError(path, f"frames of {frames.shape[2]}x{frames.shape[1]} are smaller than --crop {crop}")
        sequences.append(np.stack([to_unit(f, meta.image) for f in frames]).astype(np.float32))
    return sequences


def _augment(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    if rng.random() < 0.5:
        clip = clip[:, ::-1]
    return np.rot90(clip, k=int(rng.integers(4)), axes=(1, 2))


def _crop(frames: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    h, w = frames.shape[-2:]
    if h < crop or w < crop:
        raise UsageError(f"training frames of {w}x{h} are smaller than --crop {crop}")
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return frames[..., y:y + crop, x:x + crop]


def draw_sample(sequence: np.ndarray, options: InterpolateTrainOptions, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(frame 0, frame 1, target, t) cropped and augmented, floats in [0, 1]."""
    n = int(rng.integers(1, options.max_inter + 1))
    strides = [s for s in range(1, options.max_stride + 1) if (n + 1) * s < len(sequence)] or [1]
    stride = int(rng.choice(strides))
    span = (n + 1) * stride
    if span >= len(sequence):             # a short real sequence: the shortest clip (read_real checked >= 3)
        n, stride, span = 1, 1, 2
    start = int(rng.integers(0, len(sequence) - span))
    k = int(rng.integers(1, n + 1))
    picked = sequence[[start, start + k * stride, start + span]]
    picked = _augment(_crop(picked, options.crop, rng), rng)
    if picked.dtype == np.uint8:
        picked = picked.astype(np.float32) / 255.0
    t = k / (n + 1)
    if rng.random() < 0.5:                 # time reversal
        picked, t = picked[::-1], 1.0 - t
    return picked[0], picked[2], picked[1], t


def as_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, 1, H, W] grayscale -> the network's channel count (replicated for 3-channel networks, as upstream)."""
    return x.expand(-1, channels, -1, -1).contiguous() if channels != x.shape[1] else x


def batch_sampler(sources: list[np.ndarray], options: InterpolateTrainOptions) -> Callable:
    channels = options.network.in_chans

    def sample(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        rows = [draw_sample(sources[int(rng.integers(len(sources)))], options, rng)
                for _ in range(options.batch_size)]

        def stack(i: int) -> torch.Tensor:
            return as_channels(torch.from_numpy(np.ascontiguousarray(np.stack([r[i] for r in rows]))[:, None]),
                               channels)

        return {"img0": stack(0), "img1": stack(1), "target": stack(2),
                "t": torch.tensor([r[3] for r in rows], dtype=torch.float32)}

    return sample


def validation_clips(options: InterpolateTrainOptions, real: list[np.ndarray]) -> list[tuple]:
    """Fixed (frame 0, frame 1, target, t) at 256 px from fresh synthetic scenes (N = 1 and N = 3, both
    kinds), plus every (i, i + 2) triple of the real validation sequences."""
    clips = []
    for k in range(options.val_clips):
        kind, n = ("dsa", "xca")[k % 2], (1, 3)[(k // 2) % 2]
        frames = make_sequence(VAL_SEED + k, kind=kind, size=(256, 256), frames=n + 2).frames
        target = (n + 1) // 2
        clips.append((frames[0], frames[-1], frames[target], target / (n + 1)))
    for sequence in real:
        clips.extend((sequence[i], sequence[i + 2], sequence[i + 1], 0.5) for i in range(len(sequence) - 2))
    return clips


# ---- the step ------------------------------------------------------------------------------------------
def make_loss(options: InterpolateTrainOptions) -> Callable:
    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(batch["img0"], batch["img1"], batch["t"])
        prediction = out.prediction.float()
        target = batch["target"]
        lap = laplacian_l1(prediction, target)
        merged = sum(laplacian_l1(m.float(), target) for m in out.merged) / max(len(out.merged), 1)
        census = census_loss(prediction, target)
        loss = lap + merged + options.census_weight * census
        return loss, {"lap": lap.detach(), "merged": merged.detach(), "census": census.detach()}

    return loss_fn


def make_validate(clips: list[tuple]) -> Callable:
    @torch.no_grad()
    def validate(trainer: Trainer) -> dict:
        model = trainer.module().eval()
        scores = []
        for first, second, target, t in clips:
            x0, x1 = (as_channels(torch.from_numpy(np.ascontiguousarray(f))[None, None], model.config.in_chans)
                      .to(trainer.device) for f in (first, second))
            h, w = first.shape
            m = model.pad_multiple
            pad = (0, -w % m, 0, -h % m)
            x0, x1 = (torch.nn.functional.pad(x, pad, mode="replicate") for x in (x0, x1))
            out = model(x0, x1, torch.tensor([t], device=trainer.device)).prediction[0, :, :h, :w].mean(dim=0)
            scores.append(psnr(out.float().cpu().numpy(), target))
        model.train()
        return {"val_psnr": float(np.mean(scores))}

    return validate


def linear_psnr(clips: list[tuple]) -> float:
    return float(np.mean([psnr((1 - t) * a + t * b, target) for a, b, target, t in clips]))


def warmup_cosine(options: InterpolateTrainOptions) -> Callable[[int], float]:
    """Upstream's schedule: linear warm-up, then cosine from lr down to 0.1 x lr at the last step."""
    def factor(step: int) -> float:
        if step < options.warmup:
            return (step + 1) / options.warmup
        progress = min(1.0, (step - options.warmup) / max(1, options.steps - options.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def check_options(options: InterpolateTrainOptions, has_real: bool) -> None:
    if options.synthetic == 0 and not has_real:
        raise UsageError("nothing to train on: give sequences or --synthetic > 0")
    if options.crop % 32:
        raise UsageError(f"--crop {options.crop} must be a multiple of 32 (the network's padding multiple)")
    if options.synthetic and options.crop > options.synthetic_size:
        raise UsageError(f"--crop {options.crop} is larger than the synthetic frames ({options.synthetic_size})")


def interpolate_card(options: InterpolateTrainOptions, paths: list[Path], val_paths: list[Path],
                     metrics: dict) -> dict:
    training = {"steps": options.steps, "batch_size": options.batch_size, "crop": options.crop, "lr": options.lr,
                "weight_decay": options.weight_decay, "warmup": options.warmup,
                "census_weight": options.census_weight, "synthetic_sequences": options.synthetic,
                "synthetic_size": options.synthetic_size, "max_inter": options.max_inter,
                "max_stride": options.max_stride, "seed": options.seed,
                "real_sequences": [p.name for p in paths], "validation_sequences": [p.name for p in val_paths],
                "command": options.command}
    return build_card("garamost", options.network.to_dict(), task=TASK, preprocessing={"bit_depth": options.bit_depth},
                      training=training, metrics=metrics)


def train_interpolate(paths: list[Path], options: InterpolateTrainOptions, val_paths: list[Path] = (),
                      log: Callable[[str], None] = lambda _: None) -> dict:
    check_options(options, bool(paths))
    real = read_real(list(paths), options.bit_depth, options.crop)
    sources = [*synthetic_pool(options, log), *real]
    clips = validation_clips(options, read_real(list(val_paths), options.bit_depth))
    log(f"training on {len(sources)} sequences ({len(real)} real), validating on {len(clips)} clips; linear "
        f"blending scores {linear_psnr(clips):.2f} dB PSNR on them")
    torch.manual_seed(options.seed)
    model = GaraMoSt(options.network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(options))
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr,
                         weight_decay=options.weight_decay, grad_clip=1.0, precision=options.precision,
                         checkpoint_every=max(options.validate_every, 1), log_every=50,
                         validate_every=options.validate_every, best_metric="val_psnr", best_mode="max",
                         seed=options.seed, device=options.device, resume=options.resume,
                         progress=options.progress, description="GaraMoSt", settings=resume_settings(options))
    trainer = Trainer(model, optimizer, scheduler, config, loss_fn=make_loss(options),
                      validate_fn=make_validate(clips))
    start = time.perf_counter()
    result = trainer.fit(StepSeededBatches(batch_sampler(sources, options), options.seed))
    seconds = max(time.perf_counter() - start, float(trainer.logged(trainer.step).get("seconds") or 0.0))
    best = trainer.restore_best()
    model = trainer.module().cpu().eval()
    metrics = {"val_psnr": (best or {}).get("val_psnr", result.get("val_psnr")),
               "final_val_psnr": result.get("val_psnr"), "linear_val_psnr": linear_psnr(clips),
               "best_step": (best or {}).get("best_step"), "seconds": seconds}
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, interpolate_card(options, list(paths), list(val_paths), metrics), half=options.half)
    log(f"{options.steps} steps in {seconds:.0f} s; validation PSNR {metrics['val_psnr']:.2f} dB (linear blending "
        f"{metrics['linear_val_psnr']:.2f}); wrote {path}")
    return {"checkpoint": str(path), **trainer.policy.to_dict(), "seconds": seconds, "metrics": metrics}
