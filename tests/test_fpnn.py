"""FPNN network: shapes for every NOI and window length, ensemble averaging, starts as the linear skip."""
from __future__ import annotations

import pytest
import torch

from mis.models.fpnn import FPNN, FPNNConfig, FPNNEnsemble, count_parameters


@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
@pytest.mark.parametrize("frames", [9, 39, 99])
def test_every_noi_and_window_length_gives_one_value_per_cell(blocks, frames):
    config = FPNNConfig(channels=4, num_inception_blocks=blocks)
    model = FPNN(config).eval()
    out = model(torch.randn(3, 3, frames, 250), torch.randn(3, 6))
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_untrained_network_is_the_linear_summary_model():
    torch.manual_seed(0)
    model = FPNN(FPNNConfig(channels=4)).eval()
    summary = torch.randn(5, 6)
    expected = model.summary_skip(summary).squeeze(1)
    torch.testing.assert_close(model(torch.randn(5, 3, 19, 250), summary), expected)


def test_ensemble_is_the_mean_of_its_members():
    torch.manual_seed(0)
    ensemble = FPNNEnsemble(FPNNConfig(channels=4, ensemble_size=3)).eval()
    for member in ensemble.members:  # give the CNN paths a say
        torch.nn.init.normal_(member.fusion[-1].weight)
    x, s = torch.randn(2, 3, 19, 250), torch.randn(2, 6)
    members = torch.stack([m(x, s) for m in ensemble.members])
    torch.testing.assert_close(ensemble(x, s), members.mean(0))
    assert len({round(float(v), 5) for v in members[:, 0].detach()}) == 3
    assert count_parameters(ensemble) == 3 * count_parameters(ensemble.members[0])


def test_config_round_trip_rejects_unknown_fields():
    config = FPNNConfig(num_inception_blocks=3)
    assert FPNNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        FPNNConfig.from_dict({**config.to_dict(), "layers": 3})


def test_video_stream_accepts_longer_curves_by_averaging():
    model = FPNN(FPNNConfig(channels=4, n_points=1000)).eval()
    assert model(torch.randn(2, 3, 9, 1000), torch.randn(2, 6)).shape == (2,)
