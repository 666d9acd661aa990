"""`mis train count`: M-SFANet / M-SegNet on synthetic crowd scenes and, when given, annotated images.

Images with head points (ShanghaiTech `.mat`, UCF-QNRF `.mat`, JSON, CSV or txt beside each image, found by
`io.points.points_file_for`) and synthetic scenes (`synthetic.py`, rendered once into a pool: rendering per step
would cost more than the step on a CPU) give density targets made once per image with the sigma rule (`density.py`;
upstream's SHA recipe is a fixed sigma of 5 px), counts kept exactly at the borders.

Each step takes random crops with horizontal flips, gamma 0.5-1.5 and 10 % grayscale (upstream's augmentation;
`zoom` > 1 also enlarges half the crops, cut from smaller windows: measured and not used by the demos);
the target is the crop's density downsampled to the output stride (count kept) times `density_scale`, and the
attention target is the crop's density > 0.001 downsampled the same way (a soft 0-1 mask). Loss, as upstream:
MSE(sum) on the density + 0.1 BCE(sum) on the attention, both divided by the batch size; plus, beyond upstream,
`count_weight` x the L1 error of each crop's total (DM-Count's count loss): the pixel-wise MSE alone left a small
positive density everywhere that summed to 38-112 people on empty 256 x 320 validation scenes (its share of the MSE
is negligible next to the dense heads' peaks), which the count term removes. The L1 is minimised by the median
crop's count, not the mean's: the first demos under-counted their own training crops by 7 % of all heads while the
median crop was off by half a head (the misses are in the dense crops). `count_loss="l2"` (the squared error per
output pixel, minimised by the mean) removes that bias but, weak on small errors, brings the phantom heads back
(from scratch with the demo's recipe, biases on 100 fresh scenes: +12 on those under 30 people, +44 over 500);
"l1+l2" has both terms (the shipped M-SFANet demo). Adam; validation MAE on fixed images (fresh synthetic scenes
and the `val_images`); the learning rate falls on a cosine to 5 % of its start by the last step (a constant rate
leaves the count noisy from step to step); the best validation's weights are kept (`keep='last'`: the last step's).
With `ema_decay` the validated and shipped weights are a moving average of the trained ones (BatchNorm statistics
averaged too): the count's calibration otherwise follows the last few hundred crops, and the validation MAE of
consecutive checks swung by a factor of two (75 -> 146 -> 126 at steps 2500-3500 of a 6000-step run).

`density_scale` (the card's; 100 for the demo) multiplies the training targets so that the per-pixel values the
network fits are of order one instead of 1e-3; the pipeline divides the network's output by it. Upstream trains
with 1 (its released weights import with 1).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mis.checkpoints import build_card, init_provenance, save_checkpoint
from mis.errors import InputError, UsageError
from mis.io.image import read_image
from mis.io.points import check_points_in_image, points_file_for, read_points
from mis.models.sfanet import OUTPUT_STRIDE, SIZE_MULTIPLE, WEIGHT_INITS, SFANet, SFANetConfig, kaiming_init
from mis.pipelines.count.density import (attention_target, count_metrics, density_from_points, downsample_density,
                                         parse_sigma, resize_density)
from mis.pipelines.count.pipeline import TASK, CountPipeline, normalise, preprocessing_for
from mis.pipelines.count.synthetic import make_crowd_scene
from mis.runtime.training import KEEP, RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

VAL_SEED = 10_000_000      # validation scenes come from seeds no training pool uses
ATTENTION_WEIGHT = 0.1     # upstream's weight of the attention BCE
COUNT_LOSSES = ("l1", "l2", "l1+l2")


@dataclass(kw_only=True)
class CountTrainOptions(RunOptions):
    out: Path
    network: SFANetConfig = field(default_factory=SFANetConfig.demo)
    steps: int = 3000
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    sigma: str = "fixed:5"
    density_scale: float = 100.0
    count_weight: float = 0.0       # weight of the loss on each crop's total, in the network's (scaled) units
    count_loss: str = "l1"          # l1: |error| (calibrates the median crop); l2: error^2 / pixels (the mean)
    ema_decay: float = 0.0          # > 0: validate and ship a moving average of the weights
    keep: str = "best"              # the weights to ship: the best validation's, or the last step's
    synthetic: int = 400            # scenes in the synthetic pool (0: annotated images only)
    synthetic_size: tuple[int, int] = (256, 320)
    val_scenes: int = 16
    validate_every: int = 250
    zoom: float = 1.0               # > 1: half the crops are enlarged by a factor log-uniform in [1, zoom]
    init: Path | None = None        # start from this count checkpoint (all of it, or the layers both networks share)
    weight_init: str = "upstream"   # the fresh network's conv weights: upstream's N(0, 0.01) or "kaiming"
    count_tile: int = 0             # > 0: validate, and let the card count, in tiles of this size (half overlapping)


@dataclass
class Sample:
    image: np.ndarray          # uint8 [H, W, 3]
    density: np.ndarray        # float32 [H, W], sums to the count
    count: float


# ---- data ----------------------------------------------------------------------------------------------
def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image the readers return -> uint8 [H, W, 3] (16-bit scaled, grayscale repeated)."""
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.round(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def synthetic_pool(options: CountTrainOptions, seed_base: int, count: int) -> list[Sample]:
    h, w = options.synthetic_size
    pool = []
    for k in range(count):
        scene = make_crowd_scene(seed_base + k, height=h, width=w)
        density = density_from_points(scene.points, (h, w), options.sigma)
        pool.append(Sample(scene.image, density, float(len(scene.points))))
    return pool


def annotated_images(paths: list[Path], options: CountTrainOptions) -> list[Sample]:
    """Images with their head points, checked before training starts: readable, annotated, not smaller than the
    crop."""
    samples = []
    for path in paths:
        annotation = points_file_for(path)
        if annotation is None:
            raise InputError(path, "no head-point file beside it (ShanghaiTech ground_truth/GT_<name>.mat, "
                             "<name>.json / .csv / .txt, or <name>_ann.mat)")
        image, _meta = read_image(path, alpha="drop")
        points, _ = read_points(annotation)
        points, _dropped = check_points_in_image(points, image.shape)
        if min(image.shape[:2]) < options.crop:
            raise InputError(path, f"image is {image.shape[1]}x{image.shape[0]}: smaller than --crop {options.crop}")
        density = density_from_points(points, image.shape[:2], options.sigma)
        samples.append(Sample(to_rgb8(image), density, float(len(points))))
    return samples


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.5-1.5 and 10 % grayscale (3 channels), as upstream; float32 [0, 1]."""
    x = (image.astype(np.float32) / 255.0) ** np.float32(rng.uniform(0.5, 1.5))
    if rng.random() < 0.1:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    return x


def _zoom_factor(rng: np.random.Generator, zoom: float) -> float:
    """1 for half the crops; for the others log-uniform in [1, zoom]. No draw at all when zoom is off, so runs
    without it take the same crops as before it existed."""
    if zoom <= 1.0 or rng.random() < 0.5:
        return 1.0
    return math.exp(rng.uniform(0.0, math.log(zoom)))


def _enlarged(image: np.ndarray, density: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A square window enlarged to size x size: the image bilinearly (float32 0-255), the density by the area
    resampling that keeps its total (the count of the window is the count of the crop)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    grown = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return grown.numpy(), resize_density(density, (size, size))


def batch_sampler(pool: list[Sample], options: CountTrainOptions, preprocessing: dict) -> Callable:
    """Random crops (flipped half the time; with `zoom`, half of them cut smaller and enlarged to the crop size)
    -> normalised images (as the pipeline normalises them: the card's mean / std), density and attention targets at
    stride 2."""
    crop, s = options.crop, OUTPUT_STRIDE
    mean, std = np.asarray(preprocessing["mean"], np.float32), np.asarray(preprocessing["std"], np.float32)

    def sample(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        images, densities, attentions = [], [], []
        for _ in range(options.batch_size):
            item = pool[int(rng.integers(len(pool)))]
            h, w = item.density.shape
            window = max(SIZE_MULTIPLE, int(round(crop / _zoom_factor(rng, options.zoom))))
            y, x = int(rng.integers(0, h - window + 1)), int(rng.integers(0, w - window + 1))
            image = item.image[y:y + window, x:x + window]
            density = item.density[y:y + window, x:x + window]
            if window != crop:
                image, density = _enlarged(image, density, crop)
            if rng.random() < 0.5:
                image, density = image[:, ::-1], density[:, ::-1]
            images.append(normalise(_augment(image, rng), mean, std, options.network.in_channels))
            density = np.ascontiguousarray(density)
            densities.append(downsample_density(density, s) * options.density_scale)
            attentions.append(downsample_density(attention_target(density), s) / (s * s))
        return {"image": torch.from_numpy(np.stack(images)),
                "density": torch.from_numpy(np.stack(densities).astype(np.float32))[:, None],
                "attention": torch.from_numpy(np.clip(np.stack(attentions), 0, 1).astype(np.float32))[:, None]}

    return sample


# ---- the step ------------------------------------------------------------------------------------------
def count_term(predicted: torch.Tensor, true: torch.Tensor, pixels: int, count_loss: str) -> torch.Tensor:
    """The loss on the crops' totals [N]. "l1" (|error|) is minimised by the median crop's count, "l2" (error^2 /
    output pixels: per pixel, the gradient is twice the error of the crop's mean density) by the mean; where the
    network misses heads in the dense crops only, the median crop is exact and the mean is not (the module docstring).
    "l1+l2" adds them: the L1 holds for small errors (an empty crop's few phantom heads), the L2 for large ones."""
    error = predicted - true
    l1, l2 = error.abs().mean(), (error.square() / pixels).mean()
    return {"l1": l1, "l2": l2, "l1+l2": l1 + l2}[count_loss]


def make_loss(count_weight: float = 0.0, count_loss: str = "l1") -> Callable:
    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        density, attention = model(batch["image"])
        n = batch["image"].shape[0]
        mse = F.mse_loss(density.float(), batch["density"], reduction="sum") / n
        predicted, true = density.float().sum(dim=(1, 2, 3)), batch["density"].sum(dim=(1, 2, 3))
        count = count_term(predicted, true, density.shape[-2] * density.shape[-1], count_loss)
        # written out: F.binary_cross_entropy refuses autocast (the attention is already a sigmoid's output)
        a, t = attention.float().clamp(1e-6, 1 - 1e-6), batch["attention"]
        bce = -(t * torch.log(a) + (1 - t) * torch.log1p(-a)).sum() / n
        loss = mse + ATTENTION_WEIGHT * bce + count_weight * count
        return loss, {"mse": mse.detach(), "bce": bce.detach(),
                      "count_l1": (predicted - true).abs().mean().detach()}   # logged alike whichever term trains

    return loss_fn


def make_validate(val: list[Sample], pipeline_of: Callable[[torch.nn.Module], CountPipeline]) -> Callable:
    def validate(trainer: Trainer) -> dict:
        model = trainer.module().eval()
        pipeline = pipeline_of(model)
        predicted = [pipeline(sample.image).count for sample in val]
        model.train()
        metrics = count_metrics(predicted, [s.count for s in val])
        return {"val_mae": metrics["mae"], "val_rmse": metrics["rmse"]}

    return validate


def cosine(options: CountTrainOptions) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, options.steps))))

    return factor


