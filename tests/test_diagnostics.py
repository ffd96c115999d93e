"""Per-example gradient diagnostics (surge_repro/run/diagnostics.py, reports/fig2a_fig8_gradients.py): vmap against a
loop of backward passes, the moments and B_simple against closed-form gradients of a linear softmax model, the
normality statistics on known distributions, Eq 14 / 16 / 1 from Hessian-vector products against the dense
closed-form Hessian, their group estimates against a known population, the report script's files, and Fig. 8's MoE
path: a tiny Qwen2-MoE on a RedPajama folder in its real on-disk format (offline), whose per-sequence gradients
come from a loop (vmap refuses the expert routing). CPU, a few seconds each (the MoE's: about 20 s)."""

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from surge_repro.analysis import gradient_stats
from surge_repro.config import build, compose
from surge_repro.run import diagnostics
from surge_repro.tasks import TensorTask, text
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
EXCERPT = Path(__file__).resolve().parent / "data" / "tempest_excerpt.txt"


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
    # the loop (for models vmap refuses) gives the same rows; this model takes the fast path
    looped = torch.cat([g for _, g in diagnostics.per_example_grads(model, task, inputs, labels, 16, batched=False)])
    torch.testing.assert_close(looped, want, rtol=1e-5, atol=1e-6)
    assert diagnostics.vmap_refusal(model, task, inputs, labels) is None


def test_moments_and_b_simple_match_closed_form_linear_softmax():
    task, model, x, y = _linear_task()
    n = len(y)
    # closed form: d CE / d W = (softmax(Wx+b) - onehot(y)) x^T, d CE / d b = softmax - onehot
    with torch.no_grad():
        err = (F.softmax(model(x), -1) - F.one_hot(y, 3)).double()
    g = torch.cat([(err[:, :, None] * x.double()[:, None, :]).reshape(n, -1), err], dim=1).numpy()
    mu, var = g.mean(0), g.var(0, ddof=1)
    stats = diagnostics.measure(model, task, x, y, chunk=7, n_top=2, n_random=2)  # 7: uneven chunks merge
    mom = gradient_stats.Moments()
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
    mom = gradient_stats.Moments()
    for i in range(0, n, 333):
        mom.add(g[i:i + 333])
    stats = gradient_stats.gradient_stats(mom.mean, mom.var, mom.n)
    want = p * s ** 2 / float(big_g @ big_g)  # 16
    assert abs(stats["b_simple"] - want) / want < 0.1
    assert stats["b_simple_plugin"] < stats["b_simple"]  # the plug-in |mu_hat|^2 is biased up, B_simple down


def test_normality_statistics():
    rng = np.random.default_rng(0)
    gauss = gradient_stats.normality(rng.normal(1.0, 2.0, 5000))
    assert abs(gauss["skewness"]) < 0.1 and abs(gauss["excess_kurtosis"]) < 0.2
    assert gauss["ks"] < 1.5 * gauss["ks_crit_5pct"]  # 1.5x: no 5% flake
    expo = gradient_stats.normality(rng.exponential(1.0, 5000))  # skewness 2, excess kurtosis 6
    assert abs(expo["skewness"] - 2) < 0.3 and expo["ks"] > 3 * expo["ks_crit_5pct"]
    flat = gradient_stats.normality(np.zeros(10))
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
    png, js = tmp_path / "fig2a_gradients.png", tmp_path / "fig2a_gradients.json"
    assert png.stat().st_size > 10_000
    data = json.loads(js.read_text())
    assert [c["step"] for c in data["checkpoints"]] == [0, 20]
    assert data["point"]["model"] == "tiny_mlp" and data["point"]["batch"] == data["point"]["batch_examples"] == 16
    assert data["paper_item"] == "Fig. 2(a)"
    for c in data["checkpoints"]:
        assert c["ratio"]["min"] <= c["ratio"]["q01"] <= c["ratio"]["q05"] <= c["ratio"]["q50"]
        assert c["b_simple"] > 0 and len(c["coordinates"]) == 6
        assert "_values" not in c["coordinates"][0] and "skewness_at_batch" in c["coordinates"][0]["normality"]
        assert c["coordinates"][0]["normality_batch_mean"]["n"] > 100
        h = c["hessian"]
        assert h["n_hvp"] == 2 * 8 + 16 and set(h["terms"]) >= {"trace_h", "offdiag", "g_h_g", "tr_h_sigma"}
        for key in ("b_noise", "b_noise_plugin", "eps_max", "eps_max_sgd", "b_noise_sgd", "b_noise_sgd_diag"):
            assert set(h[key]) == {"value", "lo", "hi", "rse_probes", "rse_data"}, key
    assert data["hessian_probes"] == 16
    assert script.main(overrides + ["--steps", "0", "--examples", "64", "--hessian-probes", "0",
                                    "--out", str(tmp_path / "off")]) == 0
    off = json.loads((tmp_path / "off" / "fig2a_gradients.json").read_text())
    assert off["checkpoints"][0]["hessian"] is None and off["checkpoints"][0]["b_simple"] > 0


