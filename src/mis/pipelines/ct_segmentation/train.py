"""`mis train segment`: fine-tune or train PCT-Net on labelled CT (files, folders, synthetic phantoms).

Recipe (MIS-FM demo config, adapted): patches of the network's input size with foreground
oversampling (1/3 of patches centred on a voxel of a random organ, as nnU-Net does), random flips on the
three axes, intensity scale/shift/noise, Dice + CE (0.5/0.5) with deep supervision weights 1/2^i
on ground truth average-pooled to each scale (PyMIC mode 2), Adam, polynomial LR decay (power 0.9).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mis.checkpoints import build_card, load_matching, read_state, save_checkpoint
from mis.errors import InputError, UsageError
from mis.io.files import resolve_inputs
from mis.io.volume import read_volume
from mis.models.pctnet import PCTNet, PCTNetConfig, count_parameters, fast_config
from mis.pipelines.ct_segmentation.evaluate import _case_name
from mis.pipelines.ct_segmentation.labels import apply_labels_map, class_names
from mis.pipelines.ct_segmentation.metrics import soft_dice_per_class
from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS, make_phantom
from mis.pipelines.ct_segmentation.preprocess import (
    DEFAULT_PREPROCESSING, hu_to_normalised, image_to_grid, labels_to_grid)
from mis.runtime.distributed import dist_info, init_distributed
from mis.runtime.sliding_window import sliding_window_predict
from mis.runtime.training import RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

PAPER_INPUT_SIZE = (64, 128, 128)
FAST_INPUT_SIZE = (32, 48, 48)


@dataclass
class Case:
    name: str
    image: torch.Tensor   # (D, H, W) normalised
    labels: torch.Tensor  # (D, H, W) uint8 class ids
    foreground: dict[int, torch.Tensor] = field(default=None)  # class id -> (N, 3) voxel indices

    def __post_init__(self):
        self.foreground = {int(k): (self.labels == k).nonzero() for k in self.labels.unique() if k > 0}


@dataclass(kw_only=True)
class SegTrainOptions(RunOptions):
    out: Path
    images: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    labels_map: dict[str, list[int]] | None = None
    phantoms: int = 0                 # synthetic labelled phantoms added to the training set
    phantom_seed: int = 1000
    real_fraction: float = 0.25       # share of patches drawn from real (file) cases when phantoms are mixed in
    partial_scans: float = 0.35       # share of patches cut like a partial scan (slab / field of view)
    val_phantoms: int = 2
    steps: int = 2000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    fast: bool = True
    input_size: tuple[int, int, int] | None = None
    network: dict | None = None       # PCTNetConfig overrides (experiments use a smaller network)
    spacing: tuple[float, float, float] | None = None
    init: Path | None = None
    checkpoint_every: int = 250
    validate_every: int = 250

    def preprocessing(self) -> dict:
        spacing = self.spacing or ((4.0, 4.0, 4.0) if self.fast else (1.5, 1.5, 1.5))
        return {**DEFAULT_PREPROCESSING, "spacing": list(spacing)}


def mirror_axes_for(names: dict[int, str]) -> tuple[int, ...]:
    """Mirroring (augmentation and TTA) would swap left and right organs, so models with lateral
    classes are not mirrored at all (TotalSegmentator does the same); others mirror every axis."""
    lateral = any(side in name.lower() for name in names.values() for side in ("left", "right"))
    return () if lateral else (0, 1, 2)


# --- data --------------------------------------------------------------------------------------------
def phantom_case(seed: int, preprocessing: dict) -> Case:
    phantom = make_phantom(seed)
    meta = phantom.volume_meta()
    image, _ = image_to_grid(phantom.image, meta, preprocessing)
    return Case(f"phantom_{seed}", image, labels_to_grid(phantom.labels, meta, preprocessing))


def file_cases(images: list[str], labels: list[str], mapping: dict | None, preprocessing: dict,
               log=print) -> list[Case]:
    image_list, label_list = resolve_inputs(images), resolve_inputs(labels, kinds=("nifti",))
    if len(image_list) == 1 and len(label_list) == 1:  # one pair: names need not match
        image_paths = {_case_name(image_list[0]): image_list[0]}
        label_paths = {_case_name(image_list[0]): label_list[0]}
    else:
        image_paths, label_paths = _by_case_name(image_list), _by_case_name(label_list)
    missing = sorted(set(image_paths) - set(label_paths))
    if missing:
        raise InputError(image_paths[missing[0]], f"no label file with the same case name among --labels "
                         f"({len(missing)} image(s) unmatched)")
    cases = []
    for name in sorted(image_paths):
        image, meta = read_volume(image_paths[name])
        labels, label_meta = read_volume(label_paths[name])
        if labels.shape != image.shape:
            raise InputError(label_paths[name], f"label shape {labels.shape} != image shape {image.shape}")
        if not np.allclose(label_meta.affine, meta.affine, atol=1e-3):
            raise InputError(label_paths[name], f"label affine differs from the image's ({image_paths[name]}): the "
                             "labels would be trained on other anatomy; resample them onto the image grid first")
        ids = apply_labels_map(label_ids(labels, label_paths[name]), mapping)
        if mapping is not None and not ids.any():
            log(f"warning: {label_paths[name]}: none of the labels map's ids occur; this case trains as all background")
        grid_image, _ = image_to_grid(image, meta, preprocessing)
        cases.append(Case(name, grid_image, labels_to_grid(ids, meta, preprocessing)))
    return cases


def _by_case_name(paths: list[Path]) -> dict[str, Path]:
    """Case name -> file; two files with one case name (e.g. from two --images folders) would silently be one."""
    named: dict[str, Path] = {}
    for path in paths:
        name = _case_name(path)
        if name in named:
            raise InputError(path, f"case name {name!r} also names {named[name]}; rename one of them")
        named[name] = path
    return named


def label_ids(labels: np.ndarray, path: Path) -> np.ndarray:
    """Integer label ids; non-integer or negative values (an ignore label, a resampled label map) are refused
    rather than rounded or wrapped into some organ."""
    if not np.array_equal(labels, np.rint(labels)):
        raise InputError(path, "label map holds non-integer values (interpolated labels?); resample it with "
                         "nearest neighbour")
    if labels.min() < 0:
        raise InputError(path, f"label map holds negative ids ({int(labels.min())}); ignore labels are not supported")
    return labels.astype(np.int64)


def crop_or_pad(volume: torch.Tensor, start: list[int], size: tuple[int, ...], fill: float) -> torch.Tensor:
    """A (D, H, W) window at `start` (may reach outside; the outside is `fill`)."""
    out = torch.full(size, fill, dtype=volume.dtype)
    src = [slice(max(0, s), min(n, s + w)) for s, w, n in zip(start, size, volume.shape)]
    dst = [slice(a.start - s, a.stop - s) for a, s in zip(src, start)]
    out[tuple(dst)] = volume[tuple(src)]
    return out


def cut_like_a_partial_scan(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, background: float,
                            axial: float, field_of_view: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a (D, H, W) = (S, A, R) patch look like part of a partial scan, as inference sees one.

    With probability `axial` the scan covers only a slab of the window (from 4 slices to all of them, placed
    anywhere, so one or both of its ends can fall inside); with probability `field_of_view` one side of the
    field of view cuts into the body. Outside the scanned region the image is what inference pads with (air,
    `background`) and the labels are background: that region is never part of an output.
    """
    depth = image.shape[0]
    if rng.random() < axial:
        thickness = int(rng.integers(4, depth + 1))
        low = int(rng.integers(-thickness // 2, depth - thickness // 2 + 1))
        high = low + thickness
        image, labels = image.clone(), labels.clone()
        image[:max(0, low)], labels[:max(0, low)] = background, 0
        image[max(0, high):], labels[max(0, high):] = background, 0
    if rng.random() < field_of_view:
        axis = int(rng.integers(1, 3))
        size = image.shape[axis]
        cut = int(size * rng.uniform(0.1, 0.4))
        index = [slice(None)] * 3
        index[axis] = slice(0, cut) if rng.random() < 0.5 else slice(size - cut, size)
        image, labels = image.clone(), labels.clone()
        image[tuple(index)], labels[tuple(index)] = background, 0
    return image, labels


class PatchSampler:
    """Batches as a pure function of (rng, step), so training resumes exactly."""

    def __init__(self, cases: list[Case], roi: tuple[int, int, int], batch_size: int, background: float,
                 foreground_fraction: float = 1 / 3, weights: list[float] | None = None,
                 mirror_axes: tuple[int, ...] = (0, 1, 2), partial_scans: float = 0.0):
        self.cases, self.roi, self.batch_size, self.mirror_axes = cases, roi, batch_size, tuple(mirror_axes)
        self.background, self.foreground_fraction = background, foreground_fraction
        self.partial_scans = partial_scans   # probability of an axial cut; a field-of-view cut has half of it
        weights = np.asarray(weights if weights is not None else [1.0] * len(cases), dtype=np.float64)
        self.probabilities = weights / weights.sum()

    def _start(self, rng: np.random.Generator, case: Case) -> list[int]:
        shape = case.image.shape
        if case.foreground and rng.random() < self.foreground_fraction:
            # class first, then a voxel of it (as nnU-Net does): small organs get as many patches as big ones
            voxels = case.foreground[sorted(case.foreground)[rng.integers(len(case.foreground))]]
            centre = voxels[rng.integers(len(voxels))].tolist()
            return [c - r // 2 + int(rng.integers(-r // 4, r // 4 + 1)) for c, r in zip(centre, self.roi)]
        return [int(rng.integers(min(0, n - r), max(0, n - r) + 1)) for n, r in zip(shape, self.roi)]

    def __call__(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(self.batch_size):
            case = self.cases[rng.choice(len(self.cases), p=self.probabilities)]
            start = self._start(rng, case)
            x = crop_or_pad(case.image, start, self.roi, self.background)
            y = crop_or_pad(case.labels, start, self.roi, 0)
            if self.partial_scans:
                x, y = cut_like_a_partial_scan(x, y, rng, self.background, self.partial_scans,
                                               self.partial_scans / 2)
            flips = [axis for axis in self.mirror_axes if rng.random() < 0.5]
            if flips:
                x, y = x.flip(flips), y.flip(flips)
            x = x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
            if rng.random() < 0.3:
                noise = torch.from_numpy(rng.standard_normal(self.roi).astype(np.float32))
                x = x + noise * float(rng.uniform(0.0, 0.05))
            images.append(x)
            labels.append(y)
        return torch.stack(images)[:, None], torch.stack(labels).long()


# --- loss ------------------------------------------------------------------------------------------
def dice_ce(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """0.5 soft Dice (batch-level, all classes) + 0.5 CE with soft targets; target (B, K, ...)."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * target).sum(dims)
    dice = (2 * intersection + eps) / (probs.sum(dims) + target.sum(dims) + eps)
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
    return 0.5 * (1 - dice.mean()) + 0.5 * ce


def deep_supervision_loss(outputs, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights 1/2^i over the scales (normalised); ground truth one-hot average-pooled to each scale."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    one_hot = F.one_hot(labels, num_classes).permute(0, 4, 1, 2, 3).float()
    weights = [0.5 ** i for i in range(len(outputs))]
    total = 0.0
    for weight, logits in zip(weights, outputs):
        target = one_hot if logits.shape[2:] == one_hot.shape[2:] else F.adaptive_avg_pool3d(one_hot, logits.shape[2:])
        total = total + weight * dice_ce(logits, target)
    return total / sum(weights)


# --- training ----------------------------------------------------------------------------------------
def network_config(options: SegTrainOptions, num_classes: int) -> PCTNetConfig:
    if options.fast:
        # 8/16 channels at the two full-resolution levels: with windows batched (as our inference does)
        # this is faster than fast_config's 12/24 for training and inference on a 2-core CPU.
        config = fast_config(num_classes, options.input_size or FAST_INPUT_SIZE, resolution_mode=0,
                             feature_chns=(8, 16, 32, 64, 128))
    else:
        config = PCTNetConfig(class_num=num_classes, input_size=tuple(options.input_size or PAPER_INPUT_SIZE))
    if options.network:
        config = PCTNetConfig.from_dict({**config.to_dict(), **options.network})
    return config


def validation_dice(model, cases: list[Case], roi, num_classes: int, policy, background: float) -> dict:
    """Full-volume sliding-window Dice on the network grid, per class and mean; and the mean Dice of a 40 mm slab
    through the middle of each case segmented on its own (`val_dice_slab`: how partial scans fare)."""
    model.eval()
    scores, slab_scores = [], []

    def predict(x):
        with policy.autocast():
            return torch.softmax(model(x).float(), dim=1)

    def probabilities(image):
        probs, _ = sliding_window_predict(image[None, None], predict, roi, num_classes, policy, overlap=0.25,
                                          batch_size=2, stitch_device="cpu", pad_value=background)
        return probs[0].cpu()

    for case in cases:
        scores.append(soft_dice_per_class(probabilities(case.image), case.labels, num_classes))
        depth = case.image.shape[0]
        slab = slice(max(0, depth // 2 - 5), depth // 2 + 5)   # 10 slices = 40 mm on the 4 mm grid
        slab_scores.append(soft_dice_per_class(probabilities(case.image[slab]), case.labels[slab], num_classes))
    model.train()
    per_class = torch.stack(scores).mean(0)
    return {"val_dice": float(per_class.mean()), **{f"val_dice_{i + 1}": float(v) for i, v in enumerate(per_class)},
            "val_dice_slab": float(torch.stack(slab_scores).mean())}


def train_segmentation(options: SegTrainOptions, log=print) -> dict:
    if options.labels_map:
        names = class_names(options.labels_map)
    elif options.images:
        raise UsageError("--labels-map is required with --images so that class ids and names are explicit")
    else:
        names = dict(PHANTOM_LABELS)
    preprocessing = {**options.preprocessing(), "mirror_axes": list(mirror_axes_for(names))}
    if options.phantoms and names != PHANTOM_LABELS:
        raise UsageError(f"--phantoms needs the phantom classes {list(PHANTOM_LABELS.values())} in this order "
                         f"in --labels-map (got {list(names.values())})")
    num_classes = len(names) + 1
    real = file_cases(options.images, options.labels, options.labels_map, preprocessing, log) if options.images else []
    synthetic = [phantom_case(options.phantom_seed + i, preprocessing) for i in range(options.phantoms)]
    cases = real + synthetic
    if not cases:
        raise UsageError("no training data: give --images/--labels and/or --phantoms N")
    val_cases = [phantom_case(options.phantom_seed + 10_000 + i, preprocessing)
                 for i in range(options.val_phantoms)] if names == PHANTOM_LABELS else []
    log(f"training cases: {len(cases)} ({', '.join(c.name for c in cases[:6])}{'...' if len(cases) > 6 else ''})")

    init_distributed()  # no-op unless launched by torchrun
    config = network_config(options, num_classes)
    torch.manual_seed(options.seed)
    model = PCTNet(config)
    init_report = None
    if options.init:
        init_report = load_matching(model, read_state(options.init))
        if not init_report["loaded"]:
            raise UsageError(f"--init {options.init}: none of its tensors fits this network (another model family "
                             "or configuration); nothing would be initialised from it")
        log(f"--init {options.init}: loaded {len(init_report['loaded'])} tensors, re-initialised "
            f"{len(init_report['reinitialised'])} ({', '.join(init_report['reinitialised'][:6])})")
    log(f"PCT-Net {config.feature_chns} input {config.input_size}: {count_parameters(model) / 1e6:.2f} M parameters")

    background = hu_to_normalised(-1000.0, tuple(preprocessing["intensity_window"]))
    weights = None
    if real and synthetic:  # a few real volumes among many phantoms: give them a fixed share of patches
        weights = [options.real_fraction / len(real)] * len(real) + [(1 - options.real_fraction) / len(synthetic)] * len(synthetic)
    sampler = PatchSampler(cases, tuple(config.input_size), options.batch_size, background, weights=weights,
                           mirror_axes=preprocessing["mirror_axes"], partial_scans=options.partial_scans)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=options.steps, power=0.9)

    def loss_fn(net, batch):
        x, y = batch   # already on the training device
        return deep_supervision_loss(net(x), y, num_classes), {}

    def validate_fn(trainer):
        return validation_dice(trainer.module(), val_cases, tuple(config.input_size), num_classes, trainer.policy,
                               background)

    train_config = TrainConfig(max_steps=options.steps, lr=options.lr, weight_decay=options.weight_decay,
                               grad_clip=12.0, precision=options.precision, checkpoint_every=options.checkpoint_every,
                               log_every=25, validate_every=options.validate_every, out_dir=options.out,
                               seed=options.seed, device=options.device, resume=options.resume,
                               progress=options.progress, description="train segment",
                               best_metric="val_dice" if val_cases else None, best_mode="max",
                               settings=resume_settings(options))
    trainer = Trainer(model, optimizer, scheduler, train_config, loss_fn=loss_fn,
                      validate_fn=validate_fn if val_cases else None)
    rank = dist_info()[0]  # each DDP rank draws its own patches
    final = trainer.fit(StepSeededBatches(sampler, options.seed + rank))

    model = trainer.module()
    best = trainer.restore_best()   # ship the weights with the best validation Dice
    if best is not None:  # ... and the card's metrics from that same step, not the last one
        final = {**{k: v for k, v in final.items() if not k.startswith("val_")},
                 **{k: v for k, v in best.items() if k.startswith("val_") or k == "best_step"}}
    model = model.cpu().eval()
    card = build_card("pctnet", config.to_dict(), task="ct_segmentation", preprocessing=preprocessing, labels=names,
                      training={"cases": [c.name for c in cases], "steps": options.steps,
                                "batch_size": options.batch_size, "lr": options.lr, "seed": options.seed,
                                "init": str(options.init) if options.init else None,
                                "init_loaded": len(init_report["loaded"]) if init_report else None,
                                "real_fraction": options.real_fraction if weights else None,
                                "partial_scans": options.partial_scans, "command": options.command},
                      metrics={k: v for k, v in final.items() if k.startswith("val_") or k == "best_step"})
    target = options.out / "model.safetensors"
    if rank == 0:  # under DDP every rank holds the same weights; one writes them
        save_checkpoint(target, model, card, half=options.half)
        log(f"saved {target}")
    return {"checkpoint": str(target), **trainer.policy.to_dict(), **final}
