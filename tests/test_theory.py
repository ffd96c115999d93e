"""Theorems 2-4 and Su's variant (surge_repro.analysis.theory) against the paper's formulas, and the Fig. 1 and Fig. 7
scripts: Fig. 1 writes its figure and numbers; Fig. 7 recovers a known Eq 2 from a noisy (B, LR, loss) table and
rejects bad tables with the fix in the message."""

import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surge_repro.analysis import theory

ROOT = Path(__file__).resolve().parent.parent


def coupled(n=150, r=0.05, c=0.5, seed=0):
    """n coordinates of signal-to-noise ratio about r, all coupled by c: B_noise (Eq 14) far below Theorem 3's
    bound pi/(2 r^2)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.5, 1.5, n)
    sigma = mu / (r * rng.uniform(0.8, 1.2, n))
    h = np.full((n, n), c) + np.diag(rng.uniform(0.8, 1.2, n))
    return mu, sigma, h


def test_eq13_equals_eq2_with_eq14_and_eq16_and_exact_eq9_tends_to_it_at_small_batch():
    mu, sigma, h = coupled()
    p = theory.surge_parameters(mu, sigma, h)
    assert p["b_noise"] < p["theorem3_bound"] / 30  # the test sits inside Theorem 3's regime
    b = np.geomspace(1e-3, 1e4, 50)
    eq2 = theory.adam_lr(b, p["eps_max"], p["b_noise"])
    assert theory.sign_lr_small_batch(b, mu, sigma, h) == pytest.approx(eq2, rel=1e-10)  # the algebra of Eq 13-16
    ratio = theory.sign_lr(b, mu, sigma, h) / eq2
    small = b < p["theorem3_bound"] / 100
    assert np.all(np.abs(ratio[small] - 1) < 0.02)  # the erf of Eq 10 is linear there (Eq 39)
    assert abs(ratio[b <= p["b_noise"]][-1] - 1) < 0.01  # so Eq 2 describes the peak
    grid = np.geomspace(p["b_noise"] / 10, p["b_noise"] * 10, 2001)  # the exact peak sits at B_noise (Eq 15)
    peak = grid[np.argmax(theory.sign_lr(grid, mu, sigma, h))]
    assert peak == pytest.approx(p["b_noise"], rel=0.05)


def test_exact_eq9_tends_to_the_eq17_limit_at_large_batch():
    mu, sigma, h = coupled()
    mu = mu * np.where(np.arange(len(mu)) % 3 == 0, -1, 1)  # mixed signs: Eq 17 uses sign(mu_i) sign(mu_j)
    limit = theory.sign_lr_limit(mu, h)
    s = np.sign(mu)
    assert limit == pytest.approx(np.abs(mu).sum() / (s @ h @ s))
    bound = theory.theorem3_bound(mu, sigma)
    far = theory.sign_lr(np.array([1e3, 1e5]) * bound, mu, sigma, h)
    assert far[-1] == pytest.approx(limit, rel=1e-6)
    assert abs(far[0] / limit - 1) < 0.01


def test_eq2_peaks_at_b_noise_and_a_diagonal_h_has_no_surge():
    b = np.geomspace(1, 1e4, 4001)
    assert b[np.argmax(theory.adam_lr(b, 1e-3, 137.0))] == pytest.approx(137.0, rel=0.005)
    mu, sigma, h = coupled()
    diag = np.diag(np.diag(h))
    p = theory.surge_parameters(mu, sigma, np.diag(h))  # a diagonal H given as its diagonal
    assert p["b_noise"] == np.inf and np.isnan(p["eps_max"])
    assert np.all(np.diff(theory.sign_lr(b, mu, sigma, diag)) > 0)  # Eq 9 rises monotonically
    with pytest.raises(ValueError, match="sigma_i must be > 0"):
        theory.sign_lr(b, mu, sigma * 0, h)


def test_eq10_approximation_matches_erf_in_both_limits():
    r = np.array([0.01, 0.1, 1.0])
    for b in (1e-4, 1e8):
        exact, approx = theory.sign_mean(b, r, 1.0), theory.sign_mean(b, r, 1.0, approx=True)
        assert approx == pytest.approx(exact, rel=1e-3)


def test_su_mean_field_is_eq9_with_eq10_approximated_and_surges_only_if_beta_noise_below_1():
    mu, sigma, h = coupled()
    kappa2 = 300.0
    same = np.sign(mu) * np.abs(mu)  # every |mu_i| / sigma_i = 1 / kappa: the mean field is exact
    b = np.geomspace(0.1, 1e6, 300)
    su = theory.su_lr(b, same, h, kappa2)
    assert su == pytest.approx(theory.sign_lr(b, same, np.abs(same) * np.sqrt(kappa2), h, approx=True), rel=1e-10)
    p = theory.su_parameters(same, h, kappa2)
    assert p["surge"] and p["beta_noise"] < 1
    fine = np.geomspace(p["b_peak"] / 5, p["b_peak"] * 5, 4001)
    assert fine[np.argmax(theory.su_lr(fine, same, h, kappa2))] == pytest.approx(p["b_peak"], rel=0.005)
    assert np.max(su) == pytest.approx(p["eta_max"], rel=1e-4)
    assert 1 / p["b_noise_2"] - 1 / p["b_peak"] == pytest.approx(4 / (np.pi * kappa2))
    assert su[-1] == pytest.approx(theory.sign_lr_limit(same, h), rel=1e-3)  # and it falls to Eq 17, no 2nd rise
    assert np.all(np.diff(su[b > p["b_peak"]]) < 0)
    weak = np.full_like(h, 0.001) + np.diag(np.diag(h))  # off-diagonal sum below the trace: beta_noise > 1
    q = theory.su_parameters(same, weak, kappa2)
    assert not q["surge"] and np.all(np.diff(theory.su_lr(b, same, weak, kappa2)) > 0)


def run_main(script: str, *argv: str) -> int:
    return runpy.run_path(str(ROOT / "reports" / script))["main"](list(argv))


def test_fig1_writes_its_figure_and_the_rise_fall_rise_numbers(tmp_path):
    assert run_main("fig1_theory.py", "--su", "--out", str(tmp_path)) == 0
    numbers = json.loads((tmp_path / "fig1_theory.json").read_text())
    assert (tmp_path / numbers["figure"]).stat().st_size > 50_000
    n = numbers["numbers"]
    assert n["exact_shape"] == "rise, fall, rise"
    assert n["exact_peak"]["batch_size"] == pytest.approx(n["eq14_b_noise"], rel=0.1)
    assert n["exact_trough"]["batch_size"] > n["exact_peak"]["batch_size"]
    assert n["exact_at_largest_b"]["lr"] == pytest.approx(n["eq17_limit"], rel=1e-3)
    assert n["su"]["surge"] is True and len(numbers["summary"]) >= 4
    problem = {"mu": [1.0, 1.0], "sigma": [1.0, 1.0], "h": [1.0, 2.0]}  # a diagonal H: no B_noise, said so
    (tmp_path / "p.json").write_text(json.dumps(problem))
    assert run_main("fig1_theory.py", "--params", str(tmp_path / "p.json"), "--out", str(tmp_path / "d")) == 0
    diag = json.loads((tmp_path / "d" / "fig1_theory.json").read_text())
    assert diag["numbers"]["eq14_b_noise"] is None and diag["numbers"]["exact_shape"] == "monotone"
    assert "Eq 14 does not apply" in diag["notes"][0]


def surge_table(path: Path, eps_max=2e-3, b_noise=1e6, seed=0) -> Path:
    """A (B, LR, loss) table whose loss is a parabola in log LR around Eq 2's optimum, plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in np.geomspace(b_noise / 40, b_noise * 40, 14):
        best = theory.adam_lr(b, eps_max, b_noise)
        for lr in np.geomspace(1e-4, 1e-2, 70):
            rows.append((b, lr, 2.5 + 0.05 * np.log(lr / best) ** 2 + rng.normal(0, 5e-4)))
    pd.DataFrame(rows, columns=["batch_size", "lr", "loss"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("seed", [0, 1])
def test_fig7_recovers_eps_max_and_b_noise_from_a_noisy_table(tmp_path, seed):
    table = surge_table(tmp_path / "t.csv", seed=seed)
    assert run_main("fig7_table.py", str(table), "--title", "synthetic", "--out", str(tmp_path)) == 0
    numbers = json.loads((tmp_path / "fig7_t.json").read_text())
    assert (tmp_path / numbers["figure"]).stat().st_size > 50_000
    fit = numbers["fits"]["adam"]
    assert fit["eps_max"] == pytest.approx(2e-3, rel=0.15)
    assert fit["b_noise"] == pytest.approx(1e6, rel=0.15)
    assert fit["rmse_log"] < numbers["fits"]["sgd_alpha1"]["rmse_log"]  # the surge fits better than saturation
    assert "lower is better" in numbers["loss_means"] and numbers["title"] == "synthetic"


@pytest.mark.parametrize("frame,message", [
    (pd.DataFrame({"batch_size": [1, 1, 2, 2], "lr": [1, 2, 1, 2]}), "missing column(s) ['loss']"),
    (pd.DataFrame({"batch_size": [1, 1, 0, 0], "lr": [1, 2, 1, 2], "loss": [1, 2, 3, 4]}),
     "column batch_size has non-positive values"),
    (pd.DataFrame({"batch_size": [1, 1, 2, 2], "lr": [1, -2, 1, 2], "loss": [1, 2, 3, 4]}),
     "column lr has non-positive values"),
    (pd.DataFrame({"batch_size": [1, 1, 2, 2], "lr": [1, 2, 1, 2], "loss": [1, "x", 3, 4]}), "non-numeric"),
    (pd.DataFrame({"batch_size": [1, 1], "lr": [1, 2], "loss": [1, 2]}), "at least two batch sizes"),
])
def test_fig7_rejects_bad_tables_with_the_fix(tmp_path, capsys, frame, message):
    frame.to_csv(tmp_path / "bad.csv", index=False)
    assert run_main("fig7_table.py", str(tmp_path / "bad.csv"), "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err
    assert not list(tmp_path.glob("*.png"))
