"""`mis mel`: log-mels in the vocoder card's convention (no network: precision and compile say so)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase
from contract_cases.vocoder import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def load(path, runtime):
    from mis.pipelines.vocoder.mel import MelPipeline

    return MelPipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    rng = np.random.default_rng(5)
    t = np.arange(11025) / 22050
    return [(0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            for i in range(n)]


def run(pipeline, samples) -> np.ndarray:
    return pipeline(samples).mel


def run_batch(pipeline, batch) -> list[np.ndarray]:
    from mis.pipelines.vocoder.run import mel_job
    from mis.runtime.executor import WorkItem

    job = mel_job(pipeline)   # the batch path `mis mel` takes (compute over a list)
    return [mel for mel, _ in job.compute([(samples, None, f"item{i}") for i, samples in enumerate(batch)])]


def expect(samples, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == (80, len(samples) // 256 + 1)


def bad_input(pipeline, path: Path) -> None:
    samples = inputs(1)[0]
    samples[100] = np.nan
    pipeline(samples, str(path))


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["mel", str(ROOT / "sample_data" / "audio" / "synthetic_vowels.wav"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[10:14, 5:9].ravel().astype(float).tolist()


CASE = ContractCase("mel", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli, golden=golden,
                    has_network=False, batch_tolerance=0.0)
