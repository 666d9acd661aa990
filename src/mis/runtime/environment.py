"""What this machine offers: versions, devices, AMP support, threads (for `mis info`)."""
from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

import mis
from mis.runtime.device import amp_support


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict:
    devices = [{"name": "cpu", "description": platform.processor() or platform.machine(),
                **amp_support(torch.device("cpu"))}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append({"name": f"cuda:{index}",
                            "description": f"{props.name}, {props.total_memory / 2**30:.1f} GiB",
                            **amp_support(torch.device("cuda", index))})
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append({"name": "mps", "description": "Apple GPU", **amp_support(torch.device("mps"))})
    return {
        "mis": mis.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": _version("torchaudio"),
        "monai": _version("monai"),
        "numpy": _version("numpy"),
        "cuda_build": torch.version.cuda or "none",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "devices": devices,
    }
