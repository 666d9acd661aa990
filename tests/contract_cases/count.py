"""`mis count`: a tiny M-SFANet (width 0.125) on seeded synthetic crowd scenes; tiled so batches hold several
tiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(folder: Path) -> Path:
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.sfanet import SFANet, SFANetConfig
    from mis.pipelines.count.pipeline import preprocessing_for

    torch.manual_seed(0)
    model = SFANet(SFANetConfig.demo("m-sfanet", width=0.125))
    # upstream's N(0, 0.01) init shrinks activations ~1e-9 by the heads in eval mode: BatchNorm statistics are
    # taken from two seeded scenes so every contract check compares real values
    from mis.pipelines.count.pipeline import IMAGENET_MEAN, IMAGENET_STD
    from mis.pipelines.count.synthetic import make_crowd_scene

    scenes = np.stack([make_crowd_scene(90 + k, height=64, width=64).image for k in range(2)]) / 255.0
    x = torch.from_numpy(((scenes - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None          # a plain average of the batches seen
        model.train()(x)
    model.eval()
    path = folder / "count.safetensors"
    preprocessing = {**preprocessing_for(3), "density_scale": 1.0, "sigma": "fixed:5"}
    save_checkpoint(path, model, build_card("sfanet", model.config.to_dict(), task="count",
                                            preprocessing=preprocessing))
    return path


def load(path, runtime):
    from mis.pipelines.count.pipeline import CountPipeline

    return CountPipeline.from_checkpoint(path, runtime, tile=64, overlap=16)


def inputs(n: int) -> list:
    from mis.pipelines.count.synthetic import make_crowd_scene

    sizes = [(72, 96), (72, 96), (80, 64)][:n] + [(72, 96)] * max(0, n - 3)
    return [make_crowd_scene(31 + k, height=h, width=w).image for k, (h, w) in enumerate(sizes)]


def run(pipeline, image) -> np.ndarray:
    return pipeline(image).density


def run_batch(pipeline, images) -> list[np.ndarray]:
    return [out.density for out in pipeline.batch(images)]


def expect(image, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.shape == image.shape[:2]


def bad_input(pipeline, path: Path) -> None:
    pipeline(np.zeros((1, 40, 3), np.uint8), source=str(path))


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["count", str(ROOT / "sample_data" / "crowd" / "crowd_scene.png"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    """The count above 16 rows spread over the map (x 1e3). Pixels of a fixed grid were mostly empty sky or ground,
    where any network outputs ~0, so they checked nothing; the running count carries every row's density."""
    above = output.astype(np.float64).sum(axis=1).cumsum()
    return (above[np.linspace(0, len(above) - 1, 16).astype(int)] * 1e3).tolist()


CASE = ContractCase("count", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli, golden=golden)
