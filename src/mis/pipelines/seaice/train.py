"""Training ViSual_IceD-family networks on paired SAR + MSI scenes (issue 17; the CLI comes with the task package).

Scenes come from the seeded synthetic generator (`synthetic.py`: clouds over the MSI, wind-roughened water in the
SAR), rendered once into a pool. Each step takes random aligned crops of both grids (the finer one `ratio` times
larger) with flips and 90-degree rotations; the label is the ice mask on the coarse grid. Inputs are scaled as
upstream scales its (min-max to [-1, 1]) but with fixed ranges, so a scene's scaling does not depend on its
content: SAR sigma0 from [-35, 5] dB, MSI reflectance from [0, 1]. Loss: class-balanced BCE on logits
(upstream's pos_weight 0.8). Adam; validation F1 on fixed fresh scenes; the best validation's weights are kept.

`ablation()` trains the dual-encoder network and its three baselines (stacked inputs, SAR only, MSI only) with
the same budget and seeds and scores them on the same fresh scenes, as the paper's comparison.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mis.checkpoints import build_card, save_checkpoint
from mis.models.visual_iced import VisualIced, VisualIcedConfig
from mis.pipelines.seaice.evaluate import Confusion
from mis.pipelines.seaice.pipeline import scale_inputs
from mis.pipelines.seaice.synthetic import SyntheticScene, make_scene
from mis.runtime.training import RunOptions, StepSeededBatches, TrainConfig, Trainer, resume_settings

TASK = "seaice"
SAR_DB_RANGE = (-35.0, 5.0)
PREPROCESSING = {"sar_db_range": list(SAR_DB_RANGE), "msi_range": [0.0, 1.0], "sar_bands": "HH,HV",
                 "msi_bands": "B02,B03,B04,B08"}
VAL_SEED = 10_000_000


def demo_network(mode: str = "dual") -> VisualIcedConfig:
    """The demo family on Sentinel-1 HH/HV + Sentinel-2 B02/B03/B04/B08, MSI 4x finer (10 m vs 40 m)."""
    return VisualIcedConfig.demo(sar_channels=2, msi_channels=4, ratio=4, finer="msi", mode=mode)


@dataclass(kw_only=True)
class SeaIceTrainOptions(RunOptions):
    out: Path
    network: VisualIcedConfig = field(default_factory=demo_network)
    steps: int = 1500
    batch_size: int = 8
    crop: int = 64                 # coarse-grid pixels per side
    lr: float = 1e-3
    pos_weight: float = 0.8        # upstream's class balance
    scenes: int = 60               # synthetic scenes in the pool
    scene_size: int = 128          # their coarse side
    val_scenes: int = 12
    validate_every: int = 250


def scene_arrays(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled as the pipeline scales them (the card's ranges)."""
    sar, msi = scale_inputs(scene.sar, scene.msi, {"preprocessing": PREPROCESSING})
    return sar, msi, scene.ice.astype(np.float32)


def scene_pool(options: SeaIceTrainOptions, seed_base: int, count: int) -> list[tuple]:
    net = options.network
    return [scene_arrays(make_scene(seed_base + k, coarse_size=options.scene_size, ratio=net.ratio, finer=net.finer))
            for k in range(count)]


def _crop_pair(sar, msi, ice, crop: int, ratio: int, finer: str, rng: np.random.Generator):
    h, w = ice.shape
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    fine = slice(y * ratio, (y + crop) * ratio), slice(x * ratio, (x + crop) * ratio)
    coarse = slice(y, y + crop), slice(x, x + crop)
    sar_c = sar[:, fine[0], fine[1]] if finer == "sar" else sar[:, coarse[0], coarse[1]]
    msi_c = msi[:, fine[0], fine[1]] if finer == "msi" else msi[:, coarse[0], coarse[1]]
    return sar_c, msi_c, ice[coarse[0], coarse[1]]


