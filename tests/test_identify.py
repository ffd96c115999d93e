"""Identifiability (surge_repro/analysis/identify.py), the criteria (fit.CRITERIA) and the seed budget
(surge_repro/analysis/budget.py) on synthetic grids with known optima and chosen noise (tests/synthetic.py)."""

import numpy as np
import pytest
import synthetic

from surge_repro.analysis.budget import main as budget_main
from surge_repro.analysis.budget import plan, seeds_needed
from surge_repro.analysis.fit import Grid, fit_target
from surge_repro.analysis.identify import (
    EDGE,
    RESOLVED,
    UNRESOLVED,
    surge_verdict,
    verdicts,
)
from surge_repro.analysis.theory import LAWS

LRS = np.geomspace(1e-5, 1e-2, 16)  # steps of x1.58: "within one grid step" means within that factor
BS = [1.0, 4.0, 20.0, 100.0, 400.0]


def fit(noise, law="adam", seeds=5, rng=0, criterion="drop", n_boot=300, **kwargs):  # 5: the fewest with intervals
    frame = synthetic.table(law=law, eps_max=1e-3, b_noise=20.0, batch_sizes=BS, lrs=LRS, seeds=seeds,
                            drop_noise=noise, rng=rng, **kwargs)
    return fit_target(Grid.from_table(frame, 1.0), n_boot=n_boot, criterion=criterion)


def true_index(law, b):
    eps = LAWS[law][1](np.asarray(b, float), 1e-3, 20.0)
    return np.argmin(np.abs(np.log(LRS)[None, :] - np.log(eps)[:, None]), axis=1)


def test_low_noise_resolves_every_optimum_and_supports_the_surge():
    f = fit(noise=0.002)
    assert verdicts(f) == [RESOLVED] * len(BS)
    v = surge_verdict(f)
    assert v["verdict"] == "surge supported" and v["rises"] and v["falls"]
    assert "rise and fall supported" in v["text"]


def test_a_dip_inside_a_rise_is_not_called_a_surge():
    """Optima that rise, dip at one B and rise again hold a resolved rise-then-fall pair, but Eq 2 has one peak."""
    import pandas as pd

    kw = dict(law="sgd_alpha1", b_noise=20.0, lrs=LRS, seeds=5, drop_noise=0.002, rng=0)
    rising = synthetic.table(eps_max=1e-3, batch_sizes=[1.0, 4.0, 100.0, 400.0], **kw)
    dip = synthetic.table(eps_max=1e-4, batch_sizes=[20.0], **kw)  # a tenth of the rising law's optimum at B = 20
    f = fit_target(Grid.from_table(pd.concat([rising, dip], ignore_index=True), 1.0), n_boot=300)
    assert verdicts(f) == [RESOLVED] * len(BS)
    v = surge_verdict(f)
    assert (4.0, 20.0) in v["falls"] and (20.0, 100.0) in v["rises"] and (1.0, 4.0) in v["rises"]
    assert v["verdict"] == "not single-peaked" and "falls (B 4 -> 20) and then rises again (B 20 -> 100)" in v["text"]


def test_a_saturating_law_shows_a_rise_and_no_fall():
    v = surge_verdict(fit(noise=0.002, law="sgd_alpha1"))
    assert v["verdict"] == "rise only" and not v["falls"]


def test_noise_that_swamps_the_signal_is_called_not_identifiable():
    f = fit(noise=1.0)
    states = verdicts(f)
    assert states.count(UNRESOLVED) + states.count(EDGE) == len(BS) and RESOLVED not in states
    assert surge_verdict(f)["verdict"] == "no trend resolved"


def test_an_optimum_beyond_the_grid_is_on_its_edge():
    frame = synthetic.table(eps_max=1e-3, b_noise=20.0, batch_sizes=BS, lrs=LRS[:8], seeds=4, drop_noise=0.002)
    f = fit_target(Grid.from_table(frame, 1.0), n_boot=100)  # the grid stops at 4e-4, below every optimum
    assert verdicts(f) == [EDGE] * len(BS) and set(f.edge_side) == {"top"}


@pytest.mark.slow
def test_intervals_cover_the_true_optimum_at_their_stated_rate():
    covered, total = 0, 0
    for draw in range(60):
        f = fit(noise=0.02, rng=100 + draw, n_boot=200)
        truth = LRS[true_index("adam", BS)]
        for (lo, hi), t in zip(f.lr_opt_ci, truth):
            covered += lo * 0.999 <= t <= hi * 1.001
            total += 1
    assert covered / total >= 0.93  # 95% intervals; the optimum sits on a lattice, so they are a little wide


