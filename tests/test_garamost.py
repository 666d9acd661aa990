"""GaraMoSt network: upstream sizes and key names, upstream numerics, shapes, the one-encoder-pass multi-frame path,
linear blending at init, batch == single, gradients, device independence."""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace

import pytest
import torch

import mis.models.garamost as garamost
from mis.models.garamost import GaraMoSt, GaraMoStConfig, count_parameters

# Keys of upstream's `MultiScaleFlow(feature_extractor(**cfg), **cfg).state_dict()` (model/flow_estimation.py,
# model/feature_extractor.py, model/refine.py at commit da9f670), with their shapes in the paper config.
UPSTREAM_KEYS = {
    "feature_bone.block1.conv.0.weight": (32, 3, 3, 3),
    "feature_bone.block1.conv.1.weight": (32,),                      # PReLU
    "feature_bone.patch_embed2.0.weight": (64, 32, 3, 3),
    "feature_bone.block4.conv.2.bias": (256,),
    "feature_bone.norm5.weight": (256,),
    "feature_bone.patch_embed5.layers.6.weight": (32, 32, 3, 3),      # finest scale, dilation 4
    "feature_bone.patch_embed5.proj.weight": (256, 224, 1, 1),
    "feature_bone.patch_embed6.layers.0.weight": (64, 256, 3, 3),
    "feature_bone.block5.0.Lambda.to_q.weight": (64, 256, 1, 1),
    "feature_bone.block5.3.Lambda.cor_embed.bias": (64,),
    "feature_bone.block5.1.Lambda.norm_v.running_var": (64,),
    "feature_bone.block6.3.Lambda.motion_proj.weight": (128, 128, 1, 1),
    "feature_bone.block6.0.Lambda.channel_compress.weight": (128, 512, 1, 1),
    "feature_bone.block6.2.mlp.dwconv.dwconv.weight": (2048, 1, 3, 3),
    "feature_bone.block6.2.mlp.fc2.weight": (512, 2048),
    "block.0.conv.0.0.weight": (128, 134, 3, 3),                      # 2 * 1024 / 16 + 2 frames x 3 channels
    "block.1.conv.2.0.bias": (5,),
    "block.1.conv.0.1.weight": (128,),
    "unet.down0.conv1.0.weight": (128, 81, 3, 3),                     # 17 + 2 x 32
    "unet.down3.conv2.1.weight": (1024,),
    "unet.up0.0.weight": (2048, 512, 4, 4),                           # ConvTranspose2d: [in, out, k, k]
    "unet.conv.weight": (3, 64, 3, 3),
}
POS_CONV = {7: (16, 1, 1, 7, 7), 29: (16, 1, 1, 29, 29)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small tensors gain nothing from a second intra-op thread on a shared 2-core runner. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_rgb() -> GaraMoStConfig:
    """An upstream-shaped network at F = 8 (what upstream's init_model_config(F=8, depth=[1, 1, 1, 1, 2, 2]) builds):
    3 channels, no time prior, refine width 2F."""
    depths = (1, 1, 1, 1, 2, 2)
    return GaraMoStConfig(depths=depths, embed_dims=(8, 16, 32, 64, 64, 128), motion_dims=(0, 0, 0, 0, 32, 64),
                          hidden_dims=(32, 32), c=8)


def deterministic_fill(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every state-dict entry from one seeded generator, in key order (so two models with the same keys get the same
    weights): weights ~ N(0, 1/fan_in), biases small, PReLU slopes near 0.25, norms near identity, BN statistics
    near (0, 1). Also replaces the zero-initialised last layers, so flow, mask and residual are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, v in model.state_dict().items():
            if not v.is_floating_point():
                continue
            r = torch.randn(v.shape, generator=g)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                v.copy_(1 + 0.2 * r.abs())
            elif leaf == "running_mean":
                v.copy_(0.1 * r)
            elif leaf == "bias":
                v.copy_(0.02 * r)
            elif v.ndim == 1:  # LayerNorm / BatchNorm scales, PReLU slopes
                v.copy_(1 + 0.1 * r if "norm" in name else 0.25 + 0.05 * r)
            else:
                v.copy_(r / math.sqrt(v[0].numel()))
    return model


def frames(batch: int, channels: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image and a shifted copy (so the flow heads have something to find), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, channels, h // 8 + 2, w // 8 + 2, generator=g)
    big = torch.nn.functional.interpolate(base, scale_factor=8, mode="bicubic", align_corners=False).clamp(0, 1)
    return big[..., 4:4 + h, 4:4 + w].contiguous(), big[..., 6:6 + h, 3:3 + w].contiguous()


# ---- upstream sizes, names and numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize(("inter_frames", "r", "count"), [(1, 7, 62_285_911), (2, 29, 62_336_599), (3, 29, 62_336_599)])
def test_paper_config_has_upstream_size_and_key_names(inter_frames, r, count):
    cfg = GaraMoStConfig.paper(inter_frames)
    assert cfg.lambda_r == (7, r) and cfg.in_chans == 3 and not cfg.time_mask_prior
    with torch.device("meta"):  # names, shapes and counts without allocating 62 M weights
        model = GaraMoSt(cfg)
    assert count_parameters(model) == count
    assert round(count / 1e6, 1) == 62.3  # the published 62.3 M, for either granularity
    state = model.state_dict()
    assert len(state) == 369
    for key, shape in UPSTREAM_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert tuple(state["feature_bone.block5.0.Lambda.pos_conv.weight"].shape) == POS_CONV[7]
    assert tuple(state["feature_bone.block6.3.Lambda.pos_conv.weight"].shape) == POS_CONV[r]
    assert not any(k.startswith("module.") for k in state)


def test_default_config_is_the_released_single_frame_model_and_round_trips_json():
    assert GaraMoStConfig() == GaraMoStConfig.paper(1)
    for cfg in (GaraMoStConfig.paper(3), GaraMoStConfig.demo()):
        data = json.loads(json.dumps(cfg.to_dict()))
        assert GaraMoStConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="1, 2 or 3"):
        GaraMoStConfig.paper(4)
    with pytest.raises(ValueError, match="odd"):
        GaraMoStConfig(lambda_r=(7, 8))
    with pytest.raises(ValueError, match="num_heads"):
        GaraMoStConfig(num_heads=(3, 8))


# Produced by upstream's own code (commit da9f670, the GPU placement of its time tensor removed; einops installed,
# timm's three helpers stubbed) holding the same weights: `deterministic_fill` on upstream's
# MultiScaleFlow(feature_extractor(**cfg), **cfg) for init_model_config(F=8, depth=[1, 1, 1, 1, 2, 2],
# lambda_r=[7, 7]), eval mode, frames(2, 3, 64, 64), timestep 0.3. Ours differed by at most 2.4e-6 (flow, up
# to 5.4 px) and 5.4e-7 (prediction): float rounding, upstream runs its 1x1 convs on permuted (strided) tensors.
UPSTREAM_NUMBERS = {
    "prediction_mean": 0.4745067059993744,
    "prediction_abs_diff_blend": 0.10852545499801636,
    "flow_mean_abs": 1.1147644519805908,
    "mask_mean": 0.5511661171913147,
    "merged0_mean": 0.4959613084793091,
    "prediction_patch": [0.3817176, 0.287871, 0.2969781, 0.3190763, 0.3046599, 0.2147576, 0.2727602, 0.212754,
                         0.2248753, 0.1890627, 0.481354, 0.0319529, 0.6029264, 0.3845972, 0.5128184, 0.4231177,
                         0.6843244, 0.4093671, 0.2655247, 0.4023781, 0.2194386, 0.3792076, 0.4069865, 0.3775055,
                         0.524399, 0.5752881, 0.3693396],
    "flow_patch": [1.276693, 0.96649, 0.613262, 0.317514, 0.5146, 0.691737, 0.056263, 0.029213, -0.040119, 1.485504,
                   1.851265, 2.275617],
}


def _numbers(pred, flow, mask_sigmoid, merged0, img0, img1, t) -> dict[str, float | list[float]]:
    blend = (1 - t) * img0 + t * img1
    return {
        "prediction_mean": pred.mean().item(),
        "prediction_abs_diff_blend": (pred - blend).abs().mean().item(),
        "flow_mean_abs": flow.abs().mean().item(),
        "mask_mean": mask_sigmoid.mean().item(),
        "merged0_mean": merged0.mean().item(),
        # patches: means hide small local errors (e.g. resizing the flow in one step instead of octave by octave)
        "prediction_patch": [round(v, 7) for v in pred[0, :, 18:21, 30:33].flatten().tolist()],
        "flow_patch": [round(v, 6) for v in flow[0, :, 30, 30:33].flatten().tolist()],
    }


def test_matches_upstream_numbers():
    model = deterministic_fill(GaraMoSt(tiny_rgb())).eval()
    img0, img1 = frames(2, 3, 64, 64)
    with torch.no_grad():
        d = model(img0, img1, 0.3)
    got = _numbers(d.prediction, d.flow, torch.sigmoid(d.mask), d.merged[0], img0, img1, 0.3)
    assert got["flow_mean_abs"] > 0.05  # the heads really moved something
    for key, value in UPSTREAM_NUMBERS.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=2e-5), key


# ---- shapes and input checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [GaraMoStConfig.demo(), tiny_rgb()], ids=["demo-gray", "rgb"])
def test_decoded_shapes(cfg):
    torch.manual_seed(0)
    model = GaraMoSt(cfg).eval()
    c = cfg.in_chans
    img0, img1 = frames(2, c, 64, 96)
    with torch.no_grad():
        d = model(img0, img1, torch.tensor([0.25, 0.75]))
    assert d.prediction.shape == (2, c, 64, 96) and d.residual.shape == (2, c, 64, 96)
    assert d.flow.shape == (2, 4, 64, 96) and d.mask.shape == (2, 1, 64, 96)
    assert len(d.merged) == 2 and all(m.shape == (2, c, 64, 96) for m in d.merged)
    assert 0 <= d.prediction.min() and d.prediction.max() <= 1
    enc = model.encode(img0, img1)
    assert [tuple(x.shape[-2:]) for x in enc.struct_features] == [(64, 96), (32, 48), (16, 24), (8, 12), (8, 12),
                                                                 (4, 6)]
    assert [x.shape[1] for x in enc.struct_features] == list(cfg.embed_dims)
    assert [tuple(x.shape) for x in enc.motion_features] == [
        (4, cfg.depths[4] * cfg.motion_dims[4], 8, 12), (4, cfg.depths[5] * cfg.motion_dims[5], 4, 6)]


def test_paper_config_shapes_on_meta_device():
    with torch.device("meta"):
        model = GaraMoSt(GaraMoStConfig.paper(3))
        x = torch.empty(1, 3, 64, 96)
        out = model.multi_inference(x, x, [0.25, 0.5, 0.75])
    assert out.shape == (3, 1, 3, 64, 96) and out.is_meta


def test_bad_inputs_raise_value_error():
    model = GaraMoSt(GaraMoStConfig.demo())
    assert model.pad_multiple == 32
    ok = torch.zeros(1, 1, 64, 64)
    for bad in (torch.zeros(1, 1, 64, 80), torch.zeros(1, 1, 48, 64)):
        with pytest.raises(ValueError, match="multiple of 32"):
            model(bad, bad, 0.5)
    with pytest.raises(ValueError, match="1-channel"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), 0.5)
    with pytest.raises(ValueError, match="one shape"):
        model(ok, torch.zeros(1, 1, 64, 96), 0.5)
    with pytest.raises(ValueError, match=r"\[B\]"):
        model(ok, ok, torch.tensor([0.3, 0.5]))


