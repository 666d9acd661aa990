"""What a training run is told, and what a resumed run must share with the run it continues."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

LAST = "last.pt"
BEST = "best.pt"
KEEP = ("best", "last")   # which weights a run writes: the best validation check's, or the last step's
METRICS = "metrics.jsonl"
FORMAT = "mis-train-1"


@dataclass(kw_only=True)
class TrainConfig:
    out_dir: Path
    max_steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 turns clipping off
    device: str = "auto"           # resolved with the precision by runtime.device.resolve_training_policy
    precision: str = "auto"        # auto: AMP on a GPU (bf16, else fp16 with grad scaling), fp32 on a CPU
    checkpoint_every: int = 500  # 0: only at the end
    log_every: int = 10
    validate_every: int = 0  # 0: validate only at the end (when a validate_fn is given)
    best_metric: str | None = None  # a key of validate_fn's dict; keeps best.pt
    best_mode: Literal["min", "max"] = "min"
    # > 0: keep an exponential moving average of the weights and buffers (BatchNorm statistics too); validation,
    # best.pt and restore_best() use the average. 0: off.
    ema_decay: float = 0.0
    # 2-D convolution networks in channels_last memory (the layout oneDNN's and cuDNN's fastest kernels use): forward,
    # backward and Adam of the demo M-SFANet on 8 x 128 px take 0.19 s instead of 0.24 s on the 2 cores here, 0.12 s
    # instead of 0.17 s under bf16 autocast. Weights are saved in the usual layout.
    channels_last: bool = False
    seed: int = 0
    resume: bool = False  # continue from out_dir/last.pt when it exists
    progress: bool | None = True
    description: str = "train"
    # What must not change when a run is resumed (the task's options: window length, network size, batch ...);
    # stored in last.pt with the learning-rate settings and compared on --resume. The step count may grow.
    settings: dict[str, Any] = field(default_factory=dict)

    def run_settings(self) -> dict[str, Any]:
        """What last.pt records and --resume compares, as plain JSON values."""
        return plain({"lr": self.lr, "weight_decay": self.weight_decay, "seed": self.seed,
                      "ema_decay": self.ema_decay, **self.settings})

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, not {self.precision!r}")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be min or max, not {self.best_mode!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), not {self.ema_decay!r}")


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The default optimizer: AdamW with the config's lr and weight decay."""
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass(kw_only=True)
class RunOptions:
    """What every `mis train <task>` / `mis pretrain` shares besides its own settings (the base of every task's
    option class): where and how the run executes."""

    seed: int = 0
    device: str = "auto"   # the one rule: runtime.device.resolve_training_policy
    precision: str = "auto"
    resume: bool = False   # continue exactly from the run folder's last checkpoint(s)
    half: bool = False     # store the final weights as fp16
    progress: bool = True
    command: str = ""      # the command line that started the run, recorded in the card


# Option fields that say where and how a run executes, or how long, or which of its weights are written, not what
# it trains: free to change on --resume (a larger step count extends the run).
RUNTIME_ONLY = ("out", "resume", "progress", "device", "precision", "half", "keep", "steps", "command")


def resume_settings(options: Any) -> dict[str, Any]:
    """A task's options (a RunOptions dataclass) as plain JSON values, for TrainConfig.settings."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in RUNTIME_ONLY}
    return plain({k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in values.items()})


def plain(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))   # paths -> str, tuples -> lists: compares after a reload


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"config": {"hidden": 32}} -> {"config.hidden": 32}, so a difference names the one option that changed."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def setting_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """'name old -> new' for every setting that differs, each named once."""
    before, after = flat(saved), flat(now)
    return [f"{key} {before[key]!r} -> {after[key]!r}" for key in sorted(before)
            if key in after and before[key] != after[key]]
