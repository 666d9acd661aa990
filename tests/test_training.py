"""The shared training loop: learning, exact resume, AMP, clipping, custom steps, validation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mis.errors import UsageError
from mis.runtime.training import (BEST, LAST, METRICS, StepSeededBatches, TrainConfig, Trainer,
                                  build_optimizer)

TRUE_W = np.array([1.5, -2.0, 0.5, 3.0], dtype=np.float32)


def regression_batch(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = x @ TRUE_W + 0.01 * rng.normal(size=16).astype(np.float32)
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(y)[:, None]}


def mse_loss(model, batch):
    pred = model(batch["x"])
    loss = nn.functional.mse_loss(pred.float(), batch["y"])
    return loss, {"pred_mean": pred.detach().float().mean()}


def small_net() -> nn.Module:
    # Dropout makes the RNG state part of what an exact resume must restore.
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


def make_trainer(tmp_path, max_steps, *, seed=0, model_seed=0, decay=0.7, **overrides):
    torch.manual_seed(model_seed)
    model = small_net()
    settings = {"lr": 1e-2, "log_every": 1, "checkpoint_every": 5, "progress": False, **overrides}
    config = TrainConfig(out_dir=tmp_path, max_steps=max_steps, seed=seed, **settings)
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=decay)
    return Trainer(model, optimizer, scheduler, config, loss_fn=mse_loss)


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / METRICS).read_text().splitlines()]


def test_loss_decreases_and_metrics_are_logged(tmp_path):
    trainer = make_trainer(tmp_path, 80, checkpoint_every=40, lr=3e-2, decay=1.0)
    final = trainer.fit(StepSeededBatches(regression_batch, seed=1))
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 81))
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    assert {"step", "loss", "lr", "seconds", "pred_mean", "grad_norm"} <= set(records[0])
    assert final["step"] == 80 and final["loss"] == records[-1]["loss"]
    assert (tmp_path / LAST).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_crash_matches_straight_run(tmp_path):
    straight = make_trainer(tmp_path / "straight", 10)
    straight.fit(StepSeededBatches(regression_batch, seed=7))

    def crashing_batch(rng, step):
        if step == 7:  # after the checkpoint at step 5, before step 8
            raise RuntimeError("simulated crash")
        return regression_batch(rng, step)

    first = make_trainer(tmp_path / "resumed", 10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.fit(StepSeededBatches(crashing_batch, seed=7))
    saved = torch.load(tmp_path / "resumed" / LAST, weights_only=True)
    assert saved["step"] == 5

    # A fresh process would build a differently initialised model: the checkpoint must win.
    second = make_trainer(tmp_path / "resumed", 10, model_seed=123, resume=True)
    second.fit(StepSeededBatches(regression_batch, seed=7))
    assert second.step == 10
    for a, b in zip(straight.module().state_dict().values(),
                    second.module().state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    # The metrics file reads as one uninterrupted run.
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == list(range(1, 11))
    np.testing.assert_allclose([r["loss"] for r in read_metrics(tmp_path / "resumed")],
                               [r["loss"] for r in read_metrics(tmp_path / "straight")],
                               rtol=1e-5)


def test_bf16_autocast_on_cpu(tmp_path):
    dtypes = []

    def loss_fn(model, batch):
        pred = model(batch["x"])
        dtypes.append(pred.dtype)
        return nn.functional.mse_loss(pred.float(), batch["y"]), {}

    model = nn.Linear(4, 1)
    config = TrainConfig(out_dir=tmp_path, max_steps=3, precision="bf16", progress=False)
    trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config,
                      loss_fn=loss_fn)
    final = trainer.fit(StepSeededBatches(regression_batch))
    assert dtypes == [torch.bfloat16] * 3
    assert math.isfinite(final["loss"]) and model.weight.dtype == torch.float32


def test_gradient_clipping_bounds_the_update(tmp_path):
    model = nn.Linear(4, 1)
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(out_dir=tmp_path, max_steps=1, grad_clip=0.5, progress=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def huge_loss(model, batch):
        return 1000.0 * nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}

    trainer = Trainer(model, optimizer, None, config, loss_fn=huge_loss)
    final = trainer.fit(StepSeededBatches(regression_batch))
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert final["grad_norm"] > 100  # the raw gradient was large ...
    assert update.norm().item() == pytest.approx(0.5, rel=1e-4)  # ... the step was clipped


def poisoned_loss(bad_steps):
    """mse_loss, but NaN in the batches of the given (0-based) steps."""
    calls = {"n": 0}

    def loss_fn(model, batch):
        loss, metrics = mse_loss(model, batch)
        step, calls["n"] = calls["n"], calls["n"] + 1
        return (loss * float("nan") if step in bad_steps else loss), metrics

    return loss_fn


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_a_step_with_a_nan_loss_is_skipped_not_learnt(tmp_path, grad_clip):
    """bf16 / fp32 have no grad scaler to skip a non-finite step: one such step used to make every weight NaN."""
    def run(folder, steps, bad):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1))
        config = TrainConfig(out_dir=folder, max_steps=steps, lr=1e-2, log_every=1, checkpoint_every=100,
                             progress=False, grad_clip=grad_clip)
        optimizer = build_optimizer(model.parameters(), config)
        trainer = Trainer(model, optimizer, None, config, loss_fn=poisoned_loss(bad))
        trainer.fit(StepSeededBatches(regression_batch, seed=1))
        return trainer, model

    trainer, model = run(tmp_path / "bad", 12, {4})
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.skipped_steps == 1
    records = read_metrics(tmp_path / "bad")
    assert all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float))
    assert "loss" not in records[4] and records[4]["skipped_steps"] == 1 and "skipped_steps" not in records[3]
    # the skipped step left every weight and buffer as it was (BatchNorm's statistics too, which its forward moved)
    _, five = run(tmp_path / "five", 5, {4})
    _, four = run(tmp_path / "four", 4, set())
    assert all(torch.equal(a, b) for a, b in zip(five.state_dict().values(), four.state_dict().values()))


def test_many_non_finite_steps_in_a_row_stop_the_run(tmp_path):
    torch.manual_seed(0)
    model = small_net()
    config = TrainConfig(out_dir=tmp_path, max_steps=50, lr=1e-2, progress=False)
    trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config,
                      loss_fn=poisoned_loss(set(range(3, 50))))
    with pytest.raises(UsageError, match="diverged.*20 steps in a row"):
        trainer.fit(StepSeededBatches(regression_batch, seed=1))


def test_custom_step_with_two_optimizers(tmp_path):
    torch.manual_seed(0)
    generator, critic = nn.Linear(4, 4), nn.Linear(4, 1)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-2)
    initial = {n: [p.detach().clone() for p in m.parameters()]
               for n, m in {"g": generator, "d": critic}.items()}

    def gan_step(trainer, batch):
        g, d = trainer.models["generator"], trainer.models["critic"]
        real = batch["x"]
        with trainer.autocast():
            fake = g(torch.randn_like(real))
            d_loss = d(fake.detach()).mean() - d(real).mean()
        trainer.backward_step(d_loss, trainer.optimizers["critic"])
        with trainer.autocast():
            g_loss = -d(g(torch.randn_like(real))).mean()
        trainer.backward_step(g_loss, trainer.optimizers["generator"], generator.parameters())
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach()}

    config = TrainConfig(out_dir=tmp_path, max_steps=6, log_every=2, checkpoint_every=3,
                         progress=False)
    trainer = Trainer({"generator": generator, "critic": critic},
                      {"generator": opt_g, "critic": opt_d}, None, config, step_fn=gan_step)
    final = trainer.fit(StepSeededBatches(regression_batch))
    assert {"loss", "d_loss"} <= set(final) and final["step"] == 6
    for name, module in {"g": generator, "d": critic}.items():
        assert any(not torch.equal(p, q) for p, q in zip(module.parameters(), initial[name]))
    saved = torch.load(tmp_path / LAST, weights_only=True)
    assert set(saved["optimizers"]) == {"generator", "critic"}
    assert saved["step"] == 6 and [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]


def test_validation_keeps_best_checkpoint(tmp_path):
    scores = iter([3.0, 1.0, 2.0])

    def validate(trainer):
        assert not trainer.model.training and not torch.is_grad_enabled()
        return {"val_loss": next(scores)}

    model = nn.Linear(4, 1)
    config = TrainConfig(out_dir=tmp_path, max_steps=6, validate_every=2, log_every=100,
                         best_metric="val_loss", progress=False)
    trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config,
                      loss_fn=mse_loss, validate_fn=validate)
    final = trainer.fit(StepSeededBatches(regression_batch))
    assert final["best"] == 1.0 and model.training
    assert [(r["step"], r["val_loss"]) for r in read_metrics(tmp_path)] == [(2, 3.0), (4, 1.0),
                                                                             (6, 2.0)]
    assert torch.load(tmp_path / BEST, weights_only=True)["step"] == 4


def test_reiterable_sources_wrap_and_iterators_stop(tmp_path):
    data = [regression_batch(np.random.default_rng(i), i) for i in range(3)]
    model = nn.Linear(4, 1)
    config = TrainConfig(out_dir=tmp_path / "epochs", max_steps=7, log_every=100, progress=False)
    trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config,
                      loss_fn=mse_loss)
    assert trainer.fit(data)["step"] == 7  # a list is re-iterated like DataLoader epochs

    config = TrainConfig(out_dir=tmp_path / "short", max_steps=7, log_every=100, progress=False)
    trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config,
                      loss_fn=mse_loss)
    final = trainer.fit(iter(data))  # a one-shot iterator ends the run early, saved and logged
    assert final["step"] == 3
    assert torch.load(tmp_path / "short" / LAST, weights_only=True)["step"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "short")] == [3]


def test_a_run_folder_is_only_continued_with_the_same_settings(tmp_path):
    make_trainer(tmp_path, 5, settings={"window": 100, "net": {"hidden": 16}}).fit(
        StepSeededBatches(regression_batch, seed=7))
    batches = StepSeededBatches(regression_batch, seed=7)
    with pytest.raises(UsageError, match="holds a previous run"):  # a new run would overwrite it
        make_trainer(tmp_path, 5).fit(batches)
    with pytest.raises(UsageError, match=r"settings than the run in .*: lr 0.01 -> 0.001; net.hidden 16 -> 32; "
                                         r"resume with"):  # each change named once
        make_trainer(tmp_path, 8, lr=1e-3, resume=True, settings={"window": 100, "net": {"hidden": 32}}).fit(batches)
    with pytest.raises(UsageError, match="at step 5, past --steps 3"):
        make_trainer(tmp_path, 3, resume=True, settings={"window": 100, "net": {"hidden": 16}}).fit(batches)
    # the same settings continue (a finished run stays finished and reports its final record again)
    resumed = make_trainer(tmp_path, 5, resume=True, settings={"window": 100, "net": {"hidden": 16}})
    final = resumed.fit(StepSeededBatches(regression_batch, seed=7))
    assert resumed.step == 5 and final["step"] == 5 and "loss" in final
    # a finished run is extended by a larger step count, its schedule stretched to the new length
    extended = make_trainer(tmp_path, 8, resume=True, settings={"window": 100, "net": {"hidden": 16}})
    final = extended.fit(StepSeededBatches(regression_batch, seed=7))
    assert extended.step == 8 and final["step"] == 8
    steps = [json.loads(line)["step"] for line in (tmp_path / METRICS).read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 8


def test_logging_to_a_file_shows_a_line_per_logged_step_and_checkpoints_are_readable(tmp_path, capsys,
                                                                                      monkeypatch):
    """stderr is not a terminal (a log file): one line per logged step with the loss, not silence until 'saved';
    the run's files have the same permissions as the rest (best.pt was 0600)."""
    monkeypatch.delenv("MIS_QUIET", raising=False)
    trainer = make_trainer(tmp_path, 6, progress=True, log_every=3, best_metric="loss",
                           checkpoint_every=3)
    trainer.validate_fn = lambda t: {"loss": 1.0}
    trainer.config.validate_every = 3
    trainer.fit(StepSeededBatches(regression_batch, seed=1))
    lines = [line for line in capsys.readouterr().err.splitlines() if " step " in line]
    assert len(lines) == 2 and all("loss " in line for line in lines) and lines[-1].split()[2] == "6/6"
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes[BEST] == modes[LAST] == modes[METRICS], modes