# ---- one encoder pass, any timestep -------------------------------------------------------------------------------
def test_multi_inference_runs_the_encoder_once_and_equals_forward():
    model = deterministic_fill(GaraMoSt(GaraMoStConfig.demo())).eval()
    calls = []
    model.feature_bone.register_forward_hook(lambda *_: calls.append(1))
    img0, img1 = frames(2, 1, 64, 64)
    times = (0.2, 0.5, 0.9)
    with torch.no_grad():
        out = model.multi_inference(img0, img1, times)
        assert len(calls) == 1
        assert out.shape == (3, 2, 1, 64, 64)
        for k, t in enumerate(times):
            torch.testing.assert_close(out[k], model(img0, img1, torch.full((2,), t)).prediction, rtol=0, atol=1e-5)
    assert len(calls) == 4
    assert (out[0] - out[2]).abs().max() > 1e-3  # the timestep matters


# ---- linear blending at init --------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.3, 0.5])
def test_demo_config_starts_as_linear_blending(t):
    torch.manual_seed(0)
    model = GaraMoSt(GaraMoStConfig.demo())  # training mode, as when training starts
    img0, img1 = frames(2, 1, 64, 64, seed=1)
    with torch.no_grad():
        d = model(img0, img1, torch.tensor([t, 1 - t]))
    tt = torch.tensor([t, 1 - t]).view(2, 1, 1, 1)
    torch.testing.assert_close(d.prediction, (1 - tt) * img0 + tt * img1, rtol=0, atol=1e-5)
    assert d.flow.abs().max() == 0 and d.residual.abs().max() == 0
    torch.testing.assert_close(torch.sigmoid(d.mask), (1 - tt).expand(2, 1, 64, 64), rtol=0, atol=1e-6)


