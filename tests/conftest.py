"""Shared fixtures: tiny seeded models and data, paths to ../shared/data (skip when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MIS_QUIET", "1")  # no progress bars in tests

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real test data not available: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_ct_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny PCT-Net segmentation checkpoint (7 classes, 16x32x32 windows)."""
    import torch

    from mis.checkpoints import build_card, save_checkpoint
    from mis.models.pctnet import PCTNet, fast_config
    from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS
    from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING

    torch.manual_seed(0)
    config = fast_config(len(PHANTOM_LABELS) + 1, (16, 32, 32), resolution_mode=0,
                         feature_chns=(4, 8, 16, 16, 32), num_heads=(2, 2, 2))
    model = PCTNet(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    card = build_card("pctnet", config.to_dict(), task="ct_segmentation",
                      preprocessing={**DEFAULT_PREPROCESSING, "spacing": [12.0, 12.0, 12.0]}, labels=PHANTOM_LABELS)
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def phantom_file(tmp_path_factory) -> Path:
    import nibabel as nib
    import numpy as np

    from mis.pipelines.ct_segmentation.phantom import make_phantom

    phantom = make_phantom(3, oblique=False)
    folder = tmp_path_factory.mktemp("phantom")
    path = folder / "case1.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine), path)
    nib.save(nib.Nifti1Image(phantom.labels, phantom.affine), folder / "case1_labels.nii.gz")
    return path


@pytest.fixture(scope="session")
def tiny_battery_checkpoint(tmp_path_factory) -> Path:
    """A tiny 2-member FPNN trained for a few steps on 12 synthetic cells, N = 20 cycles."""
    from mis.models.fpnn import FPNNConfig
    from mis.pipelines.battery.synthetic import synthetic_cells
    from mis.pipelines.battery.train import BatteryTrainOptions, train_battery

    out = tmp_path_factory.mktemp("battery_run")
    options = BatteryTrainOptions(out=out, n_cycles=20, members=2, steps=6, batch_size=4,
                                  config=FPNNConfig(channels=4, hidden=8), progress=False)
    return Path(train_battery(synthetic_cells(12, n_cycles=20), options)["checkpoint"])
