"""M-SFANet / M-SegNet networks: upstream sizes, key names and numerics, the import key map, shapes and stride 2,
the demo presets, config round trip, grayscale input, determinism."""
from __future__ import annotations

import copy
import io
import json
import math

import pytest
import torch

from mis.importing import extract_state_dict, map_keys
from mis.models.sfanet import (
    CAN_MIN_WEIGHT,
    DENSITY_SCALE,
    OUTPUT_STRIDE,
    SFANET_KEY_MAP,
    ContextualModule,
    MSegNet,
    MSFANet,
    SFANet,
    SFANetConfig,
    build_sfanet,
    count_parameters,
    vgg16_bn_encoder_state,
)

# Keys of upstream's `Model().state_dict()` (models/M_SFANet.py, models/M_SegNet.py, models/contextual_layer.py at
# commit de41c94), with their shapes: encoder, CAN, ASPP (upstream spells it `assp`), both decoders, both heads.
UPSTREAM_KEYS = {
    "m-sfanet": {
        "vgg.conv1_1.conv.weight": (64, 3, 3, 3),
        "vgg.conv2_2.bn.running_var": (128,),
        "vgg.conv4_3.conv.weight": (512, 512, 3, 3),
        "vgg.conv5_3.bn.num_batches_tracked": (),
        "spm.can.scales.3.1.weight": (512, 512, 1, 1),
        "spm.can.bottleneck.weight": (512, 1024, 1, 1),
        "spm.can.weight_net.bias": (512,),
        "spm.assp.aspp1.atrous_conv.weight": (256, 512, 1, 1),
        "spm.assp.aspp4.atrous_conv.weight": (256, 512, 3, 3),
        "spm.assp.global_avg_pool.1.weight": (256, 512, 1, 1),
        "spm.assp.global_avg_pool.2.running_mean": (256,),
        "spm.assp.conv1.weight": (256, 1280, 1, 1),
        "spm.assp.bn1.bias": (256,),
        "amp.conv1.conv.weight": (256, 768, 1, 1),
        "amp.conv3.conv.weight": (128, 768, 1, 1),
        "dmp.conv5.conv.weight": (64, 256, 1, 1),
        "dmp.conv7.conv.weight": (32, 64, 3, 3),
        "conv_att.conv.weight": (1, 32, 1, 1),
        "conv_att.bn.running_var": (1,),
        "conv_out.conv.bias": (1,),
    },
    "m-segnet": {
        "vgg.conv1_1.conv.weight": (64, 3, 3, 3),
        "vgg.conv4_3.bn.weight": (512,),
        "amp.conv1.conv.weight": (256, 768, 1, 1),
        "amp.conv3.conv.weight": (128, 384, 1, 1),
        "dmp.conv5.conv.weight": (64, 192, 1, 1),
        "dmp.conv6.bn.running_mean": (64,),
        "amp.conv7.conv.weight": (32, 64, 3, 3),
        "conv_att.bn.weight": (1,),
        "conv_out.conv.weight": (1, 32, 1, 1),
    },
}
# What upstream has that we do not build: conv_out's BatchNorm (BaseConv always makes one; use_bn=False skips it).
UPSTREAM_ONLY = ("conv_out.bn.weight", "conv_out.bn.bias", "conv_out.bn.running_mean", "conv_out.bn.running_var",
                 "conv_out.bn.num_batches_tracked")