def test_without_time_prior_the_start_is_an_even_blend():
    model = GaraMoSt(replace(GaraMoStConfig.demo(), time_mask_prior=False))
    img0, img1 = frames(1, 1, 64, 64)
    with torch.no_grad():
        d = model(img0, img1, 0.3)
    torch.testing.assert_close(d.prediction, (img0 + img1) / 2, rtol=0, atol=1e-6)


# ---- batching, gradients, devices ---------------------------------------------------------------------------------
def test_batch_equals_single_with_per_sample_timesteps():
    model = deterministic_fill(GaraMoSt(GaraMoStConfig.demo())).eval()  # eval: BatchNorm uses running statistics
    img0, img1 = frames(2, 1, 64, 96, seed=2)
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        both = model(img0, img1, t)
        for i in range(2):
            one = model(img0[i:i + 1], img1[i:i + 1], t[i:i + 1])
            for name in ("prediction", "flow", "mask", "residual"):
                torch.testing.assert_close(getattr(one, name)[0], getattr(both, name)[i], rtol=0, atol=1e-5)
    assert (both.flow.abs().max()) > 0.05


def _backward(model: GaraMoSt) -> None:
    img0, img1 = frames(2, 1, 64, 64, seed=3)
    d = model(img0, img1, torch.tensor([0.3, 0.6]))
    loss = (d.prediction - img1).abs().mean() + sum((m - img0).abs().mean() for m in d.merged) / len(d.merged)
    loss.backward()