def _augment(arrays, rng: np.random.Generator):
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def batch_sampler(pool: list[tuple], options: SeaIceTrainOptions) -> Callable:
    net = options.network

    def sample(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        rows = []
        for _ in range(options.batch_size):
            sar, msi, ice = pool[int(rng.integers(len(pool)))]
            rows.append(_augment(_crop_pair(sar, msi, ice, options.crop, net.ratio, net.finer, rng), rng))
        return {"sar": torch.from_numpy(np.stack([r[0] for r in rows])),
                "msi": torch.from_numpy(np.stack([r[1] for r in rows])),
                "ice": torch.from_numpy(np.stack([r[2] for r in rows]))[:, None]}

    return sample


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Binary scores with ice as the positive class (the paper's F1), IoU and accuracy (`evaluate.Confusion`)."""
    confusion = Confusion()
    confusion.add(predicted.astype(bool).ravel(), truth.astype(bool).ravel())
    return {k: float(v) for k, v in confusion.scores().items() if k in ("f1", "iou", "accuracy")}


@torch.no_grad()
def predict(model: VisualIced, sar: np.ndarray, msi: np.ndarray, device) -> np.ndarray:
    logits = model(torch.from_numpy(sar)[None].to(device), torch.from_numpy(msi)[None].to(device))
    channel = logits[:, -1]            # an imported 2-channel head: channel 1 is ice (upstream's inference)
    return (channel[0] > 0).cpu().numpy()


def score_scenes(model: VisualIced, scenes: list[tuple], device) -> dict[str, float]:
    model.eval()
    predicted = np.concatenate([predict(model, sar, msi, device).ravel() for sar, msi, _ in scenes])
    truth = np.concatenate([ice.ravel() for _, _, ice in scenes])
    return f1_scores(predicted, truth)


def make_loss(options: SeaIceTrainOptions) -> Callable:
    def loss_fn(model, batch):
        logits = model(batch["sar"], batch["msi"])[:, -1:].float()
        weight = torch.tensor(options.pos_weight, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, batch["ice"], pos_weight=weight)
        return loss, {}

    return loss_fn


def train_seaice(options: SeaIceTrainOptions, log: Callable[[str], None] = lambda _: None) -> dict:
    start = time.perf_counter()
    pool = scene_pool(options, options.seed * 100_003, options.scenes)
    val = scene_pool(options, VAL_SEED, options.val_scenes)
    log(f"rendered {len(pool)} training and {len(val)} validation scenes in {time.perf_counter() - start:.0f} s")
    torch.manual_seed(options.seed)
    model = VisualIced(options.network)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    config = TrainConfig(out_dir=options.out, max_steps=options.steps, lr=options.lr, grad_clip=None,
                         precision=options.precision, checkpoint_every=options.validate_every, log_every=50,
                         validate_every=options.validate_every, best_metric="val_f1", best_mode="max",
                         seed=options.seed, device=options.device, resume=options.resume, progress=options.progress,
                         description=f"ViSual_IceD ({options.network.mode})", settings=resume_settings(options))

    def validate(trainer: Trainer) -> dict:
        return {f"val_{k}": v for k, v in score_scenes(trainer.module(), val, trainer.device).items()}

    trainer = Trainer(model, optimizer, None, config, loss_fn=make_loss(options), validate_fn=validate)
    trainer.fit(StepSeededBatches(batch_sampler(pool, options), options.seed))
    best = trainer.restore_best() or {}
    model = trainer.module().cpu().eval()
    seconds = time.perf_counter() - start
    metrics = {"val_f1": best.get("val_f1"), "best_step": best.get("best_step"), "seconds": seconds}
    card = build_card("visual_iced", options.network.to_dict(), task=TASK,
                      preprocessing=PREPROCESSING,
                      training={"steps": options.steps, "batch_size": options.batch_size, "crop": options.crop,
                                "lr": options.lr, "scenes": options.scenes, "seed": options.seed,
                                "command": options.command}, metrics=metrics)
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, card, half=options.half)
    return {"checkpoint": str(path), "model": model, "metrics": metrics}


ABLATION_MODES = ("dual", "stacked", "sar", "msi")


def ablation(out: Path, *, steps: int, test_scenes: int = 24, modes: tuple[str, ...] = ABLATION_MODES,
             log: Callable[[str], None] = print, **settings) -> list[dict]:
    """Dual vs stacked vs SAR-only vs MSI-only with one budget and seed, scored on the same fresh scenes (seeds
    neither training nor validation uses)."""
    rows = []
    for mode in modes:
        options = SeaIceTrainOptions(out=out / mode, network=demo_network(mode), steps=steps, progress=False,
                                     **settings)
        result = train_seaice(options, log)
        test = scene_pool(options, 20_000_000, test_scenes)
        scores = score_scenes(result["model"], test, torch.device("cpu"))
        rows.append({"mode": mode, **scores, "seconds": result["metrics"]["seconds"],
                     "parameters": sum(p.numel() for p in result["model"].parameters())})
        log(f"{mode}: F1 {scores['f1']:.4f} IoU {scores['iou']:.4f} accuracy {scores['accuracy']:.4f} "
            f"({result['metrics']['seconds']:.0f} s)")
    return rows
