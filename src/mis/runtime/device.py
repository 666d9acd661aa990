"""Device and precision, decided in one place. Nothing below the runtime picks a device."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from mis.errors import UsageError
from mis.runtime.notices import notice

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ComputePolicy:
    device: torch.device
    precision: str  # fp32 | fp16 | bf16

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    def autocast(self):
        """No-op for fp32; autocast to the chosen half type otherwise."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.device} {self.precision}"

    def to_dict(self) -> dict[str, str]:
        """What a run report and a sidecar record: the device and precision actually used."""
        return {"device": str(self.device), "precision": self.precision}


CPU_FP32 = ComputePolicy(torch.device("cpu"), "fp32")


def resolve_device(requested: str = "auto") -> torch.device:
    requested = (requested or "auto").lower()
    # under torchrun each rank takes the GPU of its LOCAL_RANK
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "auto":
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested}: CUDA is not available on this machine (try --device cpu)")
        device = torch.device(requested)
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    raise UsageError(f"--device {requested!r}: expected auto, cpu, cuda, cuda:N or mps")


def amp_support(device: torch.device) -> dict[str, bool]:
    if device.type == "cuda":
        return {"fp16": True, "bf16": torch.cuda.is_bf16_supported()}
    if device.type == "mps":
        return {"fp16": True, "bf16": False}
    # CPU autocast runs both (fp16 since torch 2.2); whether it is faster depends on the CPU's instructions
    return {"fp16": True, "bf16": True}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 is emulated on the CPU and never faster, so we skip the probe."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_bf16_is_faster(probe: Callable[[], object], repeats: int = 2, margin: float = 1.15) -> bool:
    """Time a representative forward in fp32 and bf16 autocast; bf16 only if clearly faster."""
    def timed(context) -> float:
        best = float("inf")
        with torch.inference_mode():
            for _ in range(repeats + 1):  # first call warms up
                start = time.perf_counter()
                with context():
                    probe()
                best = min(best, time.perf_counter() - start)
        return best

    fp32 = timed(contextlib.nullcontext)
    bf16 = timed(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    return bf16 * margin < fp32


def resolve_policy(device: str = "auto", precision: str = "auto",
                   probe: Callable[[], object] | None = None) -> ComputePolicy:
    """CUDA: bf16 where supported, else fp16. MPS: fp16. CPU: fp32 unless a probe shows bf16 faster."""
    dev = resolve_device(device)
    precision = (precision or "auto").lower()
    if precision not in ("auto", *_DTYPES):
        raise UsageError(f"--precision {precision!r}: expected auto, fp32, fp16 or bf16")
    support = amp_support(dev)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if support["bf16"] else "fp16"
        elif dev.type == "mps":
            precision = "fp16"
        else:
            faster = probe is not None and cpu_has_native_bf16() and cpu_bf16_is_faster(probe)
            precision = "bf16" if faster else "fp32"
    elif precision != "fp32" and not support[precision]:
        notice(f"--precision {precision} is not supported on {dev}; running in fp32")
        precision = "fp32"
    return ComputePolicy(dev, precision)


def resolve_training_policy(device: str = "auto", precision: str = "auto") -> ComputePolicy:
    """The one rule for every `mis train` / `mis pretrain`: `auto` is the GPU when there is one, with AMP there
    (bf16 where supported, else fp16 with grad scaling), and fp32 on the CPU (half-precision training on a CPU
    is slower and less stable than fp32 here). An explicit --precision is honoured where supported."""
    dev = resolve_device(device)
    precision = (precision or "auto").lower()
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if amp_support(dev)["bf16"] else "fp16"
        else:
            precision = "fp32"
    return resolve_policy(str(dev), precision)


def compile_network(function: Callable, policy: ComputePolicy) -> Callable:
    """`torch.compile` a pipeline's network call (any device: the first call pays the compile time).

    MIS_COMPILE_BACKEND picks another backend (tests use a counting one to see that --compile is applied)."""
    return torch.compile(function, backend=os.environ.get("MIS_COMPILE_BACKEND", "inductor"))


def configure_threads(threads: int | None = None) -> int:
    """Use every core for intra-op work unless the user capped it (OMP_NUM_THREADS)."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
