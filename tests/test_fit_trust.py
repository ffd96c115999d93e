"""Every number trustworthy: no optimum where none can be found (no run reached the target, a tie for the best
score), an edge only where nothing was measured beyond the optimum, and no interval from too few seeds; the text,
the JSON and the figure say why (surge_repro/analysis/fit.py, identify.py, report.py, plots.py, budget.py and
reports/fig7_table.py, on synthetic grids from tests/synthetic.py)."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic

from surge_repro.analysis.budget import plan
from surge_repro.analysis.fit import (
    MIN_SEEDS,
    Grid,
    distinct_resamples,
    fit_experiment,
    fit_target,
    interval_position,
    optimal_lr,
)
from surge_repro.analysis.identify import b_noise_trend, surge_verdict, verdicts
from surge_repro.analysis.theory import LAWS, adam_lr
from surge_repro.config import compose
from surge_repro.report.plots import surge_figure
from surge_repro.report.render import describe, render

ROOT = Path(__file__).resolve().parent.parent
LRS = np.geomspace(1e-5, 1e-2, 16)
BS = [1.0, 4.0, 20.0, 100.0, 400.0]
NAN = math.nan


def table(seeds=5, **kwargs) -> pd.DataFrame:
    return synthetic.table(eps_max=1e-3, b_noise=20.0, batch_sizes=BS, lrs=LRS, seeds=seeds, drop_noise=0.002,
                           **kwargs)


def never_reached(frame: pd.DataFrame, rows) -> None:
    """The runs ``rows`` diverged or crawled: they exist, but never reached the target (the store's NaN S and drop)."""
    cols = ["steps_to_target", "examples_to_target", "loss_drop_after_k", "loss_drop_mean", "loss_after_k"]
    frame.loc[rows, cols] = np.nan
    frame.loc[rows, "reached"] = False


def optimum_index(b: float) -> int:
    return int(np.argmin(np.abs(np.log(LRS) - np.log(LAWS["adam"][1](b, 1e-3, 20.0)))))


def texts(fig) -> list[str]:
    """Every string a reader sees in the figure: titles, texts, legend entries and titles."""
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [ax.get_title()] + [t.get_text() for t in ax.texts]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()] + [ax.get_legend().get_title().get_text()]
    return out


# (4) no run reached the target: no optimum, and the reason at that B


@pytest.mark.parametrize("criterion", ["steps", "drop"])
def test_no_optimum_where_no_run_reached_the_target(criterion):
    frame = table()
    never_reached(frame, frame.batch_size == 100)  # every LR diverged or crawled there
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=100, criterion=criterion)
    i = BS.index(100.0)
    assert math.isnan(f.lr_opt[i]) and all(math.isnan(x) for x in f.lr_opt_ci[i])
    assert sum(f.lr_opt_dist[i]) == 0  # no replicate invents one either
    assert f.no_optimum == [None, None, None, "not reached", None]
    assert verdicts(f)[i] == "not reached"
    assert any("no run reached the target at B = [100]" in n for n in f.notes)


def test_a_replicate_without_a_run_that_reached_has_no_optimum():
    frame = table()
    j = optimum_index(20.0)
    at = frame.batch_size == 20
    never_reached(frame, at & ~(np.isclose(frame.lr, LRS[j]) & (frame.seed == 0)))  # one run reached, of seed 0
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=400, criterion="steps")
    i = BS.index(20.0)
    assert f.lr_opt[i] == pytest.approx(LRS[j]) and f.lr_opt_ci[i] == pytest.approx([LRS[j], LRS[j]])
    dist = np.array(f.lr_opt_dist[i])
    assert dist[0] == 0 and dist.sum() == pytest.approx(dist[j])  # the replicates without seed 0 have none
    assert 0.55 < dist.sum() < 0.8  # 1 - (4/5)^5 = 0.67 of the replicates draw seed 0


def test_the_report_says_why_a_batch_size_has_no_optimum():
    frame = table()
    never_reached(frame, frame.batch_size == 100)
    grid = Grid.from_table(frame, 1.0)
    drop, steps = fit_target(grid, n_boot=100), fit_target(grid, n_boot=100, criterion="steps")
    row = next(line for line in describe(drop, steps).splitlines() if line.startswith("  100 "))
    assert "no run reached the target" in row and f"{LRS[0]:.3g}" not in row  # not "fewest steps 1e-05 [...]"
    fig = surge_figure([drop], "t", verdicts=[surge_verdict(drop)], overlay=[steps],
                       overlay_verdicts=[surge_verdict(steps)])
    assert any("no run reached" in t for t in texts(fig))


