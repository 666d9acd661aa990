"""ViSual_IceD network: upstream size and layer names, shapes in every mode and grid, input checks, the Gaussian
resize, batch == single, gradients, the 1-channel SAR import identity, config round trip."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mis.models.visual_iced import VisualIced, VisualIcedConfig, count_parameters, gaussian_resize

TINY_WIDTHS = (4, 6, 8, 8, 8)   # upstream's depth (5 blocks, size_multiple 8) at toy width
# (ratio, finer): upstream's MODIS 240 m + S1 80 m, and Sentinel-2 + S1 EW
GRIDS = [(3, "sar"), (4, "msi")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from a second intra-op thread on a shared 2-core runner. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> VisualIcedConfig:
    return VisualIcedConfig(**{"widths": TINY_WIDTHS, "sar_channels": 2, "msi_channels": 3, **overrides})


def inputs(cfg: VisualIcedConfig, batch: int = 2, coarse: tuple[int, int] = (16, 8), seed: int = 0):
    """Seeded (sar, msi) with the finer sensor `ratio` x the coarse size (non-square, to catch H/W swaps)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for sensor in ("sar", "msi"):
        k = cfg.ratio if sensor == cfg.finer else 1
        out[sensor] = torch.randn(batch, cfg.in_channels(sensor), coarse[0] * k, coarse[1] * k, generator=g)
    return out["sar"], out["msi"]


def seeded(cfg: VisualIcedConfig, seed: int = 0) -> VisualIced:
    torch.manual_seed(seed)
    return VisualIced(cfg)


def randomise_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine parameters, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.3 * torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


# ---- upstream size and names -------------------------------------------------------------------------------------
def _upstream_parameter_count() -> int:
    """Trainable weights of upstream's `visual_iced(2, "gaussian", lr)`, summed layer by layer from
    src/model/visualiced_model.py (BN: gamma + beta; Keras also keeps the moving statistics, not parameters)."""
    def conv(cin, cout, k):
        return k * k * cin * cout + cout

    def bn(c):
        return 2 * c

    w = (64, 128, 256, 512, 512)
    sar = conv(3, 64, 3) + bn(64)
    for i, c in enumerate(w):                              # block1..5_conv*_sar; no BN after block5_conv2_sar
        sar += (conv(w[i - 1], c, 3) + bn(c) if i else 0) + conv(c, c, 3) + (bn(c) if i < 4 else 0)
    modis = conv(3, 64, 3) + bn(64)
    for i, c in enumerate(w[:4]):                          # block1..4_conv* (VGG16 names); none after block4_conv2
        modis += (conv(w[i - 1], c, 3) + bn(c) if i else 0) + conv(c, c, 3) + (bn(c) if i < 3 else 0)
    decoder = (conv(1024 + 768, 256, 1) + bn(256) + conv(256, 128, 1) + bn(128)      # c6 (input_size 256)
               + conv(128 + 384, 128, 1) + bn(128) + conv(128, 64, 1) + bn(64)       # c7 (128)
               + conv(64 + 192, 64, 1) + bn(64) + conv(64, 64, 1) + bn(64))          # c8 (64, not halved)
    return sar + modis + decoder + conv(64, 2, 1)          # output_layer


