"""B_simple measured in training (``surge_repro.run.noise_scale``): unbiased on a workload whose B_simple is known, the
same training with and without the measurement (one point and packed), and recorded at each target crossing."""

import math

import pytest
import torch

from surge_repro.config import build
from surge_repro.models.quadratic import QuadraticVector
from surge_repro.run.engines import Pack, train_step
from surge_repro.run.noise_scale import NoiseScale, halves
from surge_repro.tasks.quadratic import noisy_quadratic

DIM, RHO, NOISE = 16384, 0.01, 6.0  # on the ray at theta = 1: tr(Sigma) / |G|^2 = dim sigma^2 / (dim mu^2) = noise^2


def test_the_halves_estimator_recovers_a_known_b_simple():
    # lr = 0: the state stays where B_simple is known; the moving averages become plain means over 300 measurements
    task = noisy_quadratic(dim=DIM, rho=RHO, noise=NOISE, size=60000)
    model = QuadraticVector(dim=DIM)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for batch_size in (2, 64):
        noise = NoiseScale(batch_size, every=1, ema=1e9)
        for step in range(300):
            train_step(model, optimizer, None, task, task.take(torch.arange(step * batch_size,
                                                                              (step + 1) * batch_size)), noise)
        assert noise.value == pytest.approx(NOISE ** 2, rel=0.05), batch_size
        assert noise.record()["noise_measurements"] == 300


def test_odd_batches_split_unevenly_and_b_1_is_never_measured():
    first, second, sizes = halves((torch.arange(7), torch.arange(7) * 2))
    assert sizes == (3, 4) and first[0].tolist() == [0, 1, 2] and second[1].tolist() == [6, 8, 10, 12]
    assert not NoiseScale(1, every=1).due(1) and NoiseScale(2, every=4).due(8) and not NoiseScale(2, every=4).due(6)
    assert math.isnan(NoiseScale(8).value) and NoiseScale(8).record()["b_simple"] is None


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_measured_step_is_the_same_step(make_cfg, optimizer):
    # the halves' weighted mean is the minibatch gradient: parameters after a measured step equal an unmeasured one's
    cfg = make_cfg(f"optimizer={optimizer}", "optimizer.lr=0.01", "batch=15")
    task = build(cfg.task)
    batch = task.take(torch.arange(15))

    def one(measure: bool):
        torch.manual_seed(0)
        model = build(cfg.model)
        opt = build(cfg.optimizer)(model.parameters())
        train_step(model, opt, None, task, batch, NoiseScale(15, every=1) if measure else None)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.allclose(one(True), one(False), atol=1e-6)


def test_a_measured_packed_step_is_the_same_step_and_measures_each_point(make_cfg):
    # a vmapped weight's gradient can come back transposed; torch's fused CPU Adam then updated the wrong elements
    cfg = make_cfg("optimizer=adam", "batch=16")
    task = build(cfg.task)
    batch = task.take(torch.stack([torch.arange(16), torch.arange(16, 32)]))

    def one(measure: bool):
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            models.append(build(cfg.model))
        pack = Pack(cfg, task, models, [0.01, 0.02], torch.device("cpu"))
        noise = [NoiseScale(16, every=1), NoiseScale(16, every=1)] if measure else None
        pack.train_step(batch, noise)
        return {k: v.detach().clone() for k, v in pack.params.items()}, noise

    (measured, noise), (plain, _) = one(True), one(False)
    for k in plain:
        assert torch.allclose(measured[k], plain[k], atol=1e-6), k
    assert all(n.measurements == 1 for n in noise) and noise[0].trace != noise[1].trace


def test_runs_record_b_simple_at_each_crossing(make_cfg, tmp_path):
    from surge_repro.run.train import run, run_points
    from surge_repro.store import load_grid

    cfgs = [make_cfg("noise_scale.every=2", f"optimizer.lr={lr}") for lr in (0.01, 0.02)]
    summaries = run_points(cfgs) + [run(make_cfg("noise_scale.every=2", "optimizer.lr=0.03"))]
    for s in summaries:
        for rec in s["targets"]:
            if rec["reached"]:  # a few early measurements can leave |G|^2's average <= 0: no B_simple then
                assert rec["noise_measurements"] == rec["steps"] // 2 and rec["noise_trace"] > 0
                assert (rec["b_simple"] is None and rec["grad_sq"] <= 0) or rec["b_simple"] == pytest.approx(
                    rec["noise_trace"] / rec["grad_sq"])
    table = load_grid(tmp_path / "store", "manual")
    assert table["b_simple"].notna().any() and (table["b_simple"].dropna() > 0).all()
    off = run(make_cfg("noise_scale.every=0", "optimizer.lr=0.03", "batch=8"))
    assert all(rec.get("b_simple") is None for rec in off["targets"])