def test_every_parameter_gets_a_gradient():
    # At init the zero last layers block the gradient to the layers before them, but every parameter is in the
    # graph (no unused parameters, which DDP would reject); once those layers are non-zero, every gradient is.
    torch.manual_seed(0)
    model = GaraMoSt(GaraMoStConfig.demo())
    _backward(model)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model = deterministic_fill(GaraMoSt(GaraMoStConfig.demo()))
    _backward(model)
    assert [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


def test_no_device_is_chosen_in_the_module():
    source = inspect.getsource(garamost)
    assert "cuda" not in source.lower()
    assert ".to(" not in source and "torch.device(" not in source  # tensors are built on the input's device


def test_bfloat16_autocast_keeps_the_warp_exact():
    # the sampling grid is float32 even under autocast: at init the output is still the linear blend
    model = GaraMoSt(GaraMoStConfig.demo()).eval()
    img0, img1 = frames(2, 1, 64, 64)
    t = torch.tensor([0.3, 0.6])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d = model(img0, img1, t)
    tt = t.view(2, 1, 1, 1)
    assert d.prediction.dtype == torch.float32
    torch.testing.assert_close(d.prediction, (1 - tt) * img0 + tt * img1, rtol=0, atol=1e-5)


def test_demo_config_is_small():
    model = GaraMoSt(GaraMoStConfig.demo())
    assert 500_000 <= count_parameters(model) <= 1_500_000
    assert len(model.block) == 2 and len(model.feature_bone.block5) == 2 and len(model.feature_bone.block6) == 2
