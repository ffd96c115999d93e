"""Theorem 5 (Eq 18): the largest loss drop of each batch size, dL_max / (1 + B_noise / B), with Eq 22's B_noise.
The fits recover known (dL_max, B_noise) from synthetic drops, tell a B_noise the drops do not share from one they
do, and leave a B_noise the drops cannot show (flat drops: no knee) unresolved; the report writes it all out."""

import json
import math

import numpy as np
import pytest
import synthetic

from surge_repro.analysis.fit import Grid, fit_dl_max, fit_eq18, fit_target, max_drop
from surge_repro.config import compose
from surge_repro.report.plots import surge_figure
from surge_repro.report.render import render

NAN = math.nan
BS = np.geomspace(1, 400, 12).round()  # synthetic.table's batch sizes


def eq18(b, dl_max, b_noise):
    return dl_max / (1 + b_noise / np.asarray(b, float))


def theorem5(**kw) -> dict:
    """Theorem 5 of a 5-seed synthetic grid (the fewest with intervals) whose S-E trade-off has B_noise = 20."""
    frame = synthetic.table(**{"seeds": 5, "rng": 3, "b_noise": 20.0} | kw)
    return fit_target(Grid.from_table(frame, 1.0), n_boot=200).theorem5


def test_max_drop_picks_on_one_half_reads_the_other_and_keeps_the_finite_rules():
    drop = np.full((3, 4, 4), NAN)  # (B, LR, seeds): halves are the even seeds (0, 2) and the odd ones (1, 3)
    drop[0] = [[0.1, 0.1, 0.1, 0.1],
               [0.2, 0.4, 0.2, 0.4],  # the best LR of both halves: each reads the other's 0.4 and 0.2
               [0.9, -np.inf, 0.9, 0.9],  # a run diverged inside its window: never the largest
               [1.0, NAN, 1.0, NAN]]  # not run by one half: nothing to read there
    drop[1] = -np.inf  # every run diverged: no largest drop
    top = max_drop(drop)  # drop[2]: no run
    assert top.shape == (1, 3) and top[0, 0] == pytest.approx(0.3) and np.isnan(top[0, 1:]).all()
    assert np.isnan(max_drop(drop[:, :, :3])).all()  # a half of one seed: no cross-fitted estimate
    # a bootstrap replicate splits its own resampled list by position: [0, 0, 2, 2] -> halves [0, 2] and [0, 2],
    # which pick and read the same means (LR 3: 1.0); [1, 3, 1, 3] -> [1, 1] and [3, 3], which ran only LRs 0-2
    assert max_drop(drop, np.array([[0, 0, 2, 2], [1, 3, 1, 3]]))[:, 0] == pytest.approx([1.0, 0.4])


def test_cross_fitting_removes_the_selections_upward_bias():
    rng = np.random.default_rng(0)
    drop = rng.normal(size=(200, 61, 6))  # 200 batch sizes whose 61 LRs all truly drop 0, noise 1 per run
    plain = drop.mean(axis=-1).max(axis=-1)  # the largest of 61 means of 6: about 2.3 / sqrt(6) above the truth
    crossed = max_drop(drop)[0]
    assert plain.mean() > 0.8 and abs(crossed.mean()) < 0.1


def test_eq18_is_recovered_exactly_from_noiseless_maxima():
    drops = eq18(BS, 0.1, 20.0)
    dl, b_noise, bound = fit_eq18(BS, drops)
    assert dl[0] == pytest.approx(0.1, rel=0.01) and b_noise[0] == pytest.approx(20.0, rel=0.01) and not bound[0]
    assert fit_dl_max(BS, drops, 20.0)[0] == pytest.approx(0.1)  # B_noise fixed: dL_max in closed form
    per_replicate = fit_dl_max(BS, np.stack([drops, drops]), [20.0, NAN])  # a replicate without B_noise: none
    assert per_replicate[0] == pytest.approx(0.1) and np.isnan(per_replicate[1])
    _, low, on_low = fit_eq18(BS, BS * 0 + 0.1)  # flat: the knee is below every batch size
    _, high, on_high = fit_eq18(BS, BS * 1e-3)  # still rising: the knee is above them
    assert on_low[0] and low[0] == pytest.approx(BS.min() / 100) and on_high[0] and high[0] > BS.max()
    assert np.isnan(fit_eq18(BS[:2], [0.1, 0.2])[1][0])  # two batch sizes cannot fit two parameters


def test_the_drops_give_back_the_b_noise_they_were_drawn_with():
    t5 = theorem5(drop_b_noise=20.0, drop_noise=0.002)
    lo, hi = t5["b_noise_eq18_ci"]
    assert lo <= t5["b_noise_eq18"] <= hi and t5["b_noise_eq18"] == pytest.approx(20.0, rel=0.1)
    assert t5["dl_max_eq18"] == pytest.approx(0.1, rel=0.05) and t5["dl_max"] == pytest.approx(0.1, rel=0.05)
    assert t5["b_noise_eq22"] == pytest.approx(20.0, rel=0.15) and t5["criterion"] == "drop"
    # within 15%, or within the noise of one run (0.002) where the top is small: at B = 1 (0.005) the picked LR is
    # near random, so the cross-fitted drop sits below the top (max_drop: it is conservative)
    assert t5["max_drop"] == pytest.approx(eq18(BS, 0.1, 20.0).tolist(), rel=0.15, abs=0.002)
    assert all(a <= m <= b for m, (a, b) in zip(t5["max_drop"], t5["max_drop_ci"]))
    assert t5["predicted"] == pytest.approx(eq18(BS, t5["dl_max"], t5["b_noise_eq22"]).tolist())
    assert len(t5["band"]["b"]) == len(t5["band"]["lo"]) == 60