# Parameter counts: ours; upstream's is 2 more (the unused conv_out.bn weight and bias). Reference: 22.90 M, 9.75 M.
PAPER_PARAMS = {"m-sfanet": 22_904_388, "m-segnet": 9_747_524}
PAPER_ENTRIES = {"m-sfanet": 242, "m-segnet": 177}   # upstream state dicts: 247 and 182
DEMO_PARAMS = {"m-sfanet": 1_436_052, "m-segnet": 612_116}
# Upstream's own Model() (load_vgg stubbed), `deterministic_fill`ed, eval mode, on `sine_input()` (2 x 3 x 32 x 48):
# per-sample density sums, attention means and two density pixels.
UPSTREAM_OUTPUTS = {
    "m-sfanet": {"sum": (-6.8976006507873535, -6.027597904205322),
                 "att": (0.48696622252464294, 0.48976409435272217),
                 "pix": (-0.021095477044582367, -0.0170797947794199)},
    "m-segnet": {"sum": (45.84406280517578, 61.806358337402344),
                 "att": (0.567380964756012, 0.5685306191444397),
                 "pix": (0.11244768649339676, 0.1676938831806183)},
}
VARIANTS = ("m-sfanet", "m-segnet")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small tensors gain nothing from a second intra-op thread on a shared 2-core runner. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paper_models() -> dict[str, SFANet]:
    torch.manual_seed(0)
    return {v: SFANet(SFANetConfig.paper(v)) for v in VARIANTS}


def tiny(variant: str, **kw) -> SFANetConfig:
    """An eighth of every width (VGG 8-64 channels, head 4): fast."""
    return SFANetConfig(variant=variant, width=0.125, **kw)


def sine_input() -> torch.Tensor:
    return torch.linspace(-2, 2, 2 * 3 * 32 * 48).reshape(2, 3, 32, 48).sin()


