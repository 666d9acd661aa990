"""`mis segment`: a tiny PCT-Net on a small seeded phantom."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract_cases import ContractCase

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(folder: Path) -> Path:
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.pctnet import PCTNet, fast_config
    from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS
    from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING

    torch.manual_seed(0)
    config = fast_config(len(PHANTOM_LABELS) + 1, (16, 32, 32), resolution_mode=0,
                         feature_chns=(4, 8, 16, 16, 32), num_heads=(2, 2, 2))
    path = folder / "ct.safetensors"
    save_checkpoint(path, PCTNet(config), build_card(
        "pctnet", config.to_dict(), task="ct_segmentation", labels=PHANTOM_LABELS,
        preprocessing={**DEFAULT_PREPROCESSING, "spacing": [12.0, 12.0, 12.0]}))
    return path


def load(path, runtime):
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline

    return CTSegmentationPipeline.from_checkpoint(path, runtime)


def inputs(n: int) -> list:
    from mis.pipelines.ct_segmentation.phantom import make_phantom

    out = []
    for seed in range(n):
        phantom = make_phantom(seed, shape=(48, 40, 36), spacing=(6.0, 6.0, 6.0), oblique=False)
        out.append((phantom.image.astype(np.float32), phantom.volume_meta()))
    return out


def run(pipeline, item) -> np.ndarray:
    probabilities, _ = pipeline.grid_probabilities(*item)   # the network's output on its grid, before argmax
    return probabilities.numpy()


def run_batch(pipeline, items) -> list[np.ndarray]:
    """Volumes are not stacked, but the windows of a volume are: batch_size 8 against 1 in `run`."""
    batched = type(pipeline)(pipeline.model, pipeline.card, pipeline.policy, batch_size=8)
    return [run(batched, item) for item in items]


def expect(item, output: np.ndarray) -> None:
    assert output.dtype == np.float32 and output.ndim == 4 and output.shape[0] == 7
    np.testing.assert_allclose(output.sum(axis=0), 1.0, atol=1e-4)   # a distribution per voxel


def bad_input(pipeline, path: Path) -> None:
    image, meta = inputs(1)[0]
    image[0, 0, 0] = np.nan
    meta.source = str(path)
    pipeline(image, meta)


def cli(checkpoint: Path, out: Path) -> list[str]:
    return ["segment", str(ROOT / "sample_data" / "ct" / "phantom_abdomen.nii.gz"), "--model", str(checkpoint),
            "-o", str(out)]


def golden(output: np.ndarray) -> list[float]:
    return output[1:3, 10:12, 8:10, 6:8].ravel().astype(float).tolist()   # liver/spleen probabilities inside


CASE = ContractCase("ct_segmentation", make_checkpoint, load, inputs, run, run_batch, expect, bad_input, cli,
                    golden=golden, batch_tolerance=1e-5)
