"""PCT-Net model tests: shapes, forward convention, config card round trip, upstream key names, training signal."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mis.models.pctnet import PCTNet, PCTNetConfig, count_parameters, fast_config

SIZE = (16, 32, 32)  # small input valid for all three resolution modes (mode 0 needs D % 16 == 0)
SMALL = (8, 16, 16)  # smallest mode-1 input (token grids 4^3, 2^3, 1^3) for the slow paths: bf16 and training

# Deep-supervision output grids for SIZE: [L0 (full), L1, L2, L3] per resolution mode.
DS_GRIDS = {
    0: [(16, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)],
    1: [(16, 32, 32), (16, 16, 16), (8, 8, 8), (4, 4, 4)],
    2: [(16, 32, 32), (16, 16, 16), (16, 8, 8), (8, 4, 4)],
}

# Keys read in upstream MIS-FM net/pct_net.py + net/transformer.py (commit 1506d65) and checked there by building
# the upstream PCTNet (identical key list, 684 keys for depths (2, 2, 2)).
UPSTREAM_KEYS = [
    "embeddings.0.proj.weight",
    "embeddings.1.conv0.conv_conv.2.weight",
    "embeddings.1.conv0.conv_conv.1.weight",  # PReLU
    "embeddings.1.down1.conv.0.running_var",
    "embeddings.2.down2.conv.2.bias",
    "pyramid_ct.down3.conv.2.weight",
    "pyramid_ct.up4.up.2.weight",
    "pyramid_ct.up3.conv.0.num_batches_tracked",
    "pyramid_ct.convtrans_e2.conv.conv_conv.6.weight",
    "pyramid_ct.convtrans_e2.trans.blocks.0.attn.relative_position_bias_table",
    "pyramid_ct.convtrans_e2.trans.blocks.1.attn.relative_position_index",
    "pyramid_ct.convtrans_e3.trans.blocks.0.attn.qkv.weight",
    "pyramid_ct.convtrans_d3.trans.blocks.1.attn.proj.bias",
    "pyramid_ct.convtrans_e4.trans.blocks.0.norm1.weight",
    "pyramid_ct.convtrans_d2.trans.blocks.1.mlp.fc1.weight",
    "pyramid_ct.convtrans_d2.trans.blocks.1.mlp.fc2.bias",
    "pyramid_ct.convtrans_e4.norm_layer.weight",
    "pyramid_ct.out_conv2.conv.2.weight",
    "pyramid_ct.out_conv3.conv.0.weight",
    "pred_heads.0.out_conv1.conv.2.weight",
    "pred_heads.1.up1.up.2.weight",
    "pred_heads.1.conv1.conv_conv.3.running_mean",
    "pred_heads.2.out_conv0.conv.2.bias",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a shared 2-core runner two OpenMP threads competing
    # with other jobs made these tests ~10x slower. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net(mode: int = 1, **overrides) -> PCTNet:
    torch.manual_seed(0)
    return PCTNet(fast_config(3, input_size=SIZE, resolution_mode=mode, **overrides))


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_eval_output_shape_all_modes(mode: int) -> None:
    net = _net(mode).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, *SIZE))
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3, *SIZE)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_train_mode_returns_deep_supervision_list(mode: int) -> None:
    net = _net(mode).train()
    outs = net(torch.randn(2, 1, *SIZE))
    assert isinstance(outs, list) and len(outs) == 4
    assert [tuple(o.shape[2:]) for o in outs] == DS_GRIDS[mode]
    assert all(o.shape[:2] == (2, 3) for o in outs)


def test_single_tensor_without_multiscale_pred_even_in_training() -> None:
    net = _net(multiscale_pred=False).train()
    y = net(torch.randn(2, 1, *SIZE))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *SIZE)


@pytest.mark.parametrize("shape", [(1, 1, 16, 32, 48), (1, 1, 8, 64, 32), (1, 2, *SIZE), (1, *SIZE)])
def test_wrong_input_size_raises_readable_error(shape: tuple[int, ...]) -> None:
    net = _net().eval()
    with pytest.raises((AssertionError, ValueError), match="input_size"):
        net(torch.randn(*shape))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"resolution_mode": 3}, "resolution_mode"),
        ({"input_size": (12, 32, 32)}, "divisible"),
        ({"num_heads": (3, 4, 8)}, "num_heads"),
        ({"feature_chns": (8, 16, 32, 64)}, "feature_chns"),
        ({"dropout": (0.0, 0.0, 1.0, 0.2, 0.2)}, "dropout"),
    ],
)
def test_invalid_config_raises(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PCTNetConfig(**{"class_num": 3, "input_size": SIZE, **overrides})


def test_batch_equals_single_and_eval_is_deterministic() -> None:
    net = _net().eval()
    x = torch.randn(2, 1, *SIZE)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(2)])
        again = net(x)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert torch.equal(batched, again)


def test_autocast_bf16_cpu() -> None:
    # bf16 convolutions are emulated (~40x slower than float32) on CPUs without AVX-512 BF16, hence SMALL.
    torch.manual_seed(0)
    net = PCTNet(fast_config(3, input_size=SMALL)).eval()
    x = torch.randn(2, 1, *SMALL)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_config_dict_round_trip_through_json() -> None:
    cfg = fast_config(4, input_size=(32, 64, 64), resolution_mode=2, multiscale_pred=False)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["feature_chns"] == [12, 24, 32, 64, 128]
    assert PCTNetConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown PCTNetConfig keys"):
        PCTNetConfig.from_dict({**data, "update_mode": 0})


def test_paper_config_defaults_and_parameter_count() -> None:
    cfg = PCTNetConfig(class_num=5, input_size=(64, 128, 128))
    assert cfg.feature_chns == (24, 48, 128, 256, 512)
    assert (cfg.depths, cfg.num_heads, cfg.window_sizes) == ((2, 2, 2), (4, 8, 16), (6, 6, 6))
    assert (cfg.resolution_mode, cfg.multiscale_pred, cfg.token_size) == (1, True, (32, 32, 32))
    net = PCTNet(cfg)
    assert count_parameters(net) == 45_289_554  # same as upstream PCTNet with these settings
    sd = net.state_dict()
    assert sd["embeddings.0.proj.weight"].shape == (24, 1, 3, 3, 3)
    assert sd["embeddings.1.proj.weight"].shape == (24, 1, 1, 3, 3)
    assert sd["pyramid_ct.convtrans_e4.trans.blocks.1.attn.relative_position_bias_table"].shape == (11**3, 16)
    assert sd["pyramid_ct.convtrans_e2.trans.blocks.0.attn.relative_position_index"].shape == (216, 216)
    assert sd["pred_heads.1.out_conv0.conv.2.weight"].shape == (5, 24, 1, 1, 1)


def test_state_dict_keys_follow_upstream_names() -> None:
    keys = set(_net().state_dict())
    missing = [k for k in UPSTREAM_KEYS if k not in keys]
    assert not missing, f"upstream keys not found: {missing}"
    assert len(keys) == 684
    assert not any("shift_regions" in k for k in keys)  # our cached shift-window regions are not checkpoint entries
    # all three embedding/head variants exist whatever the mode and multiscale_pred
    assert set(_net(0, multiscale_pred=False).state_dict()) == keys


def test_gradients_reach_both_branches_and_only_the_selected_mode() -> None:
    net = _net(mode=1).train()
    outs = net(torch.randn(2, 1, *SIZE))
    sum(o.square().mean() for o in outs).backward()
    grads = dict(net.named_parameters())

    def nonzero(name: str) -> bool:
        g = grads[name].grad
        return g is not None and bool(g.abs().sum() > 0)

    assert nonzero("pyramid_ct.convtrans_e2.conv.conv_conv.2.weight")
    assert nonzero("pyramid_ct.convtrans_e2.trans.blocks.1.attn.qkv.weight")
    assert nonzero("pyramid_ct.convtrans_e4.trans.blocks.0.attn.relative_position_bias_table")
    assert nonzero("embeddings.1.proj.weight") and nonzero("pyramid_ct.out_conv3.conv.2.weight")
    assert grads["embeddings.0.proj.weight"].grad is None
    assert grads["pred_heads.2.out_conv0.conv.2.weight"].grad is None


def test_a_few_adam_steps_fit_a_tiny_problem() -> None:
    torch.manual_seed(0)
    net = PCTNet(fast_config(2, input_size=SMALL, dropout=(0.0,) * 5, drop_path=0.0)).train()
    x = torch.randn(2, 1, *SMALL)
    labels = (x[:, 0] > 0.3).long()  # (B, D, H, W), a voxelwise function of the input
    onehot = F.one_hot(labels, 2).permute(0, 4, 1, 2, 3).float()  # (B, 2, D, H, W)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        outs = net(x)
        # deep supervision as in PyMIC: soft targets by average pooling, weights 1/2^i
        loss = sum(F.cross_entropy(o, F.adaptive_avg_pool3d(onehot, o.shape[2:])) / 2**i for i, o in enumerate(outs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    # Better than any input-independent prediction, whose cross-entropy is at least the label entropy.
    p = labels.float().mean()
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    with torch.no_grad():
        full = F.cross_entropy(net(x)[0], labels)
    assert full < 0.8 * entropy, (full.item(), entropy.item(), losses)


def test_count_parameters_trainable_only() -> None:
    net = _net()
    total = count_parameters(net)
    assert total == sum(p.numel() for p in net.parameters())
    for p in net.embeddings.parameters():
        p.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == total - count_parameters(net.embeddings)
