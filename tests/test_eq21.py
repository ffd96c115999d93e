"""Eq 21, B_noise = B_* / L^(1/alpha_B), across targets: the fit recovers known (B_*, alpha_B), says which targets it
leaves out and why, bootstraps on replicates paired across targets, and the report draws it and writes it."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import synthetic

from surge_repro.analysis.fit import Grid, eq21, fit_eq21, fit_experiment, fit_target
from surge_repro.config import compose
from surge_repro.report.render import render

TARGETS = np.array([2.0, 1.6, 1.3, 1.0, 0.8, 0.6])
SMALL = {"batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256], "lrs": np.geomspace(1e-5, 1e-2, 31)}


def law(targets, b_star, alpha_b):
    return b_star / np.asarray(targets, float) ** (1 / alpha_b)


@pytest.mark.parametrize("b_star,alpha_b", [(2e8, 0.21), (40.0, 0.5), (30.0, -2.0)])  # Kaplan's; a falling B_noise
def test_fit_eq21_recovers_known_b_star_and_alpha_b_under_multiplicative_noise(b_star, alpha_b):
    # 5% noise on B_noise: the standard error of the slope (-1/alpha_B) is about 0.05 / 0.96 = 0.052, the
    # intercept's 2.5%; the tolerances are about 5 and 4 of them, over 20 draws. A fit that returned the slope
    # (alpha_B = 4.76 for Kaplan's 0.21) or flipped its sign (B_* * L^(+1/alpha_B)) would miss them by far
    rng = np.random.default_rng(0)
    for _ in range(20):
        noisy = law(TARGETS, b_star, alpha_b) * np.exp(0.05 * rng.normal(size=len(TARGETS)))
        got_star, got_alpha, excluded = fit_eq21(TARGETS, noisy)
        assert got_star == pytest.approx(b_star, rel=0.10)
        assert 1 / got_alpha == pytest.approx(1 / alpha_b, abs=0.25)
        assert excluded == {}
    exact = fit_eq21(TARGETS, law(TARGETS, b_star, alpha_b))
    assert exact[:2] == pytest.approx((b_star, alpha_b), rel=1e-9)


def test_b_noise_that_grows_as_the_loss_falls_has_a_positive_alpha_b():
    b_star, alpha_b, _ = fit_eq21([1.5, 1.0], [10.0, 40.0])  # 4x when the loss falls 1.5x: 1/alpha_B = ln 4 / ln 1.5
    assert alpha_b == pytest.approx(math.log(1.5) / math.log(4.0)) and b_star == pytest.approx(40.0)
    assert abs(fit_eq21([1.5, 1.0], [20.0, 20.0])[1]) > 1e9  # flat: no dependence on the loss, alpha_B unbounded


def test_fit_eq21_leaves_out_what_has_no_log_and_says_why():
    b = law(TARGETS, 40.0, 0.5)
    bad = b.copy()
    bad[[1, 2, 3]] = [-3.0, np.nan, 0.0]
    targets = TARGETS.copy()
    targets[4] = 0.0  # a loss of 0: no log either
    b_star, alpha_b, excluded = fit_eq21(targets, bad)
    assert set(excluded) == {1.6, 1.3, 1.0, 0.0}
    assert "<= 0" in excluded[1.6] and "<= 0" in excluded[1.0] and "no estimate" in excluded[1.3]
    assert "not > 0" in excluded[0.0]
    assert (b_star, alpha_b) == pytest.approx((40.0, 0.5))  # the two left (2.0 and 0.6) are exact
    one = fit_eq21([2.0, 1.0, 0.5], [5.0, -1.0, math.inf])  # one target left: no line
    assert all(math.isnan(x) for x in one[:2]) and set(one[2]) == {1.0, 0.5}
    with pytest.raises(ValueError, match="Fix"):
        fit_eq21([2.0, 1.0], [5.0])


def draw(truth: dict[float, float], seeds: int = 5, rng: int = 0) -> pd.DataFrame:
    """One table over several targets, each with its own B_noise (one signature per (B, LR, seed))."""
    return pd.concat([synthetic.table(b_noise=bn, target=t, seeds=seeds, rng=rng + i, **SMALL)
                      for i, (t, bn) in enumerate(truth.items())])


def test_eq21_on_the_fits_recovers_the_law_with_paired_bootstrap_intervals():
    truth = dict(zip([2.0, 1.5, 1.0], law([2.0, 1.5, 1.0], 40.0, 0.5)))  # B_noise 10, 17.8, 40
    fits = fit_experiment(draw(truth), n_boot=100)
    line = eq21(fits)
    assert line["b_star"] == pytest.approx(40.0, rel=0.1) and line["alpha_b"] == pytest.approx(0.5, rel=0.1)
    assert line["b_star_ci"][0] < line["b_star"] < line["b_star_ci"][1]
    assert line["alpha_b_ci"][0] < line["alpha_b"] < line["alpha_b_ci"][1]
    assert line["alpha_b_ci"] == pytest.approx(sorted(1 / x for x in line["inv_alpha_b_ci"]))
    assert line["unfit_share"] == 0 and line["n_targets"] == 3 and line["excluded"] == []
    band = line["band"]  # the line lies inside its band
    inside = line["b_star"] * np.asarray(band["target"]) ** -line["inv_alpha_b"]
    assert np.all((np.asarray(band["lo"]) <= inside) & (inside <= np.asarray(band["hi"])))
    assert band["target"][0] == 1.0 and band["target"][-1] == 2.0
    assert eq21(fits[:1]) is None
    # replicates drawn by another rng seed at one target are not the same resamples: no line per replicate
    other = fit_target(Grid.from_table(draw(truth)[lambda f: f.target_loss == 1.0], 1.0), n_boot=100, seed=1)
    unpaired = eq21(fits[:2] + [other])
    assert math.isfinite(unpaired["b_star"]) and math.isnan(unpaired["b_star_ci"][0])
    assert "not the same resamples" in unpaired["note"]
    few = eq21(fit_experiment(draw(truth, seeds=4), n_boot=50))  # 4 seeds: no interval, as for every estimate
    assert math.isnan(few["alpha_b_ci"][0]) and "too few seeds" in few["note"]


def test_the_report_draws_eq21_and_writes_it_per_criterion(tmp_path):
    truth = dict(zip([2.0, 1.5, 1.0], law([2.0, 1.5, 1.0], 40.0, 0.5)))
    synthetic.write_store(tmp_path / "store", "smoke", draw(truth))
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "report.n_boot=100"])
    png = render(cfg, "test")
    numbers = json.loads(png.with_suffix(".json").read_text())
    assert set(numbers["eq21"]) == {"drop", "steps"}  # the chosen criterion's and the fewest steps'
    for criterion, line in numbers["eq21"].items():
        assert line["criterion"] == criterion and line["used"] == [True] * 3 and line["excluded"] == []
        assert line["b_star"] == pytest.approx(40.0, rel=0.15) and line["alpha_b"] == pytest.approx(0.5, rel=0.15)
        assert line["b_star_ci"][0] < line["b_star"] < line["b_star_ci"][1]
        assert line["alpha_b_ci"][0] < line["alpha_b"] < line["alpha_b_ci"][1]
        assert len(line["band"]["lo"]) == len(line["band"]["target"]) > 10
    assert numbers["eq21"]["drop"]["b_noise"] == numbers["b_noise_trend"]["b_noise"]  # the panel's B_noise
    assert png.stat().st_size > 20_000 and json.dumps(numbers).count("NaN") == 0