def test_training_auto_follows_one_rule(tmp_path):
    """`auto` is fp32 on a CPU for every task; the Trainer resolves it (no task picks a device itself)."""
    trainer = make_trainer(tmp_path, 1, device="auto", precision="auto")
    if torch.cuda.is_available():
        assert trainer.policy.device.type == "cuda" and trainer.policy.precision in ("bf16", "fp16")
    else:
        assert trainer.policy.precision == "fp32" and trainer.policy.device.type in ("cpu", "mps")


def test_extending_a_run_stretches_a_polynomial_schedule(tmp_path):
    """PolynomialLR keeps its length in its state: loaded as saved, an extension would train at lr 0."""
    def trainer(steps):
        t = make_trainer(tmp_path, steps, resume=True)
        t.schedulers = {"scheduler": torch.optim.lr_scheduler.PolynomialLR(t.optimizer, total_iters=steps)}
        return t

    trainer(4).fit(StepSeededBatches(regression_batch, seed=7))
    trainer(8).fit(StepSeededBatches(regression_batch, seed=7))
    rates = {r["step"]: r["lr"] for r in read_metrics(tmp_path)}
    assert rates[4] == 0.0 and rates[5] > 0 and rates[7] > rates[8] == 0.0, rates


def test_moving_average_is_what_validation_sees_and_best_keeps_and_it_resumes_exactly(tmp_path):
    """ema_decay: validation runs on the average (BatchNorm statistics averaged too), the live weights come back
    unchanged after it, best.pt holds the average, and a resumed run continues the average exactly."""
    from mis.runtime.training.trainer import ema_decay_at, update_ema

    def bn_net():
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))

    def run(out, steps, resume=False, model_seed=0):
        torch.manual_seed(model_seed)
        model = bn_net()
        seen = []

        def validate(trainer):
            seen.append({k: v.clone() for k, v in trainer.module().state_dict().items()})
            return {"val_loss": float(len(seen))}   # the first validation is the best

        config = TrainConfig(out_dir=out, max_steps=steps, lr=1e-2, validate_every=3, checkpoint_every=3,
                             best_metric="val_loss", ema_decay=0.9, progress=False, resume=resume, log_every=100)
        trainer = Trainer(model, build_optimizer(model.parameters(), config), None, config, loss_fn=mse_loss,
                          validate_fn=validate)
        trainer.fit(StepSeededBatches(regression_batch, seed=3))
        return trainer, seen

    trainer, seen = run(tmp_path / "straight", 6)
    averaged, live = trainer.ema["model"].state_dict(), trainer.module().state_dict()
    assert not torch.equal(averaged["0.weight"], live["0.weight"])
    assert not torch.equal(averaged["1.running_mean"], live["1.running_mean"])
    for key, value in seen[-1].items():                   # the final validation saw the average ...
        assert torch.equal(value, averaged[key]), key
    best = torch.load(tmp_path / "straight" / BEST, weights_only=True)
    assert best["step"] == 3 and torch.equal(best["models"]["model"]["0.weight"], seen[0]["0.weight"])
    assert not torch.equal(seen[0]["0.weight"], averaged["0.weight"])   # ... and best.pt the step-3 average

    first, _ = run(tmp_path / "resumed", 3)
    second, _ = run(tmp_path / "resumed", 6, resume=True, model_seed=99)
    for key, value in averaged.items():
        torch.testing.assert_close(second.ema["model"].state_dict()[key], value, rtol=0, atol=1e-6)
    # the logged training time goes on from the first leg's instead of starting again at 0
    leg = torch.load(tmp_path / "resumed" / LAST, weights_only=True)["seconds"]
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and rows[1]["seconds"] >= rows[0]["seconds"] > 0 and leg >= rows[1]["seconds"]

    trainer.adopt_averaged_weights()                     # the final average, for shipping the last step's weights
    for key, value in trainer.module().state_dict().items():
        assert torch.equal(value, averaged[key]), key

    ema, model = nn.Linear(2, 1), nn.Linear(2, 1)
    expected = 0.75 * ema.weight.detach() + 0.25 * model.weight.detach()
    update_ema(ema, model, 0.75)
    torch.testing.assert_close(ema.weight.detach(), expected)
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1) and ema_decay_at(0.999, 10 ** 6) == 0.999
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(out_dir=tmp_path, max_steps=1, ema_decay=1.0)


def test_channels_last_trains_the_same_parameters_and_saves_the_usual_layout(tmp_path):
    from mis.checkpoints import build_card, read_state, save_checkpoint

    def conv_batch(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        x = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(x.mean(axis=1, keepdims=True))}

    def conv_loss(model, batch):
        return nn.functional.mse_loss(model(batch["x"]).float(), batch["y"]), {}

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    config = TrainConfig(out_dir=tmp_path, max_steps=30, lr=1e-2, progress=False, checkpoint_every=0,
                         channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(model, optimizer, None, config, loss_fn=conv_loss)
    weight = trainer.module()[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert any(weight is p for p in optimizer.param_groups[0]["params"])      # the optimizer still steps it
    trainer.fit(StepSeededBatches(conv_batch, seed=0))
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert losses[-1] < 0.5 * losses[0]
    save_checkpoint(tmp_path / "m.safetensors", trainer.module(), build_card("x", {}, task="t"))
    saved = read_state(tmp_path / "m.safetensors")["0.weight"]
    assert saved.is_contiguous() and torch.equal(saved, weight.detach())
