"""The Trainer: one small loop shared by every task.

It owns what every task needs and none should re-implement: the compute policy (the one device/AMP rule
of `runtime.device.resolve_training_policy`) with grad scaling, gradient clipping, LR schedulers, DDP,
atomic checkpoints that resume exactly (weights, optimizers, schedulers, scaler, RNG and data position),
an optional exponential moving average of the weights (`ema_decay`: what validation sees and best.pt keeps),
metrics as JSON lines, one training display (a bar with the loss on a terminal, a log line per logged step
elsewhere), and the best weights handed back (`restore_best`).

A task plugs in either `loss_fn(model, batch) -> (loss, metrics)` (one model, one optimizer) or
a whole `step_fn(trainer, batch) -> metrics` (e.g. GANs with two optimizers), which reuses
`trainer.autocast()` and `trainer.backward_step(...)` so scaling and clipping stay in one place.
"""
from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mis.errors import UsageError
from mis.runtime.device import resolve_training_policy
from mis.runtime.distributed import is_distributed
from mis.runtime.notices import notice
from mis.runtime.progress import ProgressBar
from mis.runtime.seeding import rng_state, seed_everything, set_rng_state
from mis.runtime.training.config import BEST, FORMAT, KEEP, LAST, METRICS, TrainConfig, setting_changes
from mis.runtime.training.data import BatchStream, to_device
from mis.runtime.training.records import MetricsLog, MetricWindow, atomic_torch_save, scalar

# Steps with a non-finite loss or gradient are skipped; this many in a row stop the run (it diverged).
MAX_NONFINITE_IN_A_ROW = 20
# Metrics shown in the display, in this order when present (the rest of a record stays in metrics.jsonl).
_SHOWN = ("loss", "loss_g", "loss_d", "val_dice", "val_lsd", "pretext_dice")


