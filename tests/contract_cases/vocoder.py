"""`mis vocode`: a tiny APNet (16 channels) on seeded log-mels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(folder: Path) -> Path:
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.apnet import APNet, APNetConfig
    from mis.pipelines.vocoder.mel import MEL_22K

    torch.manual_seed(0)
    config = APNetConfig(asp_channels=16, psp_channels=16)
    path = folder / "vocoder.safetensors"
    save_checkpoint(path, APNet(config), build_card("apnet", config.to_dict(), task="vocoder",
                                                    preprocessing={"mel": MEL_22K.to_dict()}))
    return path


def load(path, runtime):
    from mis.pipelines.vocoder.pipeline import VocoderPipeline

    return VocoderPipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    rng = np.random.default_rng(3)
    return [rng.normal(-5.0, 1.5, (80, 40 + 7 * i)).clip(-11.0, 2.0).astype(np.float32) for i in range(n)]


def run(pipeline, mel) -> np.ndarray:
    return pipeline(mel).waveform


def run_batch(pipeline, mels) -> list[np.ndarray]:
    return pipeline.batch(mels)


def expect(mel, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == ((mel.shape[1] - 1) * 256,)


def bad_input(pipeline, path: Path) -> None:
    pipeline.check_inputs(np.zeros((80, 20), np.float32) + 3.0, str(path))   # linear, not log: no negatives


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["vocode", str(ROOT / "sample_data" / "audio" / "synthetic_vowels.npy"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[2000:2016].astype(float).tolist()


CASE = ContractCase("vocoder", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli, golden=golden,
                    batch_tolerance=1e-5)
