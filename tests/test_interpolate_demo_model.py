"""The shipped GaraMoSt demo: its card says how it was trained (synthetic sequences only), it starts nothing
from the real data, and it beats linear blending on frames it never saw: fresh synthetic sequences from seeds
no training run draws, and (when the shared data is present) the real coronary cine with every other frame
dropped."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mis.checkpoints import read_card
from mis.pipelines.interpolate.evaluate import evaluate_sequence, score_gaps
from mis.pipelines.interpolate.pipeline import InterpolationPipeline
from mis.pipelines.interpolate.synthetic import make_sequence
from mis.registry import resolve_checkpoint
from mis.runtime.config import RuntimeConfig

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsa" / "xca_vukicevic_sample2" / "projection0"


def demo() -> InterpolationPipeline:
    return InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", None), RuntimeConfig(device="cpu"))


def test_card_records_a_synthetic_only_training_and_its_validation():
    card = read_card(resolve_checkpoint("interpolate", None))
    assert card["training"]["real_sequences"] == [] and card["training"]["synthetic_sequences"] > 0
    assert card["config"]["in_chans"] == 1 and card["preprocessing"] == {"bit_depth": 8}
    assert card["metrics"]["val_psnr"] > card["metrics"]["linear_val_psnr"]
    assert "mis train interpolate" in card["training"]["command"]


def test_beats_linear_blending_on_fresh_synthetic_sequences():
    pipeline = demo()
    model, linear = [], []
    for k, kind in enumerate(("xca", "xca", "dsa")):
        frames = make_sequence(30_000_000 + k, kind=kind, size=(128, 128), frames=5).frames
        scores = score_gaps(pipeline, frames, 1, f"synthetic {k}")
        model += scores["model_psnr"][0]
        linear += scores["linear_psnr"][0]
    assert np.mean(model) > np.mean(linear) + 0.3, (np.mean(model), np.mean(linear))


def test_beats_linear_blending_on_the_real_coronary_cine_it_never_saw():
    if not REAL.exists():
        import pytest

        pytest.skip("shared data not present")
    report = evaluate_sequence(demo(), REAL, drop=1)
    assert report["model_psnr"] >= report["linear_psnr"] + 0.5, report
    assert report["model_ssim"] > report["linear_ssim"], report
