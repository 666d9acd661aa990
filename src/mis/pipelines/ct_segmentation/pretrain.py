"""`mis pretrain ct`: Volume Fusion self-supervised pretraining of PCT-Net on unlabeled CT.

The pretext task is a 5-class segmentation (alpha = k/4) trained with Dice + CE (0.5/0.5), Adam
1e-3 and deep supervision, exactly like fine-tuning, so the resulting checkpoint is accepted by
`mis train segment --init` (all tensors load except the class-specific output convolutions).
A fixed, pre-fused validation set (drawn once from a fixed seed) makes pretext Dice comparable
across runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mis.checkpoints import build_card, save_checkpoint
from mis.errors import UsageError
from mis.io.files import resolve_inputs
from mis.io.volume import read_volume
from mis.models.pctnet import PCTNet, count_parameters
from mis.pipelines.ct_segmentation.metrics import soft_dice_per_class
from mis.pipelines.ct_segmentation.phantom import make_phantom
from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING, image_to_grid
from mis.pipelines.ct_segmentation.train import SegTrainOptions, deep_supervision_loss, network_config
from mis.pipelines.ct_segmentation.volume_fusion import VolumeFusionConfig, volume_fusion_sample
from mis.runtime.distributed import dist_info, init_distributed
from mis.runtime.training import RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

VALIDATION_SEED = 20_231


@dataclass(kw_only=True)
class PretrainOptions(RunOptions):
    out: Path
    inputs: list[str] = field(default_factory=list)
    phantoms: int = 0                  # unlabeled synthetic phantoms (their labels are never read)
    phantom_seed: int = 5000
    steps: int = 2000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    fast: bool = True
    network: dict | None = None        # PCTNetConfig overrides (experiments use a smaller network)
    spacing: tuple[float, float, float] | None = None
    block_min: tuple[int, int, int] | None = None
    block_max: tuple[int, int, int] | None = None
    validation_samples: int = 8
    checkpoint_every: int = 250
    validate_every: int = 250


def looks_like_label_map(image: np.ndarray) -> bool:
    """Whole numbers from 0 to a few hundred, no air at -1000 HU: a segmentation, not a scan."""
    low, high = float(image.min()), float(image.max())
    return low >= 0 and high <= 1000 and bool(np.all(image == np.round(image))) and len(np.unique(image)) <= 256


def unlabeled_volumes(options: PretrainOptions, preprocessing: dict, log=print) -> list[np.ndarray]:
    """Every input on the network grid (RAS, model spacing, HU clipped to [-1, 1]), (D, H, W)."""
    volumes = []
    for path in resolve_inputs(options.inputs) if options.inputs else []:
        image, meta = read_volume(path)
        if looks_like_label_map(image):   # e.g. case_labels.nii.gz beside the scans in the same folder
            log(f"skipped {path}: a label map (integer values {int(image.min())}..{int(image.max())}), not CT")
            continue
        grid, _ = image_to_grid(image, meta, preprocessing)
        volumes.append(grid.numpy())
    for i in range(options.phantoms):
        phantom = make_phantom(options.phantom_seed + i)  # labels deliberately unused
        meta = phantom.volume_meta()
        volumes.append(image_to_grid(phantom.image, meta, preprocessing)[0].numpy())
    if not volumes:
        raise UsageError("no pretraining data: give CT files/folders and/or --phantoms N")
    log(f"pretraining volumes: {len(volumes)}")
    return volumes


class FusionBatches:
    """Batches of fused samples as a pure function of (rng, step); both crops of one sample always
    come from the same scan."""

    def __init__(self, volumes: list[np.ndarray], config: VolumeFusionConfig, batch_size: int):
        self.volumes, self.config, self.batch_size = volumes, config, batch_size

    def __call__(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [volume_fusion_sample(self.volumes[rng.integers(len(self.volumes))], rng, self.config)
                   for _ in range(self.batch_size)]
        images = torch.from_numpy(np.stack([s.image for s in samples]))[:, None]
        labels = torch.from_numpy(np.stack([s.labels for s in samples])).long()
        return images, labels


def fixed_validation_set(volumes: list[np.ndarray], config: VolumeFusionConfig, count: int):
    rng = np.random.default_rng(VALIDATION_SEED)
    return FusionBatches(volumes, config, count)(rng, 0)


def pretrain_ct(options: PretrainOptions, log=print) -> dict:
    init_distributed()
    preprocessing = {**DEFAULT_PREPROCESSING}
    if options.spacing or not options.fast:
        preprocessing["spacing"] = list(options.spacing or (1.5, 1.5, 1.5))
    fusion = VolumeFusionConfig()
    config = network_config(SegTrainOptions(out=options.out, fast=options.fast, network=options.network),
                            fusion.num_classes)
    fusion = VolumeFusionConfig(
        patch_size=tuple(config.input_size),
        block_min=options.block_min or tuple(min(8, n) for n in config.input_size),
        block_max=options.block_max or tuple(min(32, n // 2) for n in config.input_size))
    volumes = unlabeled_volumes(options, preprocessing, log)
    torch.manual_seed(options.seed)
    model = PCTNet(config)
    log(f"PCT-Net {config.feature_chns} input {config.input_size}: {count_parameters(model) / 1e6:.2f} M "
        f"parameters; blocks {fusion.block_min}..{fusion.block_max}")
    val_x, val_y = fixed_validation_set(volumes, fusion, options.validation_samples)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=options.steps, power=0.9)

    def loss_fn(net, batch):
        x, y = batch   # already on the training device
        return deep_supervision_loss(net(x), y, fusion.num_classes), {}

    def validate_fn(trainer):
        net = trainer.module()
        dice = []
        for x, y in zip(val_x.split(2), val_y.split(2)):
            with trainer.autocast():
                probs = torch.softmax(net(x.to(trainer.device)).float(), 1).cpu()
            dice.extend(soft_dice_per_class(p, t, fusion.num_classes) for p, t in zip(probs, y))
        per_class = torch.stack(dice).mean(0)
        return {"pretext_dice": float(per_class.mean()),
                **{f"pretext_dice_{k + 1}": float(v) for k, v in enumerate(per_class)}}

    train_config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr,
                               weight_decay=options.weight_decay, grad_clip=12.0, precision=options.precision,
                               checkpoint_every=options.checkpoint_every, log_every=25,
                               validate_every=options.validate_every, best_metric="pretext_dice", best_mode="max",
                               seed=options.seed, device=options.device, resume=options.resume,
                               progress=options.progress, description="pretrain ct", settings=resume_settings(options))
    trainer = Trainer(model, optimizer, scheduler, train_config, loss_fn=loss_fn, validate_fn=validate_fn)
    final = trainer.fit(StepSeededBatches(FusionBatches(volumes, fusion, options.batch_size),
                                          options.seed + dist_info()[0]))
    model = trainer.module().cpu().eval()
    card = build_card("pctnet", config.to_dict(), task="ct_pretraining", preprocessing=preprocessing,
                      labels={k: f"alpha_{k}/{fusion.k}" for k in range(1, fusion.num_classes)},
                      training={"method": "volume_fusion", "volumes": len(volumes), "steps": options.steps,
                                "batch_size": options.batch_size, "lr": options.lr, "seed": options.seed,
                                "fusion": {"block_min": list(fusion.block_min), "block_max": list(fusion.block_max),
                                           "foreground_ratio": fusion.foreground_ratio}},
                      metrics={k: v for k, v in final.items() if k.startswith("pretext_")})
    target = options.out / "pretrained.safetensors"
    save_checkpoint(target, model, card, half=options.half)
    log(f"saved {target}")
    return {"checkpoint": str(target), **trainer.policy.to_dict(), **final}