def pytest_approx(x):
    return pytest.approx(float(x), rel=1e-4)


def _linear_closed_form(model, x, y):
    """Per-example gradients (N x P) and the Hessian of the mean cross-entropy of a linear softmax model, float64,
    in named_parameters order (weight row-major, then bias): with J_n = diag(p_n) - p_n p_n^T,
    H = mean_n [[J_n (x) x_n x_n^T, J_n (x) x_n], [J_n (x) x_n^T, J_n]]."""
    n, c = len(y), model.out_features
    with torch.no_grad():
        p = F.softmax(model(x), -1).double()
    xd = x.double()
    err = p - F.one_hot(y, c).double()
    g = torch.cat([(err[:, :, None] * xd[:, None, :]).reshape(n, -1), err], dim=1)
    h = 0
    for i in range(n):
        j, xi = torch.diag(p[i]) - torch.outer(p[i], p[i]), xd[i][:, None]
        h = h + torch.cat([torch.cat([torch.kron(j, xi @ xi.T), torch.kron(j, xi)], 1),
                           torch.cat([torch.kron(j, xi.T), j], 1)], 0) / n
    return g, h


def _dense_eq14(g, h, groups):
    """Every hessian_values term from the dense Hessian h and the per-example gradients g (N x P): Eq 14, 16 and 1
    written out as the module docstring defines them, with the same groups."""
    n = len(g)
    gid = diagnostics.group_of(torch.arange(n), n, groups)
    cnt = torch.bincount(gid).double()
    means = torch.stack([g[gid == k].mean(0) for k in range(groups)])
    mu, var = g.mean(0), g.var(0)
    sigma = var.sqrt()
    r_g, r = means / sigma, mu / sigma
    off = h - torch.diag(torch.diag(h))
    w = torch.outer(cnt, cnt)
    w.fill_diagonal_(0)

    def pairs(a, b, m):  # sum_{g != k} n_g n_k a_g^T m b_k / sum_{g != k} n_g n_k
        return float((w * (a @ m @ b.T)).sum() / w.sum())

    dev = means - mu
    return {
        "trace_h": float(h.trace()), "offdiag": pairs(r_g, r_g, off), "offdiag_plugin": float(r @ off @ r),
        "r_h_r": pairs(r_g, r_g, h), "r_h_r_plugin": float(r @ h @ r),
        "sum_mu2_over_sigma": pairs(means, means, torch.diag(1 / sigma)),
        "grad_norm2": pairs(means, means, torch.eye(len(mu), dtype=torch.float64)),
        "g_h_g": pairs(means, means, h), "g_h_g_plugin": float(mu @ h @ mu),
        "tr_h_sigma": float((cnt * ((dev @ h) * dev).sum(1)).sum() / (groups - 1)),
        "tr_h_sigma_diag": float((torch.diag(h) * var).sum()),
    }


