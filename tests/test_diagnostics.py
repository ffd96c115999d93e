"""Per-example gradient diagnostics (surge_repro/diagnostics.py, reports/fig2a_fig8_gradients.py): vmap against a
loop of backward passes, the moments and B_simple against closed-form gradients of a linear softmax model, the
normality statistics on known distributions, and the report script's files. CPU, a few seconds."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from surge_repro import diagnostics
from surge_repro.config import build
from surge_repro.tasks import TensorTask
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent


def _linear_task(n=300, d=5, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    torch.manual_seed(seed)
    model = torch.nn.Linear(d, c)
    with torch.no_grad():  # away from the symmetric start, so the means are not all near 0
        model.weight.mul_(3.0)
    return TensorTask("linear", x, y), model, x, y


def test_vmap_matches_loop_of_backward_passes(make_cfg):
    cfg = make_cfg()
    task = build(cfg.task)
    torch.manual_seed(0)
    model = build(cfg.model)
    inputs, labels = task.probe(40, 1)
    got = torch.cat([g for _, g in diagnostics.per_example_grads(model, task, inputs, labels, chunk=16)])
    rows = []
    for i in range(len(labels)):
        model.zero_grad()
        task.loss(model, (inputs[i:i + 1], labels[i:i + 1])).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    want = torch.stack(rows)
    assert got.shape == want.shape == (40, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_moments_and_b_simple_match_closed_form_linear_softmax():
    task, model, x, y = _linear_task()
    n = len(y)
    # closed form: d CE / d W = (softmax(Wx+b) - onehot(y)) x^T, d CE / d b = softmax - onehot
    with torch.no_grad():
        err = (F.softmax(model(x), -1) - F.one_hot(y, 3)).double()
    g = torch.cat([(err[:, :, None] * x.double()[:, None, :]).reshape(n, -1), err], dim=1).numpy()
    mu, var = g.mean(0), g.var(0, ddof=1)
    stats = diagnostics.measure(model, task, x, y, chunk=7, n_top=2, n_random=2)  # 7: uneven chunks merge
    mom = diagnostics.Moments()
    for _, chunk in diagnostics.per_example_grads(model, task, x, y, chunk=7):
        mom.add(chunk)
    np.testing.assert_allclose(mom.mean.numpy(), mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mom.var.numpy(), var, rtol=1e-4, atol=1e-8)
    ratio = math.pi * var / (2 * mu ** 2)
    assert stats["ratio"]["min"] == pytest_approx(ratio.min())
    assert stats["ratio"]["q50"] == pytest_approx(np.quantile(ratio, 0.5, method="lower"))
    assert stats["noise_floor"] == math.pi * n / 2
    tr = var.sum()
    assert stats["tr_sigma"] == pytest_approx(tr)
    assert stats["b_simple"] == pytest_approx(tr / ((mu ** 2).sum() - tr / n))
    assert stats["b_simple_plugin"] == pytest_approx(tr / (mu ** 2).sum())
    # Fig. 8 coordinates: the largest |mu| first, and the values are the closed-form column
    top = stats["coordinates"][0]
    assert top["kind"] == "largest |mu|" and top["index"] == int(np.argmax(np.abs(mu)))
    np.testing.assert_allclose(top["_values"], g[:, top["index"]], rtol=1e-5, atol=1e-7)
    assert len(stats["coordinates"]) == 4
    assert set(stats["per_tensor"]) == {"weight", "bias"}


def test_b_simple_unbiased_on_known_population():
    # per-example gradients g = G + noise with known G and Sigma = s^2 I: E[B_simple] ~ tr(Sigma)/|G|^2 = P s^2/|G|^2
    gen = torch.Generator().manual_seed(0)
    p, n, s = 50, 4000, 2.0
    big_g = torch.full((p,), 0.5, dtype=torch.float64)
    g = big_g + s * torch.randn(n, p, generator=gen, dtype=torch.float64)
    mom = diagnostics.Moments()
    for i in range(0, n, 333):
        mom.add(g[i:i + 333])
    stats = diagnostics.gradient_stats(mom.mean, mom.var, mom.n)
    want = p * s ** 2 / float(big_g @ big_g)  # 16
    assert abs(stats["b_simple"] - want) / want < 0.1
    assert stats["b_simple_plugin"] < stats["b_simple"]  # the plug-in |mu_hat|^2 is biased up, B_simple down


def test_normality_statistics():
    rng = np.random.default_rng(0)
    gauss = diagnostics.normality(rng.normal(1.0, 2.0, 5000))
    assert abs(gauss["skewness"]) < 0.1 and abs(gauss["excess_kurtosis"]) < 0.2
    assert gauss["ks"] < 1.5 * gauss["ks_crit_5pct"]  # 1.5x: no 5% flake
    expo = diagnostics.normality(rng.exponential(1.0, 5000))  # skewness 2, excess kurtosis 6
    assert abs(expo["skewness"] - 2) < 0.3 and expo["ks"] > 3 * expo["ks_crit_5pct"]
    flat = diagnostics.normality(np.zeros(10))
    assert flat["ks"] is None


def test_script_writes_png_and_json(tmp_path):
    sys.path.insert(0, str(ROOT / "reports"))
    try:
        import fig2a_fig8_gradients as script
    finally:
        sys.path.pop(0)
    overrides = [f"paths.store={tmp_path / 'store'}", f"paths.data={tmp_path / 'data'}"] + TINY
    assert script.main(overrides + ["--steps", "0,20", "--examples", "128", "--chunk", "50",
                                    "--out", str(tmp_path)]) == 0
    png, js = tmp_path / "fig2a_fig8_gradients.png", tmp_path / "fig2a_fig8_gradients.json"
    assert png.stat().st_size > 10_000
    data = json.loads(js.read_text())
    assert [c["step"] for c in data["checkpoints"]] == [0, 20]
    assert data["point"]["model"] == "tiny_mlp" and data["point"]["batch"] == 16
    for c in data["checkpoints"]:
        assert c["ratio"]["min"] <= c["ratio"]["q01"] <= c["ratio"]["q05"] <= c["ratio"]["q50"]
        assert c["b_simple"] > 0 and len(c["coordinates"]) == 6
        assert "_values" not in c["coordinates"][0] and "skewness_at_batch" in c["coordinates"][0]["normality"]
        assert c["coordinates"][0]["normality_batch_mean"]["n"] > 100


def pytest_approx(x):
    import pytest

    return pytest.approx(float(x), rel=1e-4)
