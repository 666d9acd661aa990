"""`mis train battery`: an FPNN ensemble and the variance baseline on the training cells.

Each member is trained by the shared runtime loop (AdamW, cosine LR, gradient clipping, AMP on GPU,
exact resume from its run folder) on mini-batches of cells with Gaussian noise on the standardised
inputs; members differ only by seed. The final checkpoint holds the ensemble, the normaliser, the
voltage grid, the window length N and the fitted variance model in its card.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mis.checkpoints import build_card, save_checkpoint
from mis.errors import UsageError
from mis.io.battery import MIT_VOLTAGE_GRID, Cell
from mis.models.fpnn import FPNN, FPNNConfig, FPNNEnsemble
from mis.pipelines.battery.baseline import VarianceModel, rmse_mape
from mis.pipelines.battery.features import CHANNEL_NAMES, FIRST_CYCLE, SUMMARY_NAMES, reference_cycle
from mis.pipelines.battery.pipeline import TASK, standardised_predictions
from mis.pipelines.battery.preprocess import BatteryArrays, Normalizer, stack_cells
from mis.runtime.device import resolve_training_policy
from mis.runtime.training import (RunOptions, StepSeededBatches, TrainConfig, Trainer, build_optimizer,
                                  resume_settings)


@dataclass(kw_only=True)
class BatteryTrainOptions(RunOptions):
    out: Path
    n_cycles: int = 100
    members: int = 5
    steps: int = 300
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-2
    curve_noise: float = 0.05      # std of Gaussian noise on standardised curves
    summary_noise: float = 0.05    # ... and on standardised summary features
    split: str | None = "train"    # train on cells with this split label (None: all cells)
    temperature: bool = False      # add the T(V) channel (sources with temperature only)
    charge_time: bool = False      # add the charge-time summary feature (sources with it only)
    config: FPNNConfig = field(default_factory=FPNNConfig)


def channels_of(options: BatteryTrainOptions) -> tuple[str, ...]:
    return CHANNEL_NAMES + (("temperature",) if options.temperature else ())


def extra_summary_of(options: BatteryTrainOptions) -> tuple[str, ...]:
    return ("charge_time_s",) if options.charge_time else ()


def training_cells(cells: list[Cell], split: str | None, n_cycles: int | None = None) -> list[Cell]:
    chosen = [c for c in cells if split is None or c.split == split or (c.split is None and split == "train")]
    if not chosen:
        raise UsageError(f"no cells with split {split!r} in the data (use --split all to train on every cell)")
    unlabelled = [c.name for c in chosen if c.cycle_life is None]
    if unlabelled:
        raise UsageError(f"training needs the observed cycle life of every cell; missing for {', '.join(unlabelled[:5])}")
    if n_cycles is not None:
        early = [f"{c.name} ({c.cycle_life})" for c in chosen if c.cycle_life <= n_cycles]
        if early:
            raise UsageError(f"cells that reach end of life within the first {n_cycles} cycles leave nothing to "
                             f"predict: {', '.join(early[:5])}; remove them or use a shorter window")
    if len({c.cycle_life for c in chosen}) < 2:
        raise UsageError(f"training needs at least two cells with different cycle lives ({len(chosen)} cell(s) given)")
    return chosen


def train_member(arrays: BatteryArrays, normalizer: Normalizer, options: BatteryTrainOptions, member: int,
                 out_dir: Path) -> FPNN:
    """One seeded FPNN through the shared Trainer."""
    curves = torch.from_numpy(normalizer.curves(arrays.curves))
    summary = torch.from_numpy(normalizer.summary(arrays.summary))
    target = torch.from_numpy(normalizer.target(arrays.life))
    seed = options.seed * 1000 + member
    torch.manual_seed(seed)
    model = FPNN(options.config)
    batch_size = min(options.batch_size, len(target))

    def make_batch(rng: np.random.Generator, step: int):
        index = torch.from_numpy(rng.choice(len(target), batch_size, replace=False))
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noisy_curves = curves[index] + options.curve_noise * torch.randn(curves[index].shape, generator=generator)
        noisy_summary = summary[index] + options.summary_noise * torch.randn(summary[index].shape, generator=generator)
        return noisy_curves, noisy_summary, target[index]

    def loss_fn(net, batch):
        x, s, y = batch
        return torch.nn.functional.mse_loss(net(x, s), y), {}

    config = TrainConfig(out_dir=out_dir, max_steps=options.steps, lr=options.lr, weight_decay=options.weight_decay,
                         grad_clip=1.0, precision=options.precision, checkpoint_every=max(options.steps // 4, 1),
                         log_every=max(options.steps // 20, 1), seed=seed, device=options.device,
                         resume=options.resume, progress=options.progress,
                         description=f"FPNN member {member + 1}/{options.members}", settings=resume_settings(options))
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.steps)
    Trainer(model, optimizer, scheduler, config, loss_fn=loss_fn).fit(StepSeededBatches(make_batch, seed))
    return model.cpu().eval()


def fit_ensemble(arrays: BatteryArrays, options: BatteryTrainOptions,
                 log: Callable[[str], None] = lambda _: None) -> tuple[FPNNEnsemble, Normalizer, VarianceModel]:
    normalizer = Normalizer.fit(arrays)
    baseline = VarianceModel.fit(arrays.summary[:, 0], arrays.life)
    config = FPNNConfig(**{**options.config.to_dict(), "ensemble_size": options.members,
                           "n_points": arrays.curves.shape[-1], "in_channels": arrays.curves.shape[1],
                           "summary_features": arrays.summary.shape[1]})
    options.config = config
    ensemble = FPNNEnsemble(config)
    for member in range(options.members):
        start = time.perf_counter()
        trained = train_member(arrays, normalizer, options, member, options.out / f"member{member}")
        ensemble.members[member].load_state_dict(trained.state_dict())
        log(f"member {member + 1}/{options.members} trained in {time.perf_counter() - start:.1f} s")
    return ensemble.eval(), normalizer, baseline


def battery_card(config: FPNNConfig, normalizer: Normalizer, baseline: VarianceModel, options: BatteryTrainOptions,
                 voltage: np.ndarray, arrays: BatteryArrays, metrics: dict) -> dict:
    preprocessing = {
        "n_cycles": options.n_cycles, "first_cycle": FIRST_CYCLE, "reference_cycle": reference_cycle(options.n_cycles),
        "voltage_grid": {"start": float(voltage[0]), "stop": float(voltage[-1]), "points": int(len(voltage))},
        "channels": list(channels_of(options)), "curve_points": int(config.n_points),
        "summary_features": list(SUMMARY_NAMES + extra_summary_of(options)),
        "normalizer": normalizer.to_dict(), "target": "log10 cycle life (first cycle below 80 % of nominal)",
    }
    training = {
        "cells": len(arrays), "split": options.split, "members": options.members, "steps": options.steps,
        "batch_size": options.batch_size, "lr": options.lr, "weight_decay": options.weight_decay,
        "curve_noise": options.curve_noise, "summary_noise": options.summary_noise, "seed": options.seed,
        "sources": sorted(set(arrays.sources)),
    }
    return build_card("fpnn", config.to_dict(), task=TASK, preprocessing=preprocessing, training=training,
                      metrics=metrics, extra={"baseline": baseline.to_dict()})


def train_battery(cells: list[Cell], options: BatteryTrainOptions,
                  log: Callable[[str], None] = lambda _: None) -> dict:
    voltage = MIT_VOLTAGE_GRID if not cells else cells[0].voltage
    chosen = training_cells(cells, options.split, options.n_cycles)
    arrays = stack_cells(chosen, options.n_cycles, voltage, channels=channels_of(options),
                         extra_summary=extra_summary_of(options))
    for warning in arrays.warnings:
        log(f"warning: {warning}")
    log(f"training on {len(arrays)} cells, N = {options.n_cycles} cycles, {options.members} member(s)")
    start = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    model, normalizer, baseline = fit_ensemble(arrays, options, log)
    predicted = normalizer.life(standardised_predictions(model, normalizer, arrays.curves, arrays.summary))
    rmse, mape = rmse_mape(predicted, arrays.life)
    base_rmse, base_mape = rmse_mape(baseline.predict(arrays.summary[:, 0]), arrays.life)
    metrics = {"train": {"fpnn_rmse": rmse, "fpnn_mape": mape, "variance_rmse": base_rmse, "variance_mape": base_mape,
                         "cells": len(arrays)}}
    card = battery_card(model.config, normalizer, baseline, options, voltage, arrays, metrics)
    path = options.out / "model.safetensors"
    save_checkpoint(path, model, card, half=options.half)
    seconds = time.perf_counter() - start
    log(f"train RMSE {rmse:.0f} cycles, MAPE {mape:.1f} % (variance model {base_rmse:.0f} / {base_mape:.1f} %); "
        f"{seconds:.0f} s; wrote {path}")
    policy = resolve_training_policy(options.device, options.precision)
    return {"checkpoint": str(path), **policy.to_dict(), "seconds": seconds, "metrics": metrics}
