"""One small training loop shared by every task.

It owns what every task needs and none should re-implement: AMP with grad scaling, gradient
clipping, LR schedulers, DDP, atomic checkpoints that resume exactly (weights, optimizers,
schedulers, scaler, RNG and data position), metrics as JSON lines and a progress bar.

A task plugs in either `loss_fn(model, batch) -> (loss, metrics)` (one model, one optimizer) or
a whole `step_fn(trainer, batch) -> metrics` (e.g. GANs with two optimizers), which reuses
`trainer.autocast()` and `trainer.backward_step(...)` so scaling and clipping stay in one place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mis.errors import UsageError
from mis.runtime.distributed import is_distributed
from mis.runtime.progress import ProgressBar
from mis.runtime.seeding import rng_state, seed_everything, set_rng_state

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
_FORMAT = "mis-train-1"

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(kw_only=True)
class TrainConfig:
    out_dir: Path
    max_steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 turns clipping off
    precision: Precision = "fp32"
    checkpoint_every: int = 500  # 0: only at the end
    log_every: int = 10
    validate_every: int = 0  # 0: validate only at the end (when a validate_fn is given)
    best_metric: str | None = None  # a key of validate_fn's dict; keeps best.pt
    best_mode: Literal["min", "max"] = "min"
    seed: int = 0
    device: str = "cpu"
    resume: bool = False  # continue from out_dir/last.pt when it exists
    progress: bool | None = True
    description: str = "train"
    # What must not change when a run is resumed (the task's options: window length, network size, batch ...);
    # stored in last.pt with the step count and learning-rate settings and compared on --resume.
    settings: dict[str, Any] = field(default_factory=dict)

    def run_settings(self) -> dict[str, Any]:
        """What last.pt records and --resume compares, as plain JSON values."""
        return _plain({"max_steps": self.max_steps, "lr": self.lr, "weight_decay": self.weight_decay,
                       "seed": self.seed, **self.settings})

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, not {self.precision!r}")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be min or max, not {self.best_mode!r}")


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The default optimizer: AdamW with the config's lr and weight decay."""
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass(kw_only=True)
class RunOptions:
    """What every `mis train <task>` shares besides its own settings (base of the task option classes)."""

    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    resume: bool = False   # continue exactly from the run folder's last checkpoint(s)
    half: bool = False     # store the final weights as fp16
    progress: bool = True


# RunOptions fields that say where and how a run executes, not what it trains: free to change on --resume.
_RUNTIME_ONLY = ("out", "resume", "progress", "device", "precision", "half")


def resume_settings(options: Any) -> dict[str, Any]:
    """A task's options (a RunOptions dataclass) as plain JSON values, for TrainConfig.settings."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in _RUNTIME_ONLY}
    return _plain({k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in values.items()})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))   # paths -> str, tuples -> lists: compares after a reload


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"config": {"hidden": 32}} -> {"config.hidden": 32}, so a difference names the one option that changed."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class StepSeededBatches:
    """Batches that are a pure function of (seed, step), so a resumed run sees the same data.

    `make_batch(rng, step)` gets a fresh `np.random.Generator` seeded from (seed, step).
    Under DDP give each rank its own seed (e.g. seed + rank).
    """

    def __init__(self, make_batch: Callable[[np.random.Generator, int], Any], seed: int = 0):
        self.make_batch = make_batch
        self.seed = int(seed)
        self.step = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        rng = np.random.default_rng([self.seed, self.step])
        batch = self.make_batch(rng, self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside dicts, lists and tuples to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file next to `path`, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _as_dict(value: Any, default_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {default_name: value}


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return None


class _MetricWindow:
    """Averages numeric step metrics over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            number = _scalar(value)
            if number is not None:
                self.sums[key] = self.sums.get(key, 0.0) + number
                self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return means