def test_fewest_steps_criterion_finds_the_optimum_when_the_drop_is_noise():
    by_drop = fit(noise=1.0, criterion="drop")
    by_steps = fit(noise=1.0, criterion="steps")
    assert verdicts(by_steps) == [RESOLVED] * len(BS)  # S carries 3% noise here, the drop 10x its signal
    assert list(np.argmin(np.abs(np.log(LRS)[None, :] - np.log(by_steps.lr_opt)[:, None]), axis=1)) == \
        list(true_index("adam", BS))
    assert verdicts(by_drop).count(RESOLVED) < len(BS)


def test_steps_criterion_counts_a_run_that_never_reached_the_target_as_speed_zero():
    frame = synthetic.table(batch_sizes=[8.0], lrs=LRS, seeds=2, drop_noise=0.0)
    best = frame.steps_to_target.idxmin()
    frame.loc[best, ["steps_to_target", "examples_to_target"]] = np.nan  # one seed of the best LR never got there
    frame.loc[best, "reached"] = False
    grid = Grid.from_table(frame, 1.0)
    score = grid.score("steps")
    assert np.isfinite(score).all() and (score == 0).sum() == 1


def test_drop_mean_criterion_reads_the_mean_over_windows():
    frame = synthetic.table(batch_sizes=[8.0], lrs=LRS, seeds=2, drop_noise=0.0)
    frame["loss_drop_mean"] = -frame["loss_drop_after_k"]  # reversed: its optimum is another LR
    by_mean = fit_target(Grid.from_table(frame, 1.0), n_boot=20, criterion="drop_mean")
    by_drop = fit_target(Grid.from_table(frame, 1.0), n_boot=20, criterion="drop")
    assert by_mean.lr_opt != by_drop.lr_opt and by_mean.criterion == "drop_mean"


def test_the_seed_budget_holds_on_a_simulated_follow_up():
    kwargs = dict(eps_max=1e-3, b_noise=20.0, batch_sizes=[20.0], lrs=LRS, drop_noise=0.1)
    pilot = Grid.from_table(synthetic.table(seeds=8, rng=7, **kwargs), 1.0)
    (n,) = seeds_needed(pilot, "drop", confidence=0.9)
    assert n is not None and n > 8  # this noise needs more seeds than the pilot has

    def resolved_share(seeds, draws=30):
        hits = 0
        for d in range(draws):
            follow = fit_target(Grid.from_table(synthetic.table(seeds=seeds, rng=1000 + d, **kwargs), 1.0), n_boot=1)
            hits += abs(int(np.argmin(np.abs(np.log(LRS) - np.log(follow.lr_opt[0])))) -
                        int(true_index("adam", [20.0])[0])) <= 1
        return hits / draws

    assert resolved_share(n) >= 0.8  # the budget's seeds put the optimum within one step as planned (0.9)
    assert resolved_share(max(1, n // 8)) < resolved_share(n)


def test_budget_plan_and_command_on_a_store(tmp_path, capsys):
    frame = synthetic.table(batch_sizes=[4.0, 20.0], lrs=LRS, seeds=4, drop_noise=0.02)
    frame["wall_s"], frame["pack_id"], frame["pack_points"] = 2.0, frame["signature"], 1
    table = plan(frame, confidence=0.9)
    assert list(table.batch_size) == [4.0, 20.0] and (table.points == table.seeds_needed * len(LRS)).all()
    assert np.allclose(table.core_hours, table.points * 2.0 / 3600)
    synthetic.write_store(tmp_path / "store", "smoke", frame)
    assert budget_main(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", "report.confidence=0.9"]) == 0
    out = capsys.readouterr().out
    assert "seed budget for smoke at target 1" in out and "seeds_needed" in out and "core-hours" in out
    assert budget_main(["+experiment=smoke", f"paths.store={tmp_path / 'empty'}"]) == 1


@pytest.mark.parametrize("criterion", ["drop", "steps"])
def test_verdict_carries_the_numbers_behind_it(criterion):
    v = surge_verdict(fit(noise=0.002, criterion=criterion))
    assert len(v["per_batch"]) == len(BS) and all(0 <= s <= 1 for s in v["within_one_step"])
    assert v["confidence"] == 0.95