def _eq14_task():
    # a shared component in the inputs gives H strong off-diagonal terms, so Eq 14's S is not a small remainder
    gen = torch.Generator().manual_seed(0)
    n, d, c = 300, 5, 3
    x = torch.randn(n, d, generator=gen) + torch.randn(n, 1, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Linear(d, c)
    return TensorTask("linear", x, y), model, x, y


def test_hvp_matches_dense_hessian_of_nonlinear_model():
    # tanh: the Hessian has the second-derivative-of-the-model term that a linear model lacks; chunk 7: uneven chunks
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    task = TensorTask("mlp", x, y)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v):
        ps = dict(zip(names, (t.view(s) for t, s in zip(v.split([s.numel() for s in shapes]), shapes))))
        return task.loss(lambda inp: functional_call(model, ps, (inp,)), (x, y))

    dense = hessian(loss)(flat).double()
    vecs = torch.randn(5, len(flat), generator=gen, dtype=torch.float64)
    got = diagnostics.hessian_vector_products(model, task, x, y, chunk=7, block=2)(vecs)
    torch.testing.assert_close(got, vecs @ dense, rtol=1e-4, atol=1e-5)


def test_eq14_and_eq16_match_dense_hessian():
    task, model, x, y = _eq14_task()
    g, h = _linear_closed_form(model, x, y)
    want = _dense_eq14(g, h, groups=4)
    stats = diagnostics.measure(model, task, x, y, chunk=100, hessian_probes=1000, hessian_groups=4)
    hs = stats["hessian"]
    got = hs["terms"]
    assert hs["n_hvp"] == 2 * 4 + 1000 and hs["n_probes"] == 1000 and hs["n_groups"] == 4
    # no probe in these: exact up to float32 HVPs (r^T H r is one exact HVP of the plug-in r)
    for key in ("r_h_r", "r_h_r_plugin", "sum_mu2_over_sigma", "grad_norm2", "g_h_g", "g_h_g_plugin", "tr_h_sigma"):
        assert got[key] == pytest.approx(want[key], rel=1e-4), key
    # Hutchinson: within 4 of its own standard errors, and those small with 1000 probes on 18 parameters
    assert got["trace_h"] == pytest.approx(want["trace_h"], rel=0.03)
    for key, den in (("b_noise", "offdiag"), ("b_noise_plugin", "offdiag_plugin")):
        dense = math.pi * want["trace_h"] / (2 * want[den])  # Eq 14
        q = hs[key]
        assert abs(q["value"] / dense - 1) < min(0.1, 4 * q["rse_probes"]), key
        assert q["lo"] < dense < q["hi"] and q["rse_probes"] < 0.03 and q["rse_data"] > 0, key
    b = math.pi * want["trace_h"] / (2 * want["offdiag"])
    eps = math.sqrt(b / (2 * math.pi)) * want["sum_mu2_over_sigma"] / want["trace_h"]  # Eq 16
    assert abs(hs["eps_max"]["value"] / eps - 1) < min(0.05, 4 * hs["eps_max"]["rse_probes"])
    assert hs["eps_max"]["lo"] < eps < hs["eps_max"]["hi"]
    # the groups' unbiased S and the plug-in differ here by more than the probes' error: the test tells them apart
    assert abs(want["offdiag"] / want["offdiag_plugin"] - 1) > 0.03


def test_eq1_extras_match_dense_hessian():
    task, model, x, y = _eq14_task()
    g, h = _linear_closed_form(model, x, y)
    want = _dense_eq14(g, h, groups=5)
    hs = diagnostics.measure(model, task, x, y, chunk=100, hessian_probes=1000, hessian_groups=5)["hessian"]
    # McCandlish: eps_max = |G|^2 / G^T H G, B_noise = tr(H Sigma) / G^T H G (no probes: exact)
    assert hs["eps_max_sgd"]["value"] == pytest.approx(want["grad_norm2"] / want["g_h_g"], rel=1e-4)
    assert hs["b_noise_sgd"]["value"] == pytest.approx(want["tr_h_sigma"] / want["g_h_g"], rel=1e-4)
    assert hs["eps_max_sgd"]["rse_probes"] == pytest.approx(0, abs=1e-9)
    diag = want["tr_h_sigma_diag"] / want["g_h_g"]  # Theorem 2's diagonal Sigma: sum_i H_ii sigma_i^2 (Hutchinson)
    q = hs["b_noise_sgd_diag"]
    assert abs(q["value"] / diag - 1) < min(0.05, 4 * q["rse_probes"]) and q["lo"] < diag < q["hi"]
    # against the population-free plug-in: mu_hat^T H mu_hat exceeds the unbiased G^T H G by about tr(H Sigma)/N
    assert hs["terms"]["g_h_g_plugin"] > hs["terms"]["g_h_g"]