def _as_dict(value: Any, default_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {default_name: value}


def _finite(value: Any) -> bool:
    number = scalar(value)
    return number is None or math.isfinite(number)


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _detached_copy(module: nn.Module) -> nn.Module:
    ema = copy.deepcopy(module).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every floating parameter and buffer (BatchNorm running
    statistics included); integer buffers (num_batches_tracked) are copied."""
    live = dict(model.named_parameters())
    live.update(model.named_buffers())
    for name, tensor in [*ema.named_parameters(), *ema.named_buffers()]:
        source = live[name]
        if tensor.is_floating_point():
            tensor.lerp_(source.detach().to(tensor.dtype), 1.0 - decay)
        else:
            tensor.copy_(source)


def ema_decay_at(decay: float, step: int) -> float:
    """The decay after `step` optimiser steps: lower at first (timm's warm-up, (1 + t) / (10 + t)) so that the
    average does not carry the random initialisation for thousands of steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def fast_forward(scheduler: Any, steps: int) -> None:
    """Put a freshly built scheduler (and its optimizer's rates) where it would be after `steps` steps."""
    import warnings

    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "scheduler.step() before optimizer.step()": no optimizer step is meant
        for _ in range(steps):
            scheduler.step()


def describe_record(record: Mapping[str, Any], max_steps: int) -> str:
    """'step 120/2000 loss 0.4312 val_dice 0.8123': what the display shows of a logged record."""
    parts = [f"step {record.get('step')}/{max_steps}"]
    for key in _SHOWN:
        if isinstance(record.get(key), (int, float)):
            parts.append(f"{key} {record[key]:.4g}")
    return " ".join(parts)


class Trainer:
    """Runs `config.max_steps` optimisation steps; see the module docstring.

    `model`, `optimizer` and `scheduler` may each be one object or a dict of named objects
    (e.g. {"generator": ..., "discriminator": ...}); each model is wrapped in DDP separately.
    """

    def __init__(self, model: nn.Module | Mapping[str, nn.Module],
                 optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
                 scheduler: Any, config: TrainConfig, *,
                 loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]] | None = None,
                 step_fn: Callable[["Trainer", Any], dict] | None = None,
                 validate_fn: Callable[["Trainer"], dict] | None = None):
        if (loss_fn is None) == (step_fn is None):
            raise ValueError("give exactly one of loss_fn or step_fn")
        self.config = config
        self.policy = resolve_training_policy(config.device, config.precision)
        self.device = self.policy.device
        self.loss_fn, self.step_fn, self.validate_fn = loss_fn, step_fn, validate_fn
        self.modules = {n: m.to(self.device) for n, m in _as_dict(model, "model").items()}
        if config.channels_last:   # in place: the optimizers keep the same parameters
            for module in self.modules.values():
                module.to(memory_format=torch.channels_last)
        self.optimizers = _as_dict(optimizer, "optimizer")
        self.schedulers = _as_dict(scheduler, "scheduler")
        self.rank = torch.distributed.get_rank() if is_distributed() else 0
        self.world_size = torch.distributed.get_world_size() if is_distributed() else 1
        self.models = {n: self._wrap_ddp(m) for n, m in self.modules.items()}
        # Grad scaling is only needed for fp16: bf16 has fp32's exponent range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.policy.precision == "fp16")
        self.step = 0
        # Training time of the run so far, resumed legs included: logged as "seconds" and kept in the checkpoints.
        self.trained_seconds = 0.0
        self._loop_start: float | None = None
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_grad_norm: float | None = None
        self.skipped_steps = 0   # steps whose loss or gradients were not finite (weights left as they were)
        self._nonfinite_in_a_row = 0
        self.metrics = MetricsLog(config.out_dir / METRICS, writable=self.rank == 0)
        # The moving average lives beside the models (same device), never wrapped in DDP: each rank updates it from
        # the same synchronised weights.
        self.ema = ({n: _detached_copy(m) for n, m in self.modules.items()} if config.ema_decay else {})

    # ---- what custom steps use -------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The (possibly DDP-wrapped) model; the first one when there are several."""
        return next(iter(self.models.values()))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return next(iter(self.optimizers.values()))

    def module(self, name: str | None = None) -> nn.Module:
        """The unwrapped model, for saving or evaluation outside DDP."""
        return self.modules[name] if name else next(iter(self.modules.values()))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward-pass precision context of the compute policy (nothing for fp32)."""
        return self.policy.autocast()

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                      params: Iterable[torch.Tensor] | None = None) -> float | None:
        """zero_grad, scaled backward, unscale + clip, optimizer step. Returns the grad norm
        before clipping (None when clipping is off). `scaler.update()` is called once per
        training step by the trainer, after every optimizer has stepped."""
        optimizer = optimizer or self.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        chosen = list(params) if params is not None else _optimizer_params(optimizer)
        if self.scaler.is_enabled():
            # Unscale first so that the threshold applies to the true gradients; the scaler skips the step itself
            # when they are not finite (and lowers its scale).
            self.scaler.unscale_(optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(chosen, self.config.grad_clip)) \
                if self.config.grad_clip else None
        else:
            total = torch.nn.utils.get_total_norm([p.grad for p in chosen if p.grad is not None])
            norm = float(total)
            if not math.isfinite(norm):
                self._skip_nonfinite_step(optimizer)
                return norm if self.config.grad_clip else None
            if self.config.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(chosen, self.config.grad_clip, total)
        self._nonfinite_in_a_row = 0
        self.last_grad_norm = norm
        self.scaler.step(optimizer)
        return norm if self.config.grad_clip else None

    def _skip_nonfinite_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A loss or gradient that is not finite leaves the weights as they are, as fp16's grad scaler does: without
        this, one such step in bf16 or fp32 (a run of the count demo's recipe went NaN at step 6200 of 17000, a
        single bad step) turns every weight into NaN and the rest of the run into waste. Many in a row mean the run
        itself diverged: that stops it."""
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._nonfinite_in_a_row += 1
        if self._nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
            raise UsageError(f"training diverged: the loss or its gradients were not finite at "
                             f"{self._nonfinite_in_a_row} steps in a row (up to step {self.step + 1}); resume from "
                             f"{self.config.out_dir / LAST} with a lower --lr, or train in fp32")
        self._notice(f"{self.config.description}: step {self.step + 1}: the loss or its gradients were not finite; "
                     f"the step was skipped ({self.skipped_steps} so far)")

    # ---- the loop --------------------------------------------------------------------------

    def fit(self, batches: Iterable[Any]) -> dict[str, Any]:
        """Train until `config.max_steps`; returns the last logged metrics (plus `best`)."""
        cfg = self.config
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        previous = cfg.out_dir / LAST
        if previous.exists() and not cfg.resume:
            raise UsageError(f"{cfg.out_dir} holds a previous run ({previous.name}); continue it with --resume or "
                             "choose another -o")
        resumed = cfg.resume and previous.exists()
        if resumed:
            self.load_checkpoint(previous, batches)
            self._notice(f"{cfg.description}: resuming {cfg.out_dir} at step {self.step} of {cfg.max_steps}")
        else:
            if cfg.resume:
                self._notice(f"{cfg.description}: no checkpoint in {cfg.out_dir}; starting a new run")
            # Different seeds per rank so random augmentations differ; DDP syncs the weights.
            seed_everything(cfg.seed + self.rank)
        self.metrics.reset(keep_until=self.step if resumed else 0)
        if self.is_main and cfg.progress is not False:
            notice(f"training on {self.policy.describe()}")
        for model in self.models.values():
            model.train()
        return self._loop(BatchStream(batches), batches)

    def _notice(self, text: str) -> None:
        if self.is_main and self.config.progress is not False:
            print(text, file=sys.stderr, flush=True)

    def _loop(self, stream: BatchStream, batches: Iterable[Any]) -> dict[str, Any]:
        cfg, window = self.config, MetricWindow()
        start = self._loop_start = time.perf_counter() - self.trained_seconds
        # A resumed run that had already finished reports its final record again (validation metrics included),
        # so the card rebuilt from it keeps them.
        last: dict[str, Any] = self.metrics.at(self.step) or {"step": self.step}
        with ProgressBar(cfg.max_steps, cfg.description, cfg.progress if self.is_main else False) as bar:
            self._bar = bar
            bar.advance(self.step)
            while self.step < cfg.max_steps:
                ok, batch = stream.next()
                if not ok:
                    break
                window.add(self._train_step(to_device(batch, self.device)))
                bar.advance()
                record = self._after_step(window, start, batches)
                last = record or last
            if last.get("step") != self.step:  # the data ran out between log steps
                last = self._log(window.pop(), {}, start)
                self.save_checkpoint(cfg.out_dir / LAST, batches)
        if cfg.best_metric is not None:
            last = {**last, "best": self.best}
        return last

    def _train_step(self, batch: Any) -> dict[str, Any]:
        skipped_before = self.skipped_steps
        # BatchNorm's running statistics change in the forward pass, before a step can be found non-finite (0.3 ms
        # for the count demo's 102 buffers). fp16's grad scaler does its own skipping and none of this.
        buffers = None if self.scaler.is_enabled() else \
            {name: [b.detach().clone() for b in module.buffers()] for name, module in self.modules.items()}
        metrics = self.step_fn(self, batch) if self.step_fn else self._default_step(batch)
        if buffers is not None and self.skipped_steps != skipped_before:
            for name, module in self.modules.items():
                for current, saved in zip(module.buffers(), buffers[name]):
                    current.copy_(saved)
            # a skipped step's NaNs would make the logged means NaN
            metrics = {k: v for k, v in (metrics or {}).items() if _finite(v)}
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()
        if self.ema:
            decay = ema_decay_at(self.config.ema_decay, self.step)
            for name, ema in self.ema.items():
                update_ema(ema, self.modules[name], decay)
        self.step += 1
        return metrics or {}

    def _default_step(self, batch: Any) -> dict[str, Any]:
        with self.autocast():
            loss, metrics = self.loss_fn(self.model, batch)  # type: ignore[misc]
        norm = self.backward_step(loss, self.optimizer)
        out = {"loss": loss.detach(), **(metrics or {})}
        if norm is not None:
            out["grad_norm"] = norm
        return out

    def _after_step(self, window: MetricWindow, start: float, batches: Iterable[Any]) -> dict[str, Any] | None:
        cfg, final = self.config, self.step >= self.config.max_steps
        validation = {}
        if self.validate_fn is not None and (final or _due(self.step, cfg.validate_every)):
            with self.averaged_weights():
                validation = self._validate()
                self._maybe_save_best(validation, batches)
        record = None
        if final or validation or _due(self.step, cfg.log_every):
            record = self._log(window.pop(), validation, start)
        if final or _due(self.step, cfg.checkpoint_every):
            self.save_checkpoint(cfg.out_dir / LAST, batches)
        return record

    def _validate(self) -> dict[str, float]:
        modes = {name: m.training for name, m in self.models.items()}
        for model in self.models.values():
            model.eval()
        try:
            with torch.no_grad(), self.autocast():
                metrics = self.validate_fn(self) or {}  # type: ignore[misc]
        finally:
            for name, model in self.models.items():
                model.train(modes[name])
        return {k: v for k, v in ((k, scalar(v)) for k, v in metrics.items()) if v is not None}

    def _maybe_save_best(self, validation: Mapping[str, float], batches: Iterable[Any]) -> None:
        key = self.config.best_metric
        if key is None or key not in validation or math.isnan(validation[key]):
            return
        value = validation[key]
        better = self.best is None or (value < self.best if self.config.best_mode == "min"
                                       else value > self.best)
        if better:
            self.best, self.best_step = value, self.step
            # best.pt is for using the weights, not resuming: no collective gathering, so ranks
            # that disagree about "better" cannot deadlock.
            if self.is_main:
                atomic_torch_save(self.checkpoint_state(batches, gather=False), self.config.out_dir / BEST)

    def _log(self, train: Mapping[str, float], validation: Mapping[str, float], start: float) -> dict[str, Any]:
        record = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - start, 4), **train, **validation}
        if self.skipped_steps:
            record["skipped_steps"] = self.skipped_steps
        self.metrics.append(record)
        self._show(record)
        return record

    def _show(self, record: Mapping[str, Any]) -> None:
        """The one training display: the bar's text on a terminal, a line on stderr when logging to a file."""
        if not self.is_main or self.config.progress is False:
            return
        text = describe_record(record, self.config.max_steps)
        bar = getattr(self, "_bar", None)
        if bar is not None and bar.enabled:
            bar.set_description(f"{self.config.description} {text.split(' ', 2)[-1] if ' ' in text else ''}")
        else:
            print(f"{self.config.description}: {text}", file=sys.stderr, flush=True)

    def logged(self, step: int) -> dict[str, Any]:
        """The metrics logged at `step` (merged); {} if none."""
        return self.metrics.at(step)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Inside: the models hold the moving average (nothing changes without `ema_decay`); after: their own
        weights again, exactly."""
        if not self.ema:
            yield
            return
        own = {name: copy.deepcopy(module.state_dict()) for name, module in self.modules.items()}
        try:
            for name, module in self.modules.items():
                module.load_state_dict(self.ema[name].state_dict())
            yield
        finally:
            for name, module in self.modules.items():
                module.load_state_dict(own[name])

    def _seconds_so_far(self) -> float:
        if self._loop_start is None:
            return self.trained_seconds
        return round(time.perf_counter() - self._loop_start, 4)

    # ---- the weights to ship ---------------------------------------------------------------

    def adopt_averaged_weights(self) -> None:
        """Load the moving average into the models for good (the final weights, as the last validation scored them);
        nothing changes without `ema_decay`."""
        for name, module in self.modules.items():
            if name in self.ema:
                module.load_state_dict(self.ema[name].state_dict())

    def restore_kept(self, keep: str = "best") -> dict[str, Any]:
        """Load the weights to ship into the models and return what was logged at their step, with "step". best:
        best.pt's (the last step's when no validation ever improved); last: the final step's, their moving average
        where there is one. On a few dozen validation scenes the checks of a run's second half can differ by less
        than their noise, and the best of them is then an early step picked by chance."""
        if keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
        if keep == "best":
            best = self.restore_best()
            if best is not None:
                return {**best, "step": best["best_step"]}
        else:
            self.adopt_averaged_weights()
        return {**self.logged(self.step), "step": self.step}

    def restore_best(self) -> dict[str, Any] | None:
        """Load best.pt's weights into the models (the ones to ship) and return what was logged at that step
        (validation metrics included, with `best_step`); None when no validation ever improved."""
        path = self.config.out_dir / BEST
        if self.config.best_metric is None or not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, module in self.modules.items():
            module.load_state_dict(state["models"][name])
        step = int(state["step"])
        return {**self.metrics.at(step), self.config.best_metric: state["best"], "best_step": step}

    # ---- checkpoints ----------------------------------------------------------------------

    def checkpoint_state(self, batches: Any = None, gather: bool = True) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain containers only (weights_only)."""
        local = {"rng": rng_state(),
                 "data": batches.state_dict() if hasattr(batches, "state_dict") else None}
        ranks = [local]
        if gather and is_distributed():
            # Each rank has its own RNG and data position; all are kept to resume exactly.
            ranks = [None] * self.world_size
            torch.distributed.all_gather_object(ranks, local)
        return {"format": FORMAT, "step": self.step, "best": self.best, "best_step": self.best_step,
                "max_steps": self.config.max_steps, "seconds": self._seconds_so_far(),
                "skipped_steps": self.skipped_steps,
                "models": {n: m.state_dict() for n, m in self.modules.items()},
                "ema": {n: m.state_dict() for n, m in self.ema.items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict(), "ranks": ranks, "settings": self.config.run_settings()}

    def save_checkpoint(self, path: Path, batches: Any = None) -> None:
        state = self.checkpoint_state(batches)  # every rank takes part in the gather
        if self.is_main:
            atomic_torch_save(state, path)

    def load_checkpoint(self, path: Path, batches: Any = None) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise UsageError(f"{path}: not a training checkpoint of this version of mis")
        self._check_same_run(path, state)
        for name, module in self.modules.items():
            try:
                module.load_state_dict(state["models"][name])
            except RuntimeError:  # missing/unexpected keys or other shapes: another network configuration
                raise UsageError(f"{path}: its {name} has another architecture than this run's (other network "
                                 "options); resume with the run's options or choose another -o") from None
        for name, ema in self.ema.items():
            # a run that had no average starts it from the loaded weights
            ema.load_state_dict(state.get("ema", {}).get(name) or self.modules[name].state_dict())
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        extended = state.get("max_steps") is not None and int(state["max_steps"]) != self.config.max_steps
        for name, scheduler in self.schedulers.items():
            if extended:
                # The saved schedule holds the old length (PolynomialLR's total_iters, CosineAnnealingLR's T_max) and
                # its last rate (0 at a polynomial schedule's end, from which a chained schedule never rises):
                # replay this run's schedule, of the new length, up to the step reached instead.
                fast_forward(scheduler, int(state["step"]))
            else:
                scheduler.load_state_dict(state["schedulers"][name])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), state["best"]
        self.best_step = state.get("best_step")
        self.trained_seconds = float(state.get("seconds") or 0.0)
        self.skipped_steps = int(state.get("skipped_steps") or 0)
        ranks = state["ranks"]
        mine = ranks[self.rank] if len(ranks) == self.world_size else ranks[0]
        set_rng_state(mine["rng"])
        if mine["data"] is not None and hasattr(batches, "load_state_dict"):
            batches.load_state_dict(mine["data"])

    def _check_same_run(self, path: Path, state: Mapping[str, Any]) -> None:
        """--resume continues the run in the folder: another kind of run or other settings are refused (the card
        would record settings the weights were not trained with). A larger --steps extends a run."""
        if set(state["models"]) != set(self.modules):
            raise UsageError(f"{path}: a checkpoint of another kind of run (networks {', '.join(state['models'])}); "
                             "choose another -o")
        changed = setting_changes(state.get("settings") or {}, self.config.run_settings())
        if changed:
            raise UsageError(f"--resume with other settings than the run in {path.parent}: {'; '.join(changed)}; "
                             "resume with the same options or choose another -o")
        if self.config.max_steps < int(state["step"]):
            raise UsageError(f"--resume: the run in {path.parent} is at step {int(state['step'])}, past --steps "
                             f"{self.config.max_steps}; give at least {int(state['step'])} steps")
        before = state.get("max_steps")
        if before is not None and int(before) != self.config.max_steps:
            self._notice(f"{self.config.description}: extending the run from {before} to {self.config.max_steps} "
                         "steps (a step-dependent learning-rate schedule is stretched to the new length from here)")

    def _wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        # find_unused_parameters: PCT-Net has parameters that some configurations never use (e.g. deep-supervision
        # heads); without it DDP stops at the second step waiting for their gradients.
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)
