"""The fits recover known parameters from synthetic grids drawn from the paper's laws with noise."""

import math

import numpy as np
import pytest
import synthetic

from surge_repro.analysis.fit import (
    Grid,
    fit_b_noise,
    fit_eps_max,
    fit_experiment,
    fit_target,
    optimal_lr,
)
from surge_repro.analysis.theory import adam_lr, alpha_lr, sgd_lr


def test_laws_have_the_papers_shape():
    b = np.array([1.0, 5.0, 20.0, 80.0, 400.0])
    assert adam_lr(20.0, 1e-3, 20.0) == pytest.approx(1e-3)  # peak at B_noise, height eps_max (Eq 15)
    assert adam_lr(80.0, 1e-3, 20.0) == pytest.approx(adam_lr(5.0, 1e-3, 20.0))  # symmetric in log B
    assert adam_lr(80.0, 1.0, 20.0) == pytest.approx(0.8)  # 2 sqrt(x) / (1 + x) at x = 4
    assert np.all(np.diff(sgd_lr(b, 1e-3, 20.0)) > 0) and sgd_lr(1e9, 1e-3, 20.0) == pytest.approx(1e-3)
    assert alpha_lr(b, 1e-3, 20.0, 1.0) == pytest.approx(sgd_lr(b, 1e-3, 20.0))
    small = 1e-3
    assert adam_lr(small, 1.0, 20.0) / alpha_lr(small, 1.0, 20.0, 0.5) == pytest.approx(2, rel=1e-3)


def test_eq22_recovers_b_noise_and_s_min_exactly_from_the_trade_off_curve():
    b = np.array([1, 2, 4, 8, 16, 64, 256], float)
    s = 50 * (1 + 12 / b)  # (S/S_min - 1)(E/E_min - 1) = 1 with E = B S, E_min = B_noise S_min
    assert fit_b_noise(s, s * b) == pytest.approx((12.0, 50.0))
    assert all(math.isnan(x) for x in fit_b_noise([10.0], [10.0]))


@pytest.mark.parametrize("law", ["adam", "sgd_alpha1", "sgd_alpha0.5"])
def test_eps_max_by_eq23_24_is_exact_on_noiseless_optima(law):
    from surge_repro.analysis.theory import LAWS

    b = np.geomspace(1, 500, 9)
    assert fit_eps_max(b, LAWS[law][1](b, 7e-4, 30.0), 30.0, law) == pytest.approx(7e-4)
    assert math.isnan(fit_eps_max(b, b * 0 + 1e-3, -5.0, law))


@pytest.mark.parametrize("law,b_noise", [("adam", 20.0), ("adam", 60.0), ("sgd_alpha1", 30.0)])
def test_whole_fit_recovers_known_parameters_from_a_noisy_grid(law, b_noise):
    frame = synthetic.table(law=law, eps_max=1e-3, b_noise=b_noise, seeds=6, rng=1)
    (fit,) = fit_experiment(frame, n_boot=200)
    assert fit.b_noise == pytest.approx(b_noise, rel=0.10)
    assert fit.s_min == pytest.approx(100.0, rel=0.10)
    assert fit.eps_max[law] == pytest.approx(1e-3, rel=0.10)
    assert fit.b_noise_ci[0] <= b_noise <= fit.b_noise_ci[1]
    assert fit.eps_max_ci[law][0] <= 1e-3 <= fit.eps_max_ci[law][1]
    assert fit.n_seeds == 6 and fit.n_runs == len(frame)
    if law == "adam":  # the observed optimum peaks near B_noise, and the wrong law fits worse
        assert fit.peak_batch_size == pytest.approx(b_noise, rel=0.5)


def test_a_surge_is_told_apart_from_saturation():
    surge = fit_experiment(synthetic.table(law="adam", b_noise=20.0, rng=2), n_boot=50)[0]
    flat = fit_experiment(synthetic.table(law="sgd_alpha1", b_noise=20.0, rng=2), n_boot=50)[0]
    b = np.asarray(surge.batch_sizes)
    assert surge.lr_opt[-1] < 0.6 * max(surge.lr_opt)  # falls after the peak
    assert flat.lr_opt[-1] == pytest.approx(max(flat.lr_opt), rel=0.1)  # saturates
    assert b[np.argmax(surge.lr_opt)] < b[-1]


def test_more_noise_widens_the_intervals_and_lowers_agreement():
    quiet = fit_experiment(synthetic.table(drop_noise=0.002, seeds=8, rng=3), n_boot=300)[0]
    loud = fit_experiment(synthetic.table(drop_noise=0.2, seeds=8, rng=3), n_boot=300)[0]
    width = lambda f: np.mean([hi / lo for lo, hi in f.lr_opt_ci])  # noqa: E731
    assert width(loud) > 2 * width(quiet)
    assert np.mean(loud.lr_opt_agreement) < np.mean(quiet.lr_opt_agreement)


def test_optimal_lr_flags_the_edge_and_skips_unmeasured_cells():
    nan, ninf = math.nan, -math.inf
    mean = np.array([
        [0.1, 0.3, 0.2, 0.0],   # interior optimum
        [0.1, 0.2, 0.3, 0.4],   # top of the grid
        [0.1, 0.3, ninf, nan],  # next LR diverged: from the means alone, nothing is known beyond
        [nan, nan, nan, nan],   # nothing measured
    ])
    best, edge, tie = optimal_lr(mean)
    assert best.tolist() == [1, 3, 1, -1]
    assert edge.tolist() == [False, True, True, False] and not tie.any()
    measured = ~np.isnan(mean)  # runs exist where the mean is -inf: a diverged LR beyond brackets the optimum
    assert optimal_lr(mean, measured)[1].tolist() == [False, True, False, False]


def test_grid_axes_come_from_the_table_and_missing_runs_stay_nan():
    frame = synthetic.table(batch_sizes=[2, 8], lrs=[1e-3, 2e-3, 3e-3], seeds=2)
    frame = frame.drop(index=0)  # one run missing
    grid = Grid.from_table(frame, 1.0)
    assert grid.drop.shape == (2, 3, 2) and np.isnan(grid.drop).sum() == 1
    fit = fit_target(grid, n_boot=20)
    assert len(fit.lr_opt) == 2


def test_a_table_of_two_workloads_is_refused():
    a, b = synthetic.table(seeds=1, rng=0), synthetic.table(seeds=1, rng=1)
    b["optimizer"] = "sgd"
    import pandas as pd

    with pytest.raises(ValueError, match="mixes 2 workloads.*experiment_name"):
        fit_experiment(pd.concat([a, b]))
