"""`mis mel`: log-mels in a vocoder checkpoint's exact convention (or a named preset), as a pipeline.

The convention itself (`MelConfig`) and the maths live in `mis.transforms.audio`, shared with the
vocoder and the bandwidth extension; here are the named presets and the feature pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mis.checkpoints import read_card
from mis.errors import InputError, UsageError
from mis.pipelines.base import Pipeline
from mis.runtime.config import RuntimeConfig
from mis.runtime.notices import notice
from mis.transforms.audio import MelConfig, log_mel, mel_filterbank

MEL_16K = MelConfig(sample_rate=16000, n_fft=1024, hop_length=80, win_length=320, fmax=8000.0)  # APNet paper
MEL_22K = MelConfig()  # HiFi-GAN / APNet2 convention at 22.05 kHz
PRESETS = {"22k": MEL_22K, "16k": MEL_16K}


@dataclass
class MelOutput:
    mel: np.ndarray            # float32 [n_mels, frames], natural log
    sample_rate: int


class MelPipeline(Pipeline):
    """`pipeline(samples at config.sample_rate)` -> MelOutput. No network: features are computed in fp32,
    so --precision and --compile do not apply (the run says so once)."""

    task = "vocoder"

    def __init__(self, config: MelConfig, runtime: RuntimeConfig | None = None):
        super().__init__(None, {"task": self.task, "preprocessing": {"mel": config.to_dict()}})
        self.config = config
        self.fbank = mel_filterbank(config)
        runtime = runtime or RuntimeConfig()
        if runtime.precision not in ("auto", "fp32"):
            notice(f"mis mel runs no network: --precision {runtime.precision} does not apply (features in fp32)")
        if runtime.compile:
            notice("mis mel runs no network: --compile does not apply")

    @classmethod
    def from_checkpoint(cls, path: str | Path, runtime: RuntimeConfig | None = None, **options) -> "MelPipeline":
        """The mel convention of a vocoder checkpoint (only its card is read, not its weights)."""
        card = read_card(path)
        from mis.pipelines.base import check_task

        check_task(card, cls.task, path)
        from mis.errors import CheckpointError
        from mis.pipelines.vocoder.pipeline import mel_card_problems

        problems = mel_card_problems(card)
        if problems:
            raise CheckpointError(f"{path}: invalid checkpoint card: {'; '.join(problems)}")
        return cls(MelConfig.from_dict(card["preprocessing"]["mel"]), runtime)

    @classmethod
    def from_preset(cls, name: str, runtime: RuntimeConfig | None = None) -> "MelPipeline":
        if name not in PRESETS:
            raise UsageError(f"unknown --preset {name!r}; valid: {', '.join(PRESETS)}")
        return cls(PRESETS[name], runtime)

    def check_inputs(self, samples: np.ndarray, source: str = "audio") -> None:
        if samples.ndim != 1:
            raise InputError(source, f"expected mono samples, got shape {samples.shape}")
        if len(samples) < self.config.min_samples:
            raise InputError(source, f"audio too short ({len(samples)} samples at {self.config.sample_rate} Hz); "
                             f"n_fft {self.config.n_fft} needs {1000 * self.config.min_samples / self.config.sample_rate:.0f} ms")
        if not np.isfinite(samples).all():
            raise InputError(source, "audio contains NaN or infinite samples")

    def __call__(self, samples: np.ndarray, source: str = "audio") -> MelOutput:
        self.check_inputs(samples, source)
        mel = log_mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None], self.config, self.fbank)
        return MelOutput(mel[0].numpy(), self.config.sample_rate)

    def run_info(self) -> dict:
        return {"device": "cpu", "precision": "fp32", "compiled": False}


# The fields that decide what a mel's numbers mean: a mel made in another convention vocodes into wrong audio.
CONVENTION_FIELDS = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "mel_scale",
                     "norm", "log_floor", "center")


def mel_sidecar(mel_path: str | Path) -> Path:
    """`take1_mel.npy` -> `take1_mel.json`: the convention `mis mel` made it in travels beside it."""
    path = Path(mel_path)
    return path.with_name(path.stem + ".json")


def convention_differences(made: dict, expected: MelConfig) -> list[str]:
    """'hop_length 80 vs 256' for every field where a mel's recorded convention differs from a model's."""
    want = expected.to_dict()
    return [f"{name} {made.get(name)!r} vs {want[name]!r}" for name in CONVENTION_FIELDS
            if name in made and made.get(name) != want[name]]


def card_preprocessing(network_config: dict) -> dict:
    """The card's preprocessing for imported APNet weights: the mel convention their framing implies
    (upstream's 16 kHz convention for hop 80 / win 320, the 22.05 kHz HiFi-GAN one otherwise)."""
    framing = (network_config["hop_length"], network_config["win_length"])
    base = MEL_16K if framing == (80, 320) else MEL_22K
    mel = {**base.to_dict(), "n_fft": network_config["n_fft"], "hop_length": network_config["hop_length"],
           "win_length": network_config["win_length"], "n_mels": network_config["n_mels"]}
    return {"mel": mel}