def test_drops_drawn_with_another_b_noise_are_inconsistent_with_eq22():
    t5 = theorem5(drop_b_noise=200.0, drop_noise=0.002)  # S and E say 20, the drops 200
    assert t5["b_noise_eq18"] == pytest.approx(200.0, rel=0.2) and t5["verdict"] == "inconsistent"
    assert t5["b_noise_eq18_ci"][0] > t5["b_noise_eq22_ci"][1]


@pytest.mark.parametrize("rng", range(4))
def test_equal_b_noise_is_recovered_from_the_drops_and_called_consistent(rng):
    t5 = theorem5(rng=rng, drop_b_noise=20.0, drop_noise=0.005)  # moderate noise: the top at B = 1 is 0.005
    assert t5["b_noise_eq18"] == pytest.approx(20.0, rel=0.15) and t5["verdict"] == "consistent"


@pytest.mark.parametrize("rng", range(4))
def test_unequal_b_noise_is_called_inconsistent_at_moderate_noise(rng):
    t5 = theorem5(rng=rng, drop_b_noise=200.0, drop_noise=0.005)  # S and E say 20, the drops 200
    assert t5["verdict"] == "inconsistent" and t5["b_noise_eq18_ci"][0] > t5["b_noise_eq22_ci"][1]


def test_flat_drops_leave_b_noise_unresolved():
    t5 = theorem5()  # synthetic.table's default: the same top drop at every B
    assert math.isnan(t5["b_noise_eq18"]) and math.isnan(t5["dl_max_eq18"]) and t5["verdict"] == "unresolved"
    assert "search bound" in t5["note"] and t5["b_noise_eq18_bound_share"] > 0.025
    assert t5["b_noise_eq18_ci"][0] == pytest.approx(BS.min() / 100)  # the interval reaches the bound
    assert "lies wholly above" in t5["note"]  # the drops' upper limit is far below Eq 22's B_noise


def test_too_few_seeds_give_no_interval_and_no_verdict():
    t5 = theorem5(seeds=4, drop_b_noise=20.0, drop_noise=0.002)  # enough to cross-fit, too few for an interval
    assert t5["b_noise_eq18"] == pytest.approx(20.0, rel=0.1)  # an estimate, without an interval
    assert all(math.isnan(x) for ci in (t5["b_noise_eq18_ci"], t5["dl_max_ci"], *t5["max_drop_ci"]) for x in ci)
    assert t5["verdict"] == "unresolved" and "too few seeds" in t5["note"] and t5["band"] == {}
    t5 = theorem5(seeds=3, drop_b_noise=20.0, drop_noise=0.002)  # halves of 2 and 1: no cross-fitted drop at all
    assert all(math.isnan(x) for x in t5["max_drop"]) and math.isnan(t5["b_noise_eq18"])
    assert "needs 2 seeds per half, 4 in all; 3 were run" in t5["note"] and t5["verdict"] == "unresolved"


def test_a_criterion_that_is_no_drop_reads_the_papers_drop():
    frame = synthetic.table(seeds=5, rng=3, drop_b_noise=20.0, drop_noise=0.002)
    t5 = fit_target(Grid.from_table(frame, 1.0), n_boot=50, criterion="steps").theorem5
    assert t5["criterion"] == "drop" and "by the drop criterion" in t5["note"]
    assert t5["b_noise_eq18"] == pytest.approx(20.0, rel=0.1)


def test_the_figure_has_a_theorem5_panel_per_target():
    frame = synthetic.table(seeds=5, rng=3, drop_b_noise=200.0, drop_noise=0.002)
    fit = fit_target(Grid.from_table(frame, 1.0), n_boot=50)
    fig = surge_figure([fit], "t")
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith("Theorem 5")]
    assert "inconsistent" in ax.get_title() and "B_noise from the drops" in ax.get_title()
    assert ax.get_xscale() == "log"  # the batch sizes are geometric


@pytest.mark.slow
def test_render_writes_theorem5_into_the_json_the_text_and_the_figure(tmp_path, capsys):
    frame = synthetic.table(seeds=5, rng=3, drop_b_noise=20.0, drop_noise=0.002)
    synthetic.write_store(tmp_path / "store", "smoke", frame)
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "report.n_boot=100"])
    png = render(cfg, "test")
    assert png.stat().st_size > 20_000
    text = png.with_suffix(".json").read_text()
    assert "NaN" not in text  # strict JSON
    (t5,) = [t["theorem5"] for t in json.loads(text)["targets"]]
    assert t5["b_noise_eq18"] == pytest.approx(20.0, rel=0.1) and t5["verdict"] in ("consistent", "inconsistent")
    assert len(t5["max_drop"]) == len(t5["max_drop_ci"]) == len(BS)
    steps = json.loads(text)["steps_criterion"][0]["theorem5"]
    assert steps["criterion"] == "drop"
    line = next(line for line in capsys.readouterr().out.splitlines() if "Theorem 5 (Eq 18)" in line)
    assert "B_noise from the drops = " in line and "against Eq 22's" in line and line.count(":") >= 3