def test_paper_config_has_upstream_size_and_names():
    cfg = VisualIcedConfig.paper()
    assert (cfg.sar_channels, cfg.msi_channels, cfg.classes, cfg.ratio, cfg.finer) == (3, 3, 2, 3, "sar")
    assert cfg.mode == "dual" and cfg.output_grid == "coarse" and cfg.size_multiple == 8
    with torch.device("meta"):
        model = VisualIced(cfg)
    assert count_parameters(model) == _upstream_parameter_count() == 14_686_018
    state = model.state_dict()
    expected = {
        "sar.block1_conv1.weight": (64, 3, 3, 3),           # block1_conv1_sar
        "sar.block5_conv2.weight": (512, 512, 3, 3),        # block5_conv2_sar
        "msi.block1_conv1.weight": (64, 3, 3, 3),           # block1_conv1 (VGG16 name)
        "msi.block4_conv2.bias": (512,),
        "msi.block4_bn1.running_var": (512,),
        "decoder.up1.conv1.weight": (256, 1792, 1, 1),      # cat[resized 1024, concat_3 768]
        "decoder.up3.conv2.weight": (64, 64, 1, 1),
        "output_layer.weight": (2, 64, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    # the deepest conv of each branch has no BN after it; the SAR branch has no block6, the MODIS one no block5
    for absent in ("sar.block5_bn2.weight", "msi.block4_bn2.weight", "msi.block5_conv1.weight", "decoder.up_fine"):
        assert not any(k.startswith(absent) for k in state), absent
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 9 + 7 + 6 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


# ---- shapes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_grid", ["coarse", "fine"])
@pytest.mark.parametrize(("ratio", "finer"), GRIDS)
@pytest.mark.parametrize("mode", ["dual", "stacked", "sar", "msi"])
def test_output_shape_in_every_mode_and_grid(mode, ratio, finer, output_grid):
    cfg = tiny(mode=mode, ratio=ratio, finer=finer, output_grid=output_grid, classes=2)
    sar, msi = inputs(cfg)
    k = ratio if output_grid == "fine" else 1
    out = seeded(cfg)(sar, msi)
    assert out.shape == (2, 2, 16 * k, 8 * k)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("ratio", "finer"), GRIDS)
def test_single_sensor_modes_ignore_the_other_input(ratio, finer):
    for mode, other in (("sar", "msi"), ("msi", "sar")):
        cfg = tiny(mode=mode, ratio=ratio, finer=finer, output_grid="fine")
        model = seeded(cfg).eval()
        assert getattr(model, other) is None and model.stacked is None
        sar, msi = inputs(cfg)
        full = model(sar, msi)
        alone = model(sar, None) if mode == "sar" else model(None, msi)
        junk = model(sar, torch.randn(1, 1, 5, 5)) if mode == "sar" else model(torch.randn(1, 1, 5, 5), msi)
        assert torch.equal(full, alone) and torch.equal(full, junk)


# ---- input checks ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ratio", "finer"), GRIDS)
def test_wrong_sizes_raise_clear_errors(ratio, finer):
    cfg = tiny(ratio=ratio, finer=finer)
    model = seeded(cfg)
    sar, msi = inputs(cfg)
    fine = sar if finer == "sar" else msi
    wrong = fine[..., : fine.shape[-2] - ratio, :]       # still a multiple of ratio, but not ratio x the coarse one
    with pytest.raises(ValueError, match=f"exactly {ratio}x"):
        model(wrong, msi) if finer == "sar" else model(sar, wrong)
    with pytest.raises(ValueError, match="multiple of ratio"):
        odd = fine[..., :-1, :]
        model(odd, msi) if finer == "sar" else model(sar, odd)
    sar12, msi12 = inputs(cfg, coarse=(12, 8))           # 12 is not a multiple of size_multiple 8
    with pytest.raises(ValueError, match="not a multiple of 8"):
        model(sar12, msi12)
    with pytest.raises(ValueError, match="needs msi"):
        model(sar, None)
    with pytest.raises(ValueError, match="needs sar"):
        model(sar[:, :1], msi)                           # wrong channel count


def test_size_multiple_follows_the_depth():
    assert VisualIced(tiny()).size_multiple == 8
    shallow = tiny(widths=(4, 6, 8))                     # two coarse levels: one 2x2 pool
    assert VisualIced(shallow).size_multiple == 2
    sar, msi = inputs(shallow, coarse=(6, 2))
    assert VisualIced(shallow)(sar, msi).shape == (2, 1, 6, 2)


# ---- behaviour ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_grid", ["coarse", "fine"])
def test_gradients_reach_every_parameter_in_dual_mode(output_grid):
    cfg = tiny(ratio=4, finer="msi", output_grid=output_grid)
    model = seeded(cfg)
    sar, msi = inputs(cfg)
    out = model(sar, msi)
    # against a random target: with square().mean() alone the last BN's shift gets an exactly zero gradient
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("mode", ["dual", "stacked"])
def test_batch_of_two_equals_each_alone_in_eval(mode):
    cfg = tiny(mode=mode, output_grid="fine")
    model = seeded(cfg)
    randomise_bn(model)
    model.eval()
    sar, msi = inputs(cfg)
    with torch.no_grad():
        both = model(sar, msi)
        singles = torch.cat([model(sar[i:i + 1], msi[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(both, singles, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(both[0], both[1])


def test_one_channel_sar_equals_replicated_hh_with_summed_kernel():
    """What the importer does for sar_channels=1: upstream feeds HH three times, so summing block1_conv1_sar's
    kernel over its input axis gives the same network."""
    three = seeded(tiny(sar_channels=3)).eval()
    randomise_bn(three)
    one = VisualIced(tiny(sar_channels=1)).eval()
    state = three.state_dict()
    state["sar.block1_conv1.weight"] = state["sar.block1_conv1.weight"].sum(1, keepdim=True)
    one.load_state_dict(state)
    sar, msi = inputs(one.config)
    with torch.no_grad():
        torch.testing.assert_close(one(sar, msi), three(sar.expand(-1, 3, -1, -1), msi), rtol=1e-4, atol=1e-5)


def test_gaussian_resize_matches_tensorflow_kernel():
    # 2x upsampling: output 2i samples the input at i + 0.25 (centres i - 0.5, i + 0.5, i + 1.5 within 1.5 px),
    # weights exp(-d^2 / (2 * 0.5^2)) normalised; at the border the out-of-image tap is dropped and renormalised.
    x = torch.arange(6.0).view(1, 1, 1, 6)
    y = gaussian_resize(x, (1, 12))
    d = torch.tensor([-0.75, 0.25, 1.25], dtype=torch.float64)
    w = torch.exp(-2 * d ** 2)
    interior = float((w / w.sum() * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
    assert math.isclose(float(y[0, 0, 0, 4]), interior, rel_tol=1e-6)
    edge = torch.exp(-2 * torch.tensor([0.25, 1.25], dtype=torch.float64) ** 2)    # output 0: centres 0.5, 1.5
    assert math.isclose(float(y[0, 0, 0, 0]), float(edge[1] / edge.sum()), rel_tol=1e-6)
    ones = gaussian_resize(torch.ones(1, 2, 5, 7), (15, 21))                     # ratio 3: constants stay
    torch.testing.assert_close(ones, torch.ones(1, 2, 15, 21))


# ---- config ------------------------------------------------------------------------------------------------------
def test_config_round_trips_json_and_validates():
    for cfg in (VisualIcedConfig(), VisualIcedConfig.paper(),
                VisualIcedConfig.demo(ratio=4, finer="msi", output_grid="fine", mode="stacked")):
        data = json.loads(json.dumps(cfg.to_dict()))
        assert data["widths"] == list(cfg.widths)
        back = VisualIcedConfig.from_dict(data)
        assert back == cfg and isinstance(back.widths, tuple)
    demo = VisualIcedConfig.demo()
    assert demo.widths == (16, 32, 64, 128, 128) and demo.sar_channels == 1 and demo.classes == 1
    assert count_parameters(VisualIced(demo)) == 920_993
    with pytest.raises(ValueError, match="unknown"):
        VisualIcedConfig.from_dict({"width": 3})
    for bad in ({"mode": "fused"}, {"finer": "optical"}, {"output_grid": "native"}, {"ratio": 0},
                {"widths": (64,)}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            VisualIcedConfig(**bad)