def check_options(options: CountTrainOptions, has_images: bool, has_val_images: bool = False) -> None:
    if options.synthetic == 0 and not has_images:
        raise UsageError("nothing to train on: give annotated images or --synthetic > 0")
    if options.val_scenes == 0 and not has_val_images:
        raise UsageError("nothing to validate on: give --val-images or --val-scenes > 0")
    if options.count_loss not in COUNT_LOSSES:
        raise UsageError(f"--count-loss {options.count_loss!r}: {' or '.join(COUNT_LOSSES)}")
    if options.weight_init not in WEIGHT_INITS:
        raise UsageError(f"--weight-init {options.weight_init!r}: {' or '.join(WEIGHT_INITS)}")
    if options.count_tile and (options.count_tile % SIZE_MULTIPLE or options.count_tile < 2 * SIZE_MULTIPLE):
        raise UsageError(f"--count-tile {options.count_tile} must be 0 (whole images) or a multiple of "
                         f"{SIZE_MULTIPLE} from {2 * SIZE_MULTIPLE}")
    if options.zoom < 1.0:
        raise UsageError(f"--zoom {options.zoom} must be >= 1 (1: off; 2: up to twice as large)")
    if options.crop % SIZE_MULTIPLE:
        raise UsageError(f"--crop {options.crop} must be a multiple of {SIZE_MULTIPLE} (the network's pooling)")
    if options.synthetic and options.crop > min(options.synthetic_size):
        raise UsageError(f"--crop {options.crop} is larger than the synthetic scenes ({options.synthetic_size})")
    parse_sigma(options.sigma)
    if options.keep not in KEEP:
        raise UsageError(f"--keep must be {' or '.join(KEEP)}, not {options.keep!r}")