class _BatchStream:
    """Next batch; a re-iterable source (a DataLoader) starts a new epoch when it runs out."""

    def __init__(self, source: Iterable[Any]):
        self.source = source
        self.iterator = iter(source)
        self.reiterable = self.iterator is not source

    def next(self) -> tuple[bool, Any]:
        try:
            return True, next(self.iterator)
        except StopIteration:
            if not self.reiterable:
                return False, None
            self.iterator = iter(self.source)
            try:
                return True, next(self.iterator)
            except StopIteration:  # an empty source
                return False, None


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


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
        self.device = torch.device(config.device)
        self.loss_fn, self.step_fn, self.validate_fn = loss_fn, step_fn, validate_fn
        self.modules = {n: m.to(self.device) for n, m in _as_dict(model, "model").items()}
        self.optimizers = _as_dict(optimizer, "optimizer")
        self.schedulers = _as_dict(scheduler, "scheduler")
        self.rank = torch.distributed.get_rank() if is_distributed() else 0
        self.world_size = torch.distributed.get_world_size() if is_distributed() else 1
        self.models = {n: self._wrap_ddp(m) for n, m in self.modules.items()}
        # Grad scaling is only needed for fp16: bf16 has fp32's exponent range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step = 0
        self.best: float | None = None
        self.last_grad_norm: float | None = None

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
        """The forward-pass precision context for this config (nothing for fp32)."""
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.config.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                      params: Iterable[torch.Tensor] | None = None) -> float | None:
        """zero_grad, scaled backward, unscale + clip, optimizer step. Returns the grad norm
        before clipping (None when clipping is off). `scaler.update()` is called once per
        training step by the trainer, after every optimizer has stepped."""
        optimizer = optimizer or self.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        norm = None
        if self.config.grad_clip:
            # Unscale first so that the threshold applies to the true gradients.
            self.scaler.unscale_(optimizer)
            chosen = list(params) if params is not None else _optimizer_params(optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(chosen, self.config.grad_clip))
            self.last_grad_norm = norm
        self.scaler.step(optimizer)
        return norm

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
        self._reset_metrics_file(keep_until=self.step if resumed else 0)
        for model in self.models.values():
            model.train()
        return self._loop(_BatchStream(batches), batches)

    def _notice(self, text: str) -> None:
        if self.is_main and self.config.progress is not False:
            print(text, file=sys.stderr, flush=True)

    def _loop(self, stream: _BatchStream, batches: Iterable[Any]) -> dict[str, Any]:
        cfg, window, start = self.config, _MetricWindow(), time.perf_counter()
        # A resumed run that had already finished reports its final record again (validation metrics included),
        # so the card rebuilt from it keeps them.
        last: dict[str, Any] = self.logged(self.step) or {"step": self.step}
        with ProgressBar(cfg.max_steps, cfg.description,
                         cfg.progress if self.is_main else False) as bar:
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
        metrics = self.step_fn(self, batch) if self.step_fn else self._default_step(batch)
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()
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

    def _after_step(self, window: _MetricWindow, start: float,
                    batches: Iterable[Any]) -> dict[str, Any] | None:
        cfg, final = self.config, self.step >= self.config.max_steps
        validation = {}
        if self.validate_fn is not None and (final or _due(self.step, cfg.validate_every)):
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
        return {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}

    def _maybe_save_best(self, validation: Mapping[str, float], batches: Iterable[Any]) -> None:
        key = self.config.best_metric
        if key is None or key not in validation or math.isnan(validation[key]):
            return
        value = validation[key]
        better = self.best is None or (value < self.best if self.config.best_mode == "min"
                                       else value > self.best)
        if better:
            self.best = value
            # best.pt is for using the weights, not resuming: no collective gathering, so ranks
            # that disagree about "better" cannot deadlock.
            if self.is_main:
                atomic_torch_save(self.checkpoint_state(batches, gather=False),
                                  self.config.out_dir / BEST)

    def _log(self, train: Mapping[str, float], validation: Mapping[str, float],
             start: float) -> dict[str, Any]:
        record = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - start, 4), **train, **validation}
        if self.is_main:
            with open(self.config.out_dir / METRICS, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def logged(self, step: int) -> dict[str, Any]:
        """The metrics logged at `step` (merged, as the file may hold several records for it); {} if none."""
        path = self.config.out_dir / METRICS
        if step == 0 or not path.exists():
            return {}
        merged: dict[str, Any] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("step") == step:
                    merged.update(record)
        return merged

    def _reset_metrics_file(self, keep_until: int) -> None:
        """A fresh run starts a new file; a resumed one drops lines logged after the checkpoint
        (they will be logged again), so the file reads as one uninterrupted run."""
        path = self.config.out_dir / METRICS
        if not self.is_main or not path.exists():
            return
        kept = []
        if keep_until > 0:
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line + "\n")
        path.write_text("".join(kept), encoding="utf-8")

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
        return {"format": _FORMAT, "step": self.step, "best": self.best,
                "models": {n: m.state_dict() for n, m in self.modules.items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict(), "ranks": ranks, "settings": self.config.run_settings()}

    def save_checkpoint(self, path: Path, batches: Any = None) -> None:
        state = self.checkpoint_state(batches)  # every rank takes part in the gather
        if self.is_main:
            atomic_torch_save(state, path)

    def load_checkpoint(self, path: Path, batches: Any = None) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a training checkpoint of this version")
        self._check_same_run(path, state)
        for name, module in self.modules.items():
            try:
                module.load_state_dict(state["models"][name])
            except RuntimeError:  # missing/unexpected keys or other shapes: another network configuration
                raise UsageError(f"{path}: its {name} has another architecture than this run's (other network "
                                 "options); resume with the run's options or choose another -o") from None
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), state["best"]
        ranks = state["ranks"]
        mine = ranks[self.rank] if len(ranks) == self.world_size else ranks[0]
        set_rng_state(mine["rng"])
        if mine["data"] is not None and hasattr(batches, "load_state_dict"):
            batches.load_state_dict(mine["data"])

    def _check_same_run(self, path: Path, state: Mapping[str, Any]) -> None:
        """--resume continues the run in the folder: another kind of run or other settings are refused (the
        schedule would silently keep its old length and learning rate while the card recorded the new ones)."""
        if set(state["models"]) != set(self.modules):
            raise UsageError(f"{path}: a checkpoint of another kind of run (networks {', '.join(state['models'])}); "
                             "choose another -o")
        saved, now = _flat(state.get("settings") or {}), _flat(self.config.run_settings())
        changed = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in sorted(saved)
                   if key in now and saved[key] != now[key]]
        if changed:
            raise UsageError(f"--resume with other settings than the run in {path.parent}: {'; '.join(changed)}; "
                             "resume with the same options or choose another -o")

    def _wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        # find_unused_parameters: PCT-Net has parameters that some configurations never use (e.g. deep-supervision
        # heads); without it DDP stops at the second step waiting for their gradients.
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)