def deterministic_fill(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every floating state-dict entry from one seeded generator, in key order: weights ~ N(0, 1/fan_in), biases and
    BN means ~ 0.1 N(0, 1), BN scales near 1, BN variances in [1, ...). Upstream's extra conv_out.bn entries are last
    in its order, so upstream and ours get the same values for every shared entry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, v in model.state_dict().items():
            if not v.is_floating_point():
                continue
            r = torch.randn(v.shape, generator=g)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                v.copy_(1 + 0.2 * r.abs())
            elif leaf in ("running_mean", "bias"):
                v.copy_(0.1 * r)
            elif v.ndim == 1:
                v.copy_(1 + 0.1 * r)
            else:
                v.copy_(r / v[0].numel() ** 0.5)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Upstream fidelity


@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_parameter_counts(paper_models, variant):
    model = paper_models[variant]
    n = count_parameters(model)
    assert n == PAPER_PARAMS[variant]
    assert f"{n / 1e6:.2f}" == {"m-sfanet": "22.90", "m-segnet": "9.75"}[variant]
    assert len(model.state_dict()) == PAPER_ENTRIES[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_upstream_key_names_and_shapes(paper_models, variant):
    state = paper_models[variant].state_dict()
    for key, shape in UPSTREAM_KEYS[variant].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("conv_out.bn.") for k in state)
    if variant == "m-segnet":
        assert not any(k.startswith(("spm.", "vgg.conv5_")) for k in state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_upstream_checkpoint_maps_and_loads_strict(paper_models, variant):
    """An upstream-shaped `.pth` ({"model": state dict}, optionally DataParallel-prefixed, with conv_out.bn) goes
    through extract_state_dict + map_keys(SFANET_KEY_MAP) and loads strict into a fresh network."""
    source = deterministic_fill(copy.deepcopy(paper_models[variant]), seed=3).state_dict()
    upstream = {f"module.{k}": v.clone() for k, v in source.items()}
    upstream.update({f"module.{k}": torch.ones(()) if k.endswith("tracked") else torch.ones(1)
                     for k in UPSTREAM_ONLY})
    checkpoint = {"epoch": 400, "model": upstream, "optimizer": {"state": {}}, "mae": 60.0, "mse": 95.0}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location="cpu", weights_only=True)
    state = map_keys(extract_state_dict(loaded, "checkpoint_best_MSFANet_A.pth"), SFANET_KEY_MAP)

    fresh = SFANet(SFANetConfig.paper(variant))
    assert set(state) == set(fresh.state_dict())
    fresh.load_state_dict(state, strict=True)
    for key in UPSTREAM_KEYS[variant]:
        assert torch.equal(fresh.state_dict()[key], source[key])


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_upstream_outputs(paper_models, variant):
    model = deterministic_fill(copy.deepcopy(paper_models[variant])).eval()
    with torch.no_grad():
        density, attention = model(sine_input())
    want = UPSTREAM_OUTPUTS[variant]
    torch.testing.assert_close(density.sum(dim=(1, 2, 3)), torch.tensor(want["sum"]), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(attention.mean(dim=(1, 2, 3)), torch.tensor(want["att"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack([density[0, 0, 5, 7], density[1, 0, 11, 20]]), torch.tensor(want["pix"]),
                               rtol=1e-4, atol=1e-5)


def test_density_convention():
    assert DENSITY_SCALE == 1.0      # upstream's density sums to the count as it is
    assert OUTPUT_STRIDE == 2


# ----------------------------------------------------------------------------------------------------------------
# Shapes, heads, presets


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("train", [False, True])
def test_shapes_stride_two_and_attention_range(variant, train):
    torch.manual_seed(0)
    model = SFANet(tiny(variant)).train(train)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        density, attention = model(x)
    assert density.shape == attention.shape == (2, 1, 64 // OUTPUT_STRIDE, 96 // OUTPUT_STRIDE)
    assert torch.isfinite(density).all()
    assert attention.min() >= 0 and attention.max() <= 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    model = SFANet(tiny(variant)).train()
    density, attention = model(torch.randn(2, 3, 32, 48))
    (density.square().sum() + attention.sum()).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead


@pytest.mark.parametrize("variant", VARIANTS)
def test_demo_preset(variant):
    config = SFANetConfig.demo(variant)
    assert config.width == 0.25 and config.in_channels == 3
    model = SFANet(config)
    n = count_parameters(model)
    assert n == DEMO_PARAMS[variant]
    assert 0.5e6 <= n <= 2e6
    fp16_bytes = sum(v.numel() * 2 for v in model.state_dict().values() if v.is_floating_point())
    assert fp16_bytes <= 20e6
    assert len(model.state_dict()) == PAPER_ENTRIES[variant]   # same keys as the paper network, narrower


@pytest.mark.parametrize("variant", VARIANTS)
def test_grayscale_input(variant):
    torch.manual_seed(0)
    model = SFANet(tiny(variant, in_channels=1)).eval()
    assert model.vgg.conv1_1.conv.weight.shape[1] == 1
    with torch.no_grad():
        density, attention = model(torch.rand(1, 1, 48, 64))
    assert density.shape == attention.shape == (1, 1, 24, 32)
    with pytest.raises(ValueError, match="expected"):
        model(torch.rand(1, 3, 48, 64))


@pytest.mark.parametrize("variant", VARIANTS)
def test_sizes_must_be_multiples_of_16(variant):
    model = SFANet(tiny(variant)).eval()
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 40, 64))


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_under_seed(variant):
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = SFANet(tiny(variant)).eval()
        with torch.no_grad():
            outputs.append((model.state_dict(), model(sine_input())))
    (sd_a, (d_a, a_a)), (sd_b, (d_b, a_b)) = outputs
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert torch.equal(d_a, d_b) and torch.equal(a_a, a_b)


# ----------------------------------------------------------------------------------------------------------------
# Family class and config


def test_family_class_dispatches():
    a = SFANet(tiny("m-sfanet"))
    b = SFANet(tiny("m-segnet"))
    assert type(a) is MSFANet and type(b) is MSegNet
    assert isinstance(a, SFANet) and isinstance(b, SFANet)
    assert type(build_sfanet(tiny("m-segnet"))) is MSegNet
    assert type(MSFANet(tiny("m-sfanet"))) is MSFANet
    with pytest.raises(ValueError, match="m-segnet"):
        MSegNet(tiny("m-sfanet"))
    # copies (EMA, checkpoints) rebuild the concrete class
    clone = copy.deepcopy(b)
    assert type(clone) is MSegNet
    assert all(torch.equal(v, clone.state_dict()[k]) for k, v in b.state_dict().items())


@pytest.mark.parametrize("config", [SFANetConfig.paper("m-sfanet"), SFANetConfig.demo("m-segnet"),
                                    SFANetConfig(variant="m-sfanet", in_channels=1, width=0.3, aspp_rates=(2, 4),
                                                 can_scales=(1, 3), dropout=0.1)])
def test_config_round_trip(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert isinstance(data["aspp_rates"], list)
    again = SFANetConfig.from_dict(data)
    assert again == config
    model = SFANet(again)
    assert set(model.state_dict()) == set(SFANet(config).state_dict())


def test_custom_aspp_and_can_shapes():
    config = SFANetConfig(variant="m-sfanet", width=0.125, aspp_rates=(2, 4), can_scales=(1, 3))
    model = SFANet(config).eval()
    state = model.state_dict()
    assert "spm.assp.aspp3.atrous_conv.weight" in state and "spm.assp.aspp4.atrous_conv.weight" not in state
    assert state["spm.assp.conv1.weight"].shape[1] == 4 * config.aspp_width
    assert "spm.can.scales.1.1.weight" in state and "spm.can.scales.2.1.weight" not in state
    with torch.no_grad():
        density, _ = model(torch.rand(1, 3, 32, 32))
    assert density.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("bad", [{"variant": "sfanet"}, {"width": 0}, {"in_channels": 0}, {"dropout": 1.0},
                                 {"can_scales": ()}, {"aspp_rates": (0, 6)}, {"aspp_rates": "6"},
                                 {"density_activation": "abs"}])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        SFANetConfig(**bad)


def test_config_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        SFANetConfig.from_dict({"variant": "m-segnet", "density_scale": 100})


def test_width_rounding_keeps_unpooling_consistent():
    config = SFANetConfig(variant="m-segnet", width=0.05)
    e, d = config.encoder_widths, config.decoder_widths
    assert min(e + d) >= 4 and d[:3] == (e[2], e[1], e[0])
    with torch.no_grad():
        density, _ = SFANet(config).eval()(torch.rand(1, 3, 32, 32))
    assert density.shape == (1, 1, 16, 16)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet encoder initialisation


@pytest.mark.parametrize("variant", VARIANTS)
def test_vgg16_bn_encoder_state(paper_models, variant):
    """torchvision vgg16_bn `features.<i>` keys (convs at 0, 3, 7, ...; each BN at i + 1) land on vgg.convX_Y."""
    ours = paper_models[variant].state_dict()
    names = [k[len("vgg."):-len(".conv.weight")] for k in ours if k.startswith("vgg.") and k.endswith("conv.weight")]
    indices = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
    torchvision = {}
    for name, i in zip(names, indices):
        for ours_leaf, tv in (("conv.weight", f"{i}.weight"), ("conv.bias", f"{i}.bias"),
                              ("bn.weight", f"{i + 1}.weight"), ("bn.bias", f"{i + 1}.bias"),
                              ("bn.running_mean", f"{i + 1}.running_mean"),
                              ("bn.running_var", f"{i + 1}.running_var")):
            index = float(tv.split(".")[0])   # each tensor holds its torchvision layer index
            torchvision[f"features.{tv}"] = torch.full(ours[f"vgg.{name}.{ours_leaf}"].shape, index)
    torchvision["classifier.0.weight"] = torch.zeros(4096, 8)
    config = SFANetConfig.paper(variant)
    state = vgg16_bn_encoder_state(torchvision, config)
    assert len(state) == 6 * (13 if variant == "m-sfanet" else 10)
    assert all(k in ours and ours[k].shape == v.shape for k, v in state.items())
    assert state["vgg.conv4_3.conv.weight"].unique().item() == 30.0
    assert state["vgg.conv2_1.bn.running_var"].unique().item() == 8.0

    gray = vgg16_bn_encoder_state(torchvision, SFANetConfig(variant=variant, in_channels=1))
    assert gray["vgg.conv1_1.conv.weight"].shape == (64, 1, 3, 3)
    with pytest.raises(ValueError, match="width 1"):
        vgg16_bn_encoder_state(torchvision, SFANetConfig.demo(variant))


def test_paper_config_is_the_default():
    assert SFANetConfig() == SFANetConfig.paper("m-sfanet")
    assert math.isclose(SFANetConfig.paper("m-segnet").width, 1.0)


@pytest.mark.parametrize("variant", ["m-sfanet", "m-segnet"])
def test_relu_density_head_is_the_linear_head_clamped(variant):
    """Same weights, same input: the relu option changes the density only where the linear head goes negative, the
    attention not at all, and adds no parameter (so upstream's keys still map onto the default)."""
    torch.manual_seed(0)
    linear = SFANet(SFANetConfig.demo(variant)).eval()
    clamped = SFANet(SFANetConfig.demo(variant, density_activation="relu")).eval()
    clamped.load_state_dict(linear.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        (d_linear, a_linear), (d_clamped, a_clamped) = linear(x), clamped(x)
    assert (d_linear < 0).any() and (d_linear > 0).any()  # the check below can fail both ways
    assert torch.equal(d_clamped, d_linear.clamp_min(0)) and torch.equal(a_clamped, a_linear)
    assert SFANetConfig().density_activation == "none"


def _upstream_can_parts(can: ContextualModule, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's CAN weighting as written there: sum_k sigmoid(z_k) s_k and sum_k sigmoid(z_k)."""
    num, den = torch.zeros_like(f), torch.zeros_like(f)
    for scale in can.scales:
        s = torch.nn.functional.interpolate(scale(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        w = torch.sigmoid(can.weight_net(f - s))
        num, den = num + w * s, den + w
    return num, den


def _upstream_can_fusion(can: ContextualModule, f: torch.Tensor) -> torch.Tensor:
    num, den = _upstream_can_parts(can, f)
    return torch.relu(can.bottleneck(torch.cat([num / den, f], 1)))


def test_can_is_upstreams_ratio_with_finite_gradients_where_upstreams_breaks():
    """Where the CAN weight logits are very negative, upstream's ratio breaks: 0 / 0 forward where every sigmoid
    underflows, and, under a loss of the count demo's size (1e3-1e5), 1 / (a tiny denominator) overflows backward
    into a sigmoid whose slope is 0: NaN gradients (a Kaiming bf16 run skipped 13 % of its steps for them, the dense
    crops). The module is upstream's ratio wherever the weights sum to CAN_MIN_WEIGHT or more (float64 upstream as
    the reference, still finite there), fades the context to 0 below it, and has finite gradients everywhere."""
    torch.manual_seed(0)
    can = ContextualModule(8, 8, (1, 2, 3, 6)).eval()
    f = torch.randn(2, 8, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(can(f), _upstream_can_fusion(can, f), rtol=1e-5, atol=1e-6)
        # logits spread by the contrast: per pixel, some scales far below the others
        can.weight_net.weight.copy_(20 * torch.eye(8)[:, :, None, None])
        for scale in can.scales:
            scale[1].weight.copy_(torch.eye(8)[:, :, None, None])
    for bias in (-20.0, -200.0):
        with torch.no_grad():
            can.weight_net.bias.fill_(bias)
        upstream_input = f.clone().requires_grad_()
        upstream = _upstream_can_fusion(can, upstream_input)
        (1000 * upstream.sum()).backward()
        assert not (torch.isfinite(upstream).all() and torch.isfinite(upstream_input.grad).all())
        x = f.clone().requires_grad_()
        can.zero_grad()
        out = can(x)
        (1000 * out.sum()).backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert all(torch.isfinite(p.grad).all() for p in can.parameters())
        reference = copy.deepcopy(can).double()
        with torch.no_grad():
            _, den = _upstream_can_parts(reference, f.double())
            exact = (den >= CAN_MIN_WEIGHT).all(dim=1, keepdim=True).expand_as(out)    # every channel above the floor
            expected = _upstream_can_fusion(reference, f.double())
            zero_context = torch.relu(can.bottleneck(torch.cat([torch.zeros_like(f), f], 1)))
        if bias == -20.0:       # both regimes present
            assert exact.any() and not exact.all()
            torch.testing.assert_close(out.detach().double()[exact], expected[exact], rtol=1e-4, atol=1e-5)
        else:                   # every weight below the floor: the context has faded to 0
            assert not exact.any()
            torch.testing.assert_close(out.detach(), zero_context, rtol=1e-5, atol=1e-6)