def count_tiling(options: CountTrainOptions) -> dict:
    """The card's tiling for `--count-tile N`: tiles of N px overlapping by half (none: the pipeline's default).
    Why: the network's image-wide branches (CAN's pooled cells, ASPP's image pooling) are calibrated on the
    training crops; a network trained on 128 px crops may count a 256 x 320 image differently in one pass
    (README, crowd counting)."""
    if not options.count_tile:
        return {}
    return {"tile": options.count_tile, "overlap": options.count_tile // 2}


def start_from(model: SFANet, path: Path, density_scale: float) -> str:
    """Load a count checkpoint into the network about to be trained: all of it when it is the same network (an
    imported upstream model to fine-tune on annotated images, or a run to continue on a new recipe), else every
    tensor whose name and shape both networks share (M-SegNet's ten VGG convs are M-SFANet's first ten). Says what
    was loaded."""
    from mis.checkpoints import load_matching, read_card, read_state

    card = read_card(path)
    if card.get("family") != "sfanet":
        raise UsageError(f"--init {path}: not a crowd-counting (M-SFANet / M-SegNet) checkpoint")
    state = read_state(path)
    own = model.state_dict()
    whole = state.keys() == own.keys() and all(state[name].shape == own[name].shape for name in own)
    init_scale = float(card.get("preprocessing", {}).get("density_scale", 1.0))
    if whole and init_scale != density_scale:
        # the density head's output is in the checkpoint's units: training it towards others would start far off
        raise UsageError(f"--init {path} was trained with --density-scale {init_scale:g}: give the same")
    loaded = load_matching(model, state)["loaded"]
    if not loaded:
        raise UsageError(f"--init {path}: no layer of it fits the network being trained (another --width?)")
    if whole:
        return f"started from all of {path.name}"
    return f"started from {len(loaded)} of {len(own)} tensors of {path.name} (the layers both networks share)"


def train_count(images: list[Path], options: CountTrainOptions, val_images: list[Path] = (),
                log: Callable[[str], None] = lambda _: None) -> dict:
    check_options(options, bool(images), bool(val_images))
    start = time.perf_counter()
    pool = synthetic_pool(options, options.seed * 100_003, options.synthetic) + annotated_images(list(images), options)
    val = synthetic_pool(options, VAL_SEED, options.val_scenes) + annotated_images(list(val_images), options)
    mean_count = float(np.mean([s.count for s in pool]))
    baseline = count_metrics([mean_count] * len(val), [s.count for s in val])
    log(f"{len(pool)} training images ({len(images)} annotated) and {len(val)} validation images ready in "
        f"{time.perf_counter() - start:.0f} s; predicting the training mean count ({mean_count:.1f}) scores "
        f"MAE {baseline['mae']:.1f} on the validation images")
    torch.manual_seed(options.seed)
    model = SFANet(options.network)
    if options.weight_init == "kaiming":
        log(f"{kaiming_init(model)} conv blocks drawn Kaiming-normal (--weight-init kaiming)")
    if options.init is not None:
        log(start_from(model, options.init, options.density_scale))
    preprocessing = {**preprocessing_for(options.network.in_channels), "density_scale": options.density_scale,
                     "sigma": options.sigma, **count_tiling(options)}
    card = build_card("sfanet", options.network.to_dict(), task=TASK, preprocessing=preprocessing)

    def pipeline_of(network: torch.nn.Module) -> CountPipeline:
        # as the card will count: in its tiles, or each validation image in one pass
        return CountPipeline(network, card, tile=None if options.count_tile else max(options.synthetic_size) * 2)

    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr, grad_clip=None,
                         precision=options.precision, checkpoint_every=options.validate_every, log_every=50,
                         validate_every=options.validate_every, best_metric="val_mae", best_mode="min",
                         ema_decay=options.ema_decay, channels_last=True,
                         seed=options.seed, device=options.device, resume=options.resume, progress=options.progress,
                         description=options.network.variant, settings=resume_settings(options))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(options))
    loss_fn = make_loss(options.count_weight, options.count_loss)
    trainer = Trainer(model, optimizer, scheduler, config, loss_fn=loss_fn,
                      validate_fn=make_validate(val, pipeline_of))
    sampler = batch_sampler(pool, options, preprocessing)
    data_seconds = time.perf_counter() - start
    result = trainer.fit(StepSeededBatches(sampler, options.seed))
    # keep="last" for the demos: their runs' checks on 32 scenes were a draw from step 5000 on (57.6 at step 5500,
    # 57.8 at 17000) while 128 other fresh scenes put the last step far ahead (MAE 49.2 vs 75.0)
    shipped = trainer.restore_kept(options.keep)
    model = trainer.module().cpu().eval()
    # the pool's rendering plus the training loop's time over every leg of a resumed run
    seconds = data_seconds + float(result.get("seconds") or time.perf_counter() - start - data_seconds)
    metrics = {"val_mae": shipped.get("val_mae", result.get("val_mae")), "val_rmse": shipped.get("val_rmse"),
               "mean_count_baseline_mae": baseline["mae"], "val_mean_count": float(np.mean([s.count for s in val])),
               "val_scenes": options.val_scenes, "val_images": len(val_images),
               "best_step": trainer.best_step, "shipped_step": shipped.get("step", trainer.step), "seconds": seconds}
    training = {"steps": options.steps, "batch_size": options.batch_size, "crop": options.crop, "lr": options.lr,
                "sigma": options.sigma, "count_weight": options.count_weight, "count_loss": options.count_loss,
                "ema_decay": options.ema_decay, "kept": options.keep, "zoom": options.zoom,
                "weight_init": options.weight_init, "count_tile": options.count_tile,
                "init": options.init.name if options.init else None, "init_training": init_provenance(options.init),
                "synthetic_scenes": options.synthetic,
                "synthetic_size": list(options.synthetic_size), "annotated_images": [p.name for p in images],
                "validation_images": [p.name for p in val_images], "seed": options.seed, "command": options.command}
    card = build_card("sfanet", options.network.to_dict(), task=TASK, preprocessing=preprocessing,
                      training=training, metrics=metrics)
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, card, half=options.half)
    log(f"{options.steps} steps in {seconds:.0f} s; validation MAE {metrics['val_mae']:.2f} (mean-count baseline "
        f"{baseline['mae']:.2f}); wrote {path}")
    return {"checkpoint": str(path), **trainer.policy.to_dict(), "seconds": seconds, "metrics": metrics}