# (5) an edge only where nothing was measured beyond the optimum


def test_an_optimum_bracketed_across_a_gap_is_not_on_the_edge():
    mean = np.array([[NAN, 0.1, NAN, 0.3, NAN, 0.2],   # this B's LRs sit between the lattice's others
                     [0.1, 0.2, NAN, NAN, NAN, 0.3],   # the top LR: nothing beyond it
                     [NAN, NAN, 0.4, 0.1, NAN, NAN]])  # the lowest LR measured here: nothing below it
    best, edge, tie = optimal_lr(mean)
    assert best.tolist() == [3, 5, 2] and edge.tolist() == [False, True, True] and not tie.any()


def test_a_run_that_never_scored_brackets_the_optimum_when_it_was_measured():
    mean = np.array([[0.1, 0.3, -math.inf, NAN],  # the next LR diverged inside the window, the one after: no run
                     [NAN, 0.3, 0.2, 0.1]])       # the lowest LR's runs never reached the target
    measured = np.array([[True, True, True, False], [True, True, True, True]])
    assert optimal_lr(mean, measured)[1].tolist() == [False, False]  # worse runs beyond: bracketed
    assert optimal_lr(mean)[1].tolist() == [True, True]  # from the means alone, nothing is known beyond


def test_an_lr_grid_that_shifts_with_the_batch_size_keeps_its_interior_optima():
    lattice = np.geomspace(1e-5, 1e-2, 31)
    frame = pd.concat([synthetic.table(eps_max=1e-3, b_noise=20.0, batch_sizes=[b], lrs=lattice[i % 2::2], seeds=5,
                                       drop_noise=0.002, rng=i) for i, b in enumerate(BS)])
    f = fit_experiment(frame, n_boot=100)[0]
    assert len(f.lrs) == 31 and np.isfinite(f.lr_opt).all()
    assert not any(f.on_edge) and f.edge_side == [None] * len(BS)
    frame["wall_s"], frame["pack_id"], frame["pack_points"] = 1.0, frame["signature"], 1
    assert (plan(frame, confidence=0.5)["note"] == "").all()  # the budget's edge flag follows the same rule


def test_diverged_lrs_above_the_optimum_bracket_it():
    frame = table()
    for b in BS:  # every LR above the optimum diverged before the target: present, no drop, no S
        never_reached(frame, (frame.batch_size == b) & (frame.lr > LRS[optimum_index(b)] * 1.01))
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=100)
    assert [optimum_index(b) for b in BS] == [int(np.argmin(np.abs(LRS - x))) for x in f.lr_opt]
    assert not any(f.on_edge) and f.edge_side == [None] * len(BS)
    frame = table()[lambda t: t.lr < 2e-4]  # the LRs stop below every optimum: the top edge
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=50)
    assert all(f.on_edge) and set(f.edge_side) == {"top"}


# (14) ties: no optimum, flagged, left out of every fit; fig7 on empty and flat tables


def test_a_tie_for_the_best_mean_is_no_optimum():
    mean = np.array([[0.1, 0.3, 0.3, 0.2],
                     [0.1, 0.6 / 3, (0.1 + 0.2 + 0.3) / 3, 0.0],  # 0.2 and 0.20000000000000004: float noise
                     [0.1, 0.3, 0.2999, 0.2]])
    best, edge, tie = optimal_lr(mean)
    assert best.tolist() == [-1, -1, 1] and tie.tolist() == [True, True, False] and not edge.any()
    best, _, tie = optimal_lr(np.stack([mean, mean[::-1]]))  # replicates x batch sizes x LRs
    assert best.tolist() == [[-1, -1, 1], [1, -1, -1]] and tie.tolist() == [[True, True, False], [False, True, True]]


