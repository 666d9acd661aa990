"""The runtime options shared by every command. Torch-free so the CLI can build it cheaply."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class RuntimeConfig:
    device: str = "auto"          # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"       # auto | fp32 | fp16 | bf16
    batch_size: int = 0           # 0 = the pipeline's default
    workers: int = 2              # reader/decoder threads
    seed: int = 0
    compile: bool = False
    json: bool = False
    quiet: bool = False
    debug: bool = False

    @property
    def chatty(self) -> bool:
        """Progress bars and log lines are for people: off under --quiet and --json."""
        return not (self.quiet or self.json)

    def to_dict(self) -> dict:
        return asdict(self)
