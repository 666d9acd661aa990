"""`mis seaice`: a tiny ViSual_IceD (widths 4-16, HH/HV + 4 MSI bands, MSI 4x finer) on seeded synthetic scenes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]
PREPROCESSING = {"sar_db_range": [-35.0, 5.0], "msi_range": [0.0, 1.0], "sar_bands": "HH,HV",
                 "msi_bands": "B02,B03,B04,B08"}


def tiny_config(**overrides):
    from mis.models.visual_iced import VisualIcedConfig

    return VisualIcedConfig.demo(**{"widths": (4, 8, 16, 16, 16), "sar_channels": 2, "msi_channels": 4, "ratio": 4,
                                    "finer": "msi", **overrides})


def make_checkpoint(folder: Path, **overrides) -> Path:
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.visual_iced import VisualIced

    torch.manual_seed(0)
    model = VisualIced(tiny_config(**overrides))
    path = folder / "seaice.safetensors"
    save_checkpoint(path, model, build_card("visual_iced", model.config.to_dict(), task="seaice",
                                            preprocessing=PREPROCESSING))
    return path


def load(path, runtime):
    from mis.pipelines.seaice.pipeline import SeaIcePipeline

    return SeaIcePipeline.from_checkpoint(path, runtime, patch=32, overlap=8)


def inputs(n: int) -> list:
    from mis.pipelines.seaice.synthetic import make_scene

    sizes = [40, 40, 48][:n] + [40] * max(0, n - 3)
    return [(make_scene(11 + k, coarse_size=size).sar, make_scene(11 + k, coarse_size=size).msi)
            for k, size in enumerate(sizes)]


def run(pipeline, scene) -> np.ndarray:
    return pipeline(*scene).probability


def run_batch(pipeline, scenes) -> list[np.ndarray]:
    return [out.probability for out in pipeline.batch(scenes)]


def expect(scene, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == scene[0].shape[1:]


def bad_input(pipeline, path: Path) -> None:
    sar, msi = inputs(1)[0]
    pipeline(sar, msi[:, :-4], source=str(path))


def cli(checkpoint: Path, out: Path) -> list[str]:
    folder = ROOT / "sample_data" / "seaice"
    return ["seaice", "--sar", str(folder / "sar.tif"), "--msi", str(folder / "msi.tif"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[20, 4:20].astype(float).tolist()


CASE = ContractCase("seaice", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli, golden=golden)
