"""`mis interpolate`: a tiny GaraMoSt (F = 4, grayscale) on seeded frame pairs, weights jittered so that the
flow heads and refiner (zero-initialised in training) give more than linear blending."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]
TIMES = (0.25, 0.5, 0.75)


def tiny_config(in_chans: int = 1):
    from mis.models.garamost import GaraMoStConfig

    return GaraMoStConfig(in_chans=in_chans, embed_dims=(4, 8, 16, 32, 32, 64), depths=(1, 1, 1, 1, 1, 1),
                          motion_dims=(0, 0, 0, 0, 32, 64), num_heads=(2, 4), mlp_ratios=(2.0, 2.0),
                          lambda_dim_k=(4, 4), hidden_dims=(16, 16), c=4, time_mask_prior=True)


def tiny_model(in_chans: int = 1, seed: int = 0):
    import torch

    from mis.models.garamost import GaraMoSt

    torch.manual_seed(seed)
    model = GaraMoSt(tiny_config(in_chans))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def make_checkpoint(folder: Path, in_chans: int = 1, bit_depth: int = 8) -> Path:
    from mis.checkpoints import build_card, save_checkpoint

    model = tiny_model(in_chans)
    path = folder / f"interpolate_{in_chans}ch_{bit_depth}bit.safetensors"
    save_checkpoint(path, model, build_card("garamost", model.config.to_dict(), task="interpolate",
                                            preprocessing={"bit_depth": bit_depth}))
    return path


def load(path, runtime):
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    rng = np.random.default_rng(7)
    shapes = [(40, 72), (40, 72), (64, 48)][:n] + [(40, 72)] * max(0, n - 3)   # two of one shape share a pass
    pairs = []
    for shape in shapes:
        first = rng.random(shape).astype(np.float32)
        pairs.append((first, np.roll(first, 2, axis=1)))
    return pairs


def run(pipeline, pair) -> np.ndarray:
    return pipeline(*pair, TIMES).frames


def run_batch(pipeline, pairs) -> list[np.ndarray]:
    return pipeline.batch(pairs, TIMES)


def expect(pair, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == (len(TIMES), *pair[0].shape)


def bad_input(pipeline, path: Path) -> None:
    first = np.zeros((40, 72), np.float32)
    pipeline(first, np.zeros((40, 64), np.float32), source=str(path))


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["interpolate", str(ROOT / "sample_data" / "dsa" / "sequence"), "--model", str(checkpoint), "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[1, 20, 30:46].astype(float).tolist()


CASE = ContractCase("interpolate", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli,
                    golden=golden, batch_tolerance=1e-5)