def test_fit_target_flags_a_tie_and_fits_without_it():
    frame = table()
    j = optimum_index(20.0)
    at = (frame.batch_size == 20) & np.isclose(frame.lr, LRS[j + 1])
    frame.loc[at, "loss_drop_after_k"] = frame.loc[(frame.batch_size == 20) & np.isclose(frame.lr, LRS[j]),
                                                   "loss_drop_after_k"].to_numpy()  # seed by seed: every replicate
    frame["loss_drop_mean"] = frame["loss_drop_after_k"]
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=100)
    i = BS.index(20.0)
    assert math.isnan(f.lr_opt[i]) and f.no_optimum[i] == "tie" and sum(f.lr_opt_dist[i]) == 0
    assert f.tied_lrs[i] == pytest.approx([LRS[j], LRS[j + 1]]) and f.tied_lrs[0] == []
    assert verdicts(f)[i] == "tie" and any("tie" in n and "B = [20]" in n for n in f.notes)
    assert "tie" in next(line for line in describe(f).splitlines() if line.startswith("  20 "))
    assert math.isfinite(f.curve["adam"]["b_noise"])  # the other four batch sizes still fit


def fig7():
    return runpy.run_path(str(ROOT / "reports" / "fig7_table.py"))


@pytest.mark.parametrize("content", ["", "batch_size,lr,loss\n"], ids=["zero bytes", "header only"])
def test_fig7_on_an_empty_table_names_the_fix(tmp_path, capsys, content):
    (tmp_path / "t.csv").write_text(content)
    assert fig7()["main"]([str(tmp_path / "t.csv"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no rows" in err and "Fix:" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.png"))


def test_fig7_flags_ties_and_fits_nothing_on_a_flat_table(tmp_path, capsys):
    lrs = [1e-3, 2e-3, 4e-3]
    pd.DataFrame([(b, lr, 2.0) for b in (1, 2, 4, 8) for lr in lrs],
                 columns=["batch_size", "lr", "loss"]).to_csv(tmp_path / "flat.csv", index=False)
    script = fig7()
    assert script["main"]([str(tmp_path / "flat.csv"), "--out", str(tmp_path)]) == 0
    numbers = json.loads((tmp_path / "fig7_flat.json").read_text())
    assert numbers["tie"] == [True] * 4 and numbers["tied_lrs"] == [lrs] * 4
    assert numbers["lr_opt"] == [None] * 4 and numbers["fits"] == {} and numbers["used_in_fit"] == [False] * 4
    assert any("fewer than 3" in n for n in numbers["notes"]) and any("tie" in n for n in numbers["notes"])
    assert "256" not in json.dumps(numbers["fits"]) and "tie" in capsys.readouterr().out
    a = script["analyse"](script["read_table"](tmp_path / "flat.csv"))
    assert any("tie" in t for t in texts(script["figure"](a, "t", "tokens")))


def test_fig7_leaves_a_tied_batch_size_out_of_its_fits(tmp_path):
    rows = []
    for b in np.geomspace(1e4, 1e8, 9):
        best = adam_lr(b, 2e-3, 1e6)
        rows += [(b, lr, 2.5 + 0.05 * np.log(lr / best) ** 2) for lr in np.geomspace(1e-4, 1e-2, 30)]
    frame = pd.DataFrame(rows, columns=["batch_size", "lr", "loss"])
    b4 = frame.batch_size.unique()[4]
    low = frame[frame.batch_size == b4].loss.idxmin()
    frame.loc[low + 1, "loss"] = frame.loc[low, "loss"]  # its neighbour ties with the best cell
    frame.to_csv(tmp_path / "t.csv", index=False)
    script = fig7()
    a = script["analyse"](script["read_table"](tmp_path / "t.csv"))
    assert a["tie"].tolist() == [False] * 4 + [True] + [False] * 4 and not a["used_in_fit"][4]
    assert a["used_in_fit"].sum() == 8 and a["fits"]["adam"]["b_noise"] == pytest.approx(1e6, rel=0.1)


def test_fig7_brackets_optima_across_a_shifting_lr_grid(tmp_path):
    lattice = np.geomspace(1e-4, 1e-2, 41)
    rows = []
    for i, b in enumerate(np.geomspace(1e4, 1e8, 9)):  # each B measured on every other LR, alternately
        rows += [(b, lr, 2.5 + 0.05 * np.log(lr / adam_lr(b, 2e-3, 1e6)) ** 2) for lr in lattice[i % 2::2]]
    pd.DataFrame(rows, columns=["batch_size", "lr", "loss"]).to_csv(tmp_path / "t.csv", index=False)
    script = fig7()
    a = script["analyse"](script["read_table"](tmp_path / "t.csv"))
    assert not a["on_edge"].any() and a["used_in_fit"].all()


# (15) intervals need enough seeds; an estimate on or outside its interval is named


def test_the_seed_rule_counts_distinct_resamples():
    assert [distinct_resamples(n) for n in range(1, 6)] == [1, 3, 10, 35, 126]  # C(2n - 1, n)
    assert MIN_SEEDS == 5  # the fewest seeds with at least 1 / 2.5% = 40 distinct resamples


def test_three_seeds_give_no_interval_and_claim_nothing_that_needs_one():
    f = fit_target(Grid.from_table(table(seeds=3), 1.0), n_boot=200)
    rule = {k: f.interval[k] for k in ("enough_seeds", "n_seeds", "distinct_resamples", "min_seeds")}
    assert rule == {"enough_seeds": False, "n_seeds": 3, "distinct_resamples": 10, "min_seeds": 5}
    assert "resolved" in f.interval["note"] and "surge" in f.interval["note"]
    cis = [f.b_noise_ci, f.s_min_ci, f.peak_batch_size_ci, *f.lr_opt_ci, *f.eps_max_ci.values(),
           *[c[k] for c in f.curve.values() for k in ("b_noise_ci", "eps_max_ci")]]
    assert all(math.isnan(x) for ci in cis for x in ci) and f.law_band == {}
    assert set(verdicts(f)) == {"too few seeds"}
    v = surge_verdict(f)
    assert v["verdict"] == "too few seeds" and not v["rises"] and not v["falls"] and "surge" in v["text"]
    text = describe(f)
    assert "too few seeds" in text and "10 distinct" in text
    assert "[" not in next(line for line in text.splitlines() if "B_noise =" in line)
    fig = surge_figure([f], "t", verdicts=[v])
    assert any("too few seeds" in t for t in texts(fig))


def test_the_b_noise_trend_is_not_claimed_below_five_seeds():
    def draw(seeds):
        return pd.concat([synthetic.table(b_noise=bn, target=t, seeds=seeds, rng=i)
                          for i, (t, bn) in enumerate({2.0: 80.0, 1.5: 40.0, 1.0: 20.0}.items())])

    few = b_noise_trend(fit_experiment(draw(4), n_boot=50))
    assert few["verdict"] == "too few seeds" and not few["rises"] and not few["falls"] and "5 seeds" in few["text"]
    assert b_noise_trend(fit_experiment(draw(5), n_boot=50))["verdict"] == "falls as the loss falls"


def test_interval_position():
    assert interval_position(21.89, [-3.618, 21.89]) == "on"  # the Eq 22 on a 3-seed grid
    assert interval_position(25.78, [25.78, 2521.0]) == "on"
    assert interval_position(30.0, [31.0, 40.0]) == "outside"
    assert interval_position(35.0, [31.0, 40.0]) == "inside"
    assert interval_position(35.0, [NAN, NAN]) is None and interval_position(NAN, [1.0, 2.0]) is None


def test_an_estimate_on_its_own_interval_is_named_in_notes_text_and_figure():
    frame = synthetic.table(batch_sizes=BS, lrs=LRS, seeds=5, drop_noise=0.0, steps_noise=0.0)  # seeds agree
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=100)
    assert f.interval["enough_seeds"] and f.b_noise_ci[0] == f.b_noise == f.b_noise_ci[1]
    assert {"b_noise", "s_min", "eps_max/adam", "curve/adam/b_noise"} <= set(f.off_interval)
    note = next(n for n in f.notes if n.startswith("B_noise (Eq 22)"))
    assert "bootstrap interval" in note and "the replicates' spread" in note
    assert "lattice" in f.interval["lattice"]
    text = describe(f)
    assert note in text and text.count(f.interval["lattice"]) == 1
    fig = surge_figure([f], "t", verdicts=[surge_verdict(f)])
    assert any("on or outside its bootstrap interval" in t for t in texts(fig))


def test_render_writes_the_interval_rule_into_the_json_and_the_output(tmp_path, capsys):
    synthetic.write_store(tmp_path / "store", "smoke", table(seeds=3))
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "report.n_boot=50"])
    numbers = json.loads(render(cfg, "test").with_suffix(".json").read_text())
    (t,) = numbers["targets"]
    assert t["interval"]["enough_seeds"] is False and t["interval"]["distinct_resamples"] == 10
    assert t["b_noise_ci"] == [None, None] and t["verdict"]["verdict"] == "too few seeds"
    assert t["no_optimum"] == [None] * len(BS) and numbers["steps_criterion"][0]["interval"]["n_seeds"] == 3
    assert "too few seeds" in capsys.readouterr().out