def _population(p=12, mean_scale=0.15, seed=0):
    """A known population of per-example gradients g = mu + L eps: Sigma = L L^T, half the means 0, and H = C + I/2
    (C the correlation matrix): aligned with the gradient noise, as cross-entropy's Fisher is."""
    gen = torch.Generator().manual_seed(seed)
    lmat = torch.randn(p, p, generator=gen, dtype=torch.float64) / math.sqrt(p) + torch.eye(p, dtype=torch.float64)
    cov = lmat @ lmat.T
    sd = cov.diagonal().sqrt()
    corr = cov / torch.outer(sd, sd)
    mu = mean_scale * sd * torch.randn(p, generator=gen, dtype=torch.float64)
    mu[: p // 2] = 0  # the coordinates whose plug-in r is pure noise
    return gen, lmat, cov, corr, mu, corr + 0.5 * torch.eye(p, dtype=torch.float64)


def _population_terms(gen, lmat, mu, h, n, groups, probes, seed):
    g = mu + torch.randn(n, len(mu), generator=gen, dtype=torch.float64) @ lmat.T
    gid = diagnostics.group_of(torch.arange(n), n, groups)
    means = torch.stack([g[gid == k].mean(0) for k in range(groups)])
    return diagnostics.hessian_terms(lambda v: v @ h, means, torch.bincount(gid), g.var(0), probes, seed)


def test_group_estimates_unbiased_on_known_population():
    # the plug-in S = sum_{i != j} r_i r_j H_ij is biased up by sum_{i != j} C_ij H_ij / N, the groups' estimate is
    # not; likewise mu^T H mu and the between-group tr(H Sigma)
    gen, lmat, cov, corr, mu, h = _population()
    n, groups, reps = 64, 4, 300
    r = mu / cov.diagonal().sqrt()
    off = h - torch.diag(torch.diag(h))
    truth = {"offdiag": float(r @ off @ r), "g_h_g": float(mu @ h @ mu), "tr_h_sigma": float((h * cov).sum())}
    bias = float((corr * off).sum()) / n
    runs = [gradient_stats.hessian_values(_population_terms(gen, lmat, mu, h, n, groups, 8, seed),
                                       np.arange(groups), np.arange(8)) for seed in range(reps)]
    mean = {k: np.mean([v[k] for v in runs]) for k in runs[0]}
    se = {k: np.std([v[k] for v in runs]) / math.sqrt(reps) for k in runs[0]}
    assert bias > 10 * se["offdiag"]  # the plug-in's bias is resolved by these runs
    assert abs(mean["offdiag_plugin"] - truth["offdiag"] - bias) < 0.3 * bias
    # sigma_hat (not sigma) in r costs a few percent; the plug-in's bias is several times that
    assert abs(mean["offdiag"] - truth["offdiag"]) < max(4 * se["offdiag"], 0.2 * bias)
    for key in ("g_h_g", "tr_h_sigma"):
        assert abs(mean[key] - truth[key]) < 4 * se[key], key
    assert mean["g_h_g_plugin"] - truth["g_h_g"] == pytest.approx(truth["tr_h_sigma"] / n, rel=0.25)


def test_intervals_cover_on_known_population():
    # the jackknife over groups must carry the sampling error of the examples: Eq 1's quantities (no probes in them)
    # have a spread over fresh draws that rse_data matches, and their intervals cover the population value
    gen, lmat, cov, _, mu, h = _population(mean_scale=0.45)
    truth = {"eps_max_sgd": float(mu @ mu) / float(mu @ h @ mu),
             "b_noise_sgd": float((h * cov).sum()) / float(mu @ h @ mu)}
    runs = [gradient_stats.hessian_stats(_population_terms(gen, lmat, mu, h, 64, 8, 4, seed)) for seed in range(200)]
    for key, want in truth.items():
        values = np.array([s[key]["value"] for s in runs])
        rse = np.median([s[key]["rse_data"] for s in runs])
        assert 0.7 < rse / (values.std() / values.mean()) < 1.3, key
        lo = [-math.inf if s[key]["lo"] is None else s[key]["lo"] for s in runs]
        hi = [math.inf if s[key]["hi"] is None else s[key]["hi"] for s in runs]
        cover = np.mean([a <= want <= b for a, b in zip(lo, hi)])
        assert 0.85 < cover <= 1.0, key


def test_fieller_interval():
    assert gradient_stats.fieller(6.0, 2.0, np.zeros((2, 2))) == (3.0, 3.0)
    # small errors: close to the delta method's 3 +- 1.96 * 3 * sqrt(0.01^2 + 0.01^2)
    lo, hi = gradient_stats.fieller(6.0, 2.0, np.diag([0.06 ** 2, 0.02 ** 2]))
    half = 1.96 * 3 * math.sqrt(2) * 0.01
    assert lo == pytest.approx(3 - half, rel=1e-3) and hi == pytest.approx(3 + half, rel=1e-3)
    lo, hi = gradient_stats.fieller(6.0, 2.0, np.diag([0.01, 4.0]))  # b not resolved from 0: unbounded above
    assert hi is None and 1 < lo < 3
    assert gradient_stats.fieller(0.1, 0.1, np.diag([1.0, 1.0])) == (None, None)


def test_hessian_switch_and_arguments():
    task, model, x, y = _linear_task(n=40)
    assert diagnostics.measure(model, task, x, y, hessian_probes=0)["hessian"] is None
    with pytest.raises(ValueError, match="hessian_groups"):
        diagnostics.measure(model, task, x, y, hessian_probes=4, hessian_groups=2)


def test_the_registry_puts_fig2a_on_the_cnn_and_fig8_on_the_moe():
    from surge_repro.config import validate
    from surge_repro.report.figures import GRADIENTS

    cnn, moe = (compose(list(GRADIENTS[f].point)) for f in ("2a", "8"))
    for cfg in (cnn, moe):
        validate(cfg)
    assert (cnn.model.name, cnn.task.name, int(cnn.batch)) == ("cnn5", "fashion_mnist", 8)
    assert (moe.model.name, moe.task.name, moe.task.batch_unit) == ("moe_shared", "redpajama", "tokens")
    assert int(moe.batch) % moe.task.seq_len == 0 and dict(GRADIENTS["8"].options)["hessian_probes"] == "0"
    assert GRADIENTS["8"].label == "Fig. 8" and "RedPajama" in GRADIENTS["8"].status


@pytest.fixture(scope="module")
def redpajama_root(tmp_path_factory):
    """A data folder holding RedPajama as prepare writes it: a saved dataset with the sample's columns (text, meta;
    the documents are the vendored Shakespeare excerpt's paragraphs), tokenized by the real prepare step. No hub."""
    import datasets

    root = tmp_path_factory.mktemp("data")
    docs = [d for d in EXCERPT.read_text().split("\n\n") if d.strip()]
    rows = {"text": docs, "meta": [json.dumps({"source": "tempest_excerpt"})] * len(docs)}
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "redpajama" / "train"))
    text.prepare_redpajama(str(root))
    shutil.rmtree(root / "redpajama" / "train")  # the task reads tokens.npy alone
    return root


