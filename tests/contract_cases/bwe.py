"""`mis bwe`: a tiny AP-BWE (2 blocks of 16 channels, 16 -> 48 kHz) on seeded narrowband signals."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000


def make_checkpoint(folder: Path) -> Path:
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.apbwe import APBWE, APBWEConfig

    torch.manual_seed(0)
    config = APBWEConfig(channels=16, layers=2)
    path = folder / "bwe.safetensors"
    save_checkpoint(path, APBWE(config), build_card("apbwe", config.to_dict(), task="bwe",
                                                    preprocessing={"input_sample_rate": RATE, "sample_rate": 48000}))
    return path


def load(path, runtime):
    from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline

    return BandwidthExtensionPipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    rng = np.random.default_rng(5)
    lengths = [4000, 4000, 5210][:n] + [4000] * max(0, n - 3)   # two of equal length share a forward pass
    return [(0.1 * rng.standard_normal(length)).astype(np.float32) for length in lengths]


def run(pipeline, samples) -> np.ndarray:
    return pipeline(samples, RATE).waveform[0]


def run_batch(pipeline, items) -> list[np.ndarray]:
    return pipeline.batch(items, RATE)


def expect(samples, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == (len(samples) * 3,)


def bad_input(pipeline, path: Path) -> None:
    pipeline(np.full(4000, np.nan, np.float32), RATE, source=str(path))


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["bwe", str(ROOT / "sample_data" / "audio" / "synthetic_vowels_16k.wav"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[6000:6016].astype(float).tolist()


CASE = ContractCase("bwe", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli, golden=golden,
                    batch_tolerance=1e-5)
