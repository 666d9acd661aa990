"""The base every pipeline derives from: one way to load a checkpoint, place the network and run it.

    pipeline = SomePipeline.from_checkpoint(path, RuntimeConfig(device="cuda", precision="bf16"))
    output = pipeline(inputs)          # a typed dataclass

What the base owns, so that every task behaves the same:
- the card's task is checked (one error class, `CheckpointError`, naming the file);
- the device and precision come from `runtime.device.resolve_policy` (the one rule), and every network call
  goes through `forward()`, which applies the policy's autocast and, with `--compile`, the compiled graph;
- `batch_size` (`--batch-size`, else the pipeline's default for the device);
- `run_info()`: the device, precision and compile setting actually used, for JSON reports and sidecars;
- a shipped demo model says so once (`mis.runtime.notices`).

A subclass sets `task`, implements `network_call` (the one place its network is invoked), `check_inputs`
and `__call__`, and may override `prepare` (e.g. fold weight norm) and `precision_probe`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from mis.checkpoints import load_checkpoint
from mis.errors import CheckpointError
from mis.runtime.config import RuntimeConfig
from mis.runtime.device import CPU_FP32, ComputePolicy, compile_network, resolve_policy
from mis.runtime.notices import notice


def check_task(card: dict, task: str, source: str | Path | None = None) -> None:
    """A checkpoint of another task is refused in one line that names the file and both tasks."""
    if card.get("task") != task:
        where = f"{source}: " if source else ""
        raise CheckpointError(f"{where}checkpoint is for task {card.get('task')!r}, not {task}")


def announce_demo_model(source: str | Path | None) -> None:
    """Commands that use a shipped demo model say so once, with what it scored and how to get a real one."""
    from mis.registry import is_demo_checkpoint

    shipped = None if source is None else is_demo_checkpoint(source)
    if shipped is None:
        return
    text = f"using the demo model {shipped.name}, trained on a CPU by the command in its card"
    if shipped.quality:
        text += f"; {shipped.quality}"
    if shipped.instead:
        text += f"; {shipped.instead}"
    notice(text)


class Pipeline:
    task: ClassVar[str]
    default_batch_size: ClassVar[int] = 1        # items (or windows) per forward pass on a CPU
    default_gpu_batch_size: ClassVar[int | None] = None   # ... on a GPU (None: the CPU value)

    def __init__(self, model: torch.nn.Module | None, card: dict, policy: ComputePolicy | None = None, *,
                 batch_size: int | None = None, compile: bool = False, source: str | Path | None = None):
        check_task(card, self.task, source)
        problems = self.card_problems(card)
        if problems:
            where = f"{source}: " if source else ""
            raise CheckpointError(f"{where}invalid checkpoint card: {'; '.join(problems)}")
        self.card = card
        self.source = None if source is None else str(source)
        self.policy = policy or CPU_FP32
        self.model = None if model is None else self.prepare(model, card).to(self.policy.device).eval()
        self.compiled = bool(compile and self.model is not None)
        self._network: Callable = compile_network(self.network_call, self.policy) if self.compiled \
            else self.network_call
        gpu_default = self.default_gpu_batch_size if self.policy.device.type == "cuda" else None
        self.batch_size = int(batch_size or gpu_default or self.default_batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path, runtime: RuntimeConfig | None = None, **options: Any):
        """Load the checkpoint (no unpickling), check its task, resolve the compute policy, build."""
        runtime = runtime or RuntimeConfig()
        model, card = load_checkpoint(path)
        check_task(card, cls.task, path)
        probe = cls.precision_probe(model, card)
        policy = resolve_policy(runtime.device, runtime.precision, probe=probe)
        announce_demo_model(path)
        return cls(model, card, policy, batch_size=runtime.batch_size or None, compile=runtime.compile,
                   source=path, **options)

    # ---- what subclasses provide -----------------------------------------------------------------
    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        """What is wrong with this task's values in a card (checked on load, before anything runs: a tampered
        spacing of 0 or a reversed intensity window would otherwise give a silent, wrong result)."""
        return []

    @staticmethod
    def prepare(model: torch.nn.Module, card: dict) -> torch.nn.Module:
        """Turn the loaded network into its inference form (e.g. fold weight norm). Default: as is."""
        return model

    @classmethod
    def precision_probe(cls, model: torch.nn.Module, card: dict) -> Callable[[], object] | None:
        """A representative forward for the CPU's fp32-vs-bf16 timing under `--precision auto`; None: fp32."""
        return None

    def network_call(self, *args: Any, **kwargs: Any) -> Any:
        """The one place the network runs (autocast and compile are applied around it by `forward`)."""
        return self.model(*args, **kwargs)

    # ---- what the base provides ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.policy.device

    def autocast(self):
        return self.policy.autocast()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the network under the compute policy (autocast, compiled graph)."""
        with self.autocast():
            return self._network(*args, **kwargs)

    def on_device(self, device: str) -> "Pipeline":
        """A copy on another device with its own network (one worker per GPU); same options and precision."""
        clone = copy.copy(self)
        clone.policy = resolve_policy(device, self.policy.precision)
        if self.model is not None:
            clone.model = copy.deepcopy(self.model).to(clone.policy.device).eval()
        clone._network = compile_network(clone.network_call, clone.policy) if self.compiled else clone.network_call
        return clone

    def run_info(self) -> dict[str, Any]:
        """Recorded in every JSON report and sidecar: what actually ran."""
        return {**self.policy.to_dict(), "compiled": self.compiled, "model_sha256": self.card.get("sha256")}