def moe_overrides(root, tmp_path):
    # Fig. 8's workload at a tiny size: the task's batch counts tokens, 64 = 4 sequences of 16
    return ["task=redpajama", "model=moe_tiny", f"paths.data={root}", f"paths.store={tmp_path / 'store'}",
            "task.seq_len=16", "batch=64", "optimizer.lr=1e-3", "threads=1", "device=cpu"]


def test_moe_per_sequence_gradients_by_loop_and_fig8_from_each_moe_part(redpajama_root, tmp_path):
    cfg = compose(moe_overrides(redpajama_root, tmp_path))
    task = build(cfg.task)
    torch.manual_seed(0)
    model = build(cfg.model)
    inputs, labels = task.probe(12 * 16, 1)  # 12 sequences (the probe counts tokens)
    assert inputs.shape == (12, 16)
    assert "RuntimeError" in diagnostics.vmap_refusal(model, task, inputs, labels)  # the expert routing
    g = torch.cat([c for _, c in diagnostics.per_example_grads(model, task, inputs, labels, 5, batched=False)])
    names = diagnostics.coordinate_names(model)
    assert g.shape == (12, sum(n for _, n in names))
    # their mean is the full-batch gradient (equal-length sequences: the loss is their mean), and a row is the
    # gradient of its sequence alone
    model.zero_grad()
    task.loss(model, (inputs, labels)).backward()
    full = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(g.mean(0), full, rtol=1e-4, atol=1e-7)
    for i in (0, 7):
        model.zero_grad()
        task.loss(model, (inputs[i:i + 1], labels[i:i + 1])).backward()
        torch.testing.assert_close(g[i], torch.cat([p.grad.reshape(-1) for p in model.parameters()]),
                                   rtol=1e-4, atol=1e-7)
    stats = diagnostics.measure(model, task, inputs, labels, chunk=5, n_top=1, n_random=1, hessian_probes=0)
    assert stats["per_example"].startswith("loop over examples") and stats["hessian"] is None
    assert all(math.isfinite(stats["ratio"][k]) for k in ("min", "q01", "q05", "q50")) and stats["b_simple"] > 0
    groups = diagnostics.coordinate_groups(names)
    assert list(groups) == ["router", "routed experts", "shared expert"]
    coords = stats["coordinates"]
    assert [(c["group"], c["kind"]) for c in coords] == [(part, kind) for part in groups
                                                        for kind in ("largest |mu|", "random")]
    pattern = {"router": ".mlp.gate.weight[", "routed experts": ".mlp.experts.", "shared expert": ".mlp.shared_expert."}
    mu = g.double().mean(0)
    for c in coords:
        assert pattern[c["group"]] in c["name"] and c["name"].startswith("model.layers."), c
        np.testing.assert_allclose(c["_values"], g[:, c["index"]].double().numpy(), rtol=1e-6)
        assert c["mu"] == pytest.approx(float(mu[c["index"]]), rel=1e-6) and math.isfinite(c["sigma"])
        if c["kind"] == "largest |mu|":  # the largest within its own part, not over the whole model
            part = torch.cat([mu[s:s + n] for s, n in groups[c["group"]]])
            assert abs(c["mu"]) == pytest.approx(float(part.abs().max()), rel=1e-9)
    with pytest.raises(ValueError, match=r"Fix: hessian_probes=0"):
        diagnostics.measure(model, task, inputs, labels, hessian_probes=4, hessian_groups=3)


def test_fig8_script_draws_the_moe(redpajama_root, tmp_path):
    sys.path.insert(0, str(ROOT / "reports"))
    try:
        import fig2a_fig8_gradients as script
    finally:
        sys.path.pop(0)
    assert script.main(["--figure", "8", *moe_overrides(redpajama_root, tmp_path), "--steps", "0,2",
                        "--examples", "10", "--chunk", "4", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "fig8_moe_gradients.json").read_text())
    assert (tmp_path / "fig8_moe_gradients.png").stat().st_size > 10_000
    assert data["paper_item"] == "Fig. 8" and data["hessian_probes"] == 0  # the registry's options for Fig. 8
    assert data["point"] == {"task": "redpajama", "model": "moe_tiny", "optimizer": "adam", "batch": 64,
                             "batch_unit": "tokens", "batch_examples": 4, "lr": 1e-3, "seed": 0}
    for c in data["checkpoints"]:
        assert c["n_examples"] == 10 and c["hessian"] is None and c["per_example"].startswith("loop")
        assert {x["group"] for x in c["coordinates"]} == {"router", "routed experts", "shared expert"}
        assert len(c["coordinates"]) == 6 and all(x["name"].startswith("model.layers.") for x in c["coordinates"])
    assert [c["step"] for c in data["checkpoints"]] == [0, 2]
