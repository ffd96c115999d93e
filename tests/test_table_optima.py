"""Sub-grid optimal LRs with intervals from one-run-per-cell tables, and the laws' intervals (analysis/table_optima.py),
on tables drawn from a known surface: loss = a (log lr - log lr_opt(B))^2 + c + noise, lr_opt(B) by Eq 2 with known
eps_max and B_noise. Then Fig. 7's report rendered on a table the test writes, with the new JSON keys."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surge_repro.analysis.table_optima import FLAGS, fit_laws, fitted_mask, table_optima
from surge_repro.analysis.theory import adam_lr

ROOT = Path(__file__).resolve().parent.parent
EPS_MAX, B_NOISE = 2e-3, 1e6


def surface(seed: int, noise: float, n_lr: int = 8, curvature: float = 0.05):
    """8 batch sizes around B_NOISE, n_lr LRs from 1e-4 to 3e-2 (8: a lattice 2.26x apart, as coarse as DeepSeek's),
    shifted off the optimum's lattice by a random factor; one loss per cell."""
    rng = np.random.default_rng(seed)
    b = np.geomspace(B_NOISE / 30, B_NOISE * 30, 8)
    lrs = np.geomspace(1e-4, 3e-2, n_lr) * np.exp(rng.uniform(-0.3, 0.3))
    truth = adam_lr(b, EPS_MAX, B_NOISE)
    loss = 2.5 + curvature * np.log(lrs[None, :] / truth[:, None]) ** 2 + rng.normal(0, noise, (len(b), n_lr))
    return b, lrs, loss, truth


def test_the_sub_grid_optimum_beats_the_argmin_on_a_coarse_lattice():
    err_argmin, err_vertex = [], []
    for seed in range(40):
        b, lrs, loss, truth = surface(seed, noise=0.005)
        o = table_optima(b, lrs, loss, n_boot=100, seed=seed)
        assert np.isfinite(o["lr_opt"]).all() and not any(o["flags"])
        err_argmin += np.abs(np.log(o["lr_argmin"] / truth)).tolist()
        err_vertex += np.abs(np.log(o["lr_opt"] / truth)).tolist()
    # measured: mean |log error| 0.23 for the argmin (the lattice's half step is 0.41), 0.017 for the vertex
    assert np.mean(err_vertex) < 0.15 * np.mean(err_argmin)


@pytest.mark.parametrize("noise", [0.005, 0.02])
def test_the_intervals_cover_the_true_optimum_near_their_nominal_95_percent(noise):
    covered = []
    for seed in range(150):
        b, lrs, loss, truth = surface(seed, noise=noise)
        o = table_optima(b, lrs, loss, n_boot=400, seed=seed)
        lo, hi = o["lr_opt_ci"].T
        assert np.all(lo <= o["lr_opt"]) and np.all(o["lr_opt"] <= hi)
        covered += ((lo <= truth) & (truth <= hi)).tolist()
    # 1200 intervals each; measured 0.949 (noise 0.005) and 0.939 (0.02); binomial SD at 95%: 0.006
    assert len(covered) == 1200 and 0.92 <= np.mean(covered) <= 0.975


def test_a_fine_noisy_lattice_widens_the_window_until_the_curvature_shows():
    b, lrs, loss, truth = surface(0, noise=0.002, n_lr=70)  # 5 LRs span 0.33 in log LR: a rise of 0.0014, < noise
    o = table_optima(b, lrs, loss, n_boot=200)
    span = np.log(o["window_lrs"][:, 1] / o["window_lrs"][:, 0])
    assert np.all(span > 5 * np.log(lrs[1] / lrs[0])) and np.isfinite(o["lr_opt"]).all()
    assert np.mean(np.abs(np.log(o["lr_opt"] / truth))) < 0.06  # measured over 150 tables: 0.026 (argmin 0.088)


def test_ties_no_curvature_clipped_flat_and_too_few_lrs_are_flagged():
    b, lrs, loss, _ = surface(1, noise=0.002)
    j = int(np.argmin(loss[1]))
    loss[1, j + 1] = loss[1, j]  # its neighbour ties with the row's argmin
    loss[2] = 2.5 - 0.05 * np.log(lrs / lrs[3]) ** 2  # a cap: no minimum anywhere
    loss[3] = 2.5 - 0.3 * np.log(lrs)  # falls across the whole range: the optimum lies beyond the largest LR
    loss[3] += 0.002 * np.log(lrs / lrs[0]) ** 2  # convex, vertex far beyond the range
    loss[4] = 2.5 + 1e-4 * np.log(lrs / lrs[4]) ** 2 + np.random.default_rng(0).normal(0, 0.002, len(lrs))
    loss[5, 2:] = np.nan  # two LRs measured only
    o = table_optima(b, lrs, loss, n_boot=400)
    assert o["flags"][1] == ["tie"] and math.isnan(o["lr_opt"][1]) and len(o["tied_lrs"][1]) == 2
    assert "no_curvature" in o["flags"][2] and math.isnan(o["lr_opt"][2])
    assert {"on_edge", "beyond_range"} <= set(o["flags"][3]) and o["lr_opt"][3] == pytest.approx(lrs[-1])
    assert "flat" in o["flags"][4] and np.log(o["lr_opt_ci"][4, 1] / o["lr_opt_ci"][4, 0]) > 0.5 * np.log(300)
    assert "few_lrs" in o["flags"][5] and math.isnan(o["lr_opt"][5])
    assert not o["flags"][0] and not o["flags"][6] and not o["flags"][7]
    assert all(f in FLAGS for flags in o["flags"] for f in flags)
    assert fitted_mask(o).tolist() == [True] + [False] * 5 + [True, True]


def test_the_law_fit_intervals_cover_the_known_b_noise():
    hits = []
    for seed in range(20):
        b, lrs, loss, _ = surface(seed, noise=0.02)
        o = table_optima(b, lrs, loss, n_boot=200, seed=seed)
        use = fitted_mask(o)
        fit = fit_laws(b[use], o["lr_opt"][use], o["draws"][:, use], laws=("adam",))["adam"]
        lo, hi = fit["b_noise_ci"]
        assert lo <= fit["b_noise"] <= hi and fit["n_boot"] == 200 and fit["at_bound_share"] == 0
        band = fit["band"]
        assert np.all(np.array(band["lo"]) <= np.array(band["hi"]))
        hits.append(lo <= B_NOISE <= hi)
    # measured over 40 tables with 300 replicates: B_noise covered in 38, eps_max in 39
    assert sum(hits) >= 17


def write_table(path: Path) -> Path:
    """A DeepSeek-like table (8 B x 8 LRs 2x apart, noise 0.006) with one flat row and one tie."""
    rng = np.random.default_rng(3)
    b = np.geomspace(2 ** 17, 2 ** 24, 8)
    lrs = 3e-4 * 2.0 ** np.arange(8)
    rows = [(bi, lr, 2.8 + (3e-4 if i == 6 else 0.03) * np.log(lr / adam_lr(bi, 3e-3, 2e6)) ** 2
             + rng.normal(0, 0.006)) for i, bi in enumerate(b) for lr in lrs]
    frame = pd.DataFrame(rows, columns=["batch_size", "lr", "loss"])
    last = frame[frame.batch_size == b[-1]].loss.idxmin()
    frame.loc[last + 1, "loss"] = frame.loc[last, "loss"]
    frame.to_csv(path, index=False)
    return path


def test_fig7_writes_the_intervals_flags_and_bands(tmp_path, capsys):
    script = runpy.run_path(str(ROOT / "reports" / "fig7_table.py"))
    table = write_table(tmp_path / "t.csv")
    assert script["main"]([str(table), "--out", str(tmp_path), "--n-boot", "300"]) == 0
    n = json.loads((tmp_path / "fig7_t.json").read_text())
    assert (tmp_path / n["figure"]).stat().st_size > 50_000
    assert n["n_boot"] == 300 and n["noise_df"] == 14 and 0.004 < n["noise_sd"] < 0.009  # drawn with 0.006
    assert n["flags"][6] == ["beyond_range", "flat"] and n["flags"][7] == ["tie"] and not any(n["flags"][:6])
    assert n["lr_opt"][7] is None and n["lr_opt_ci"][7] == [None, None] and n["lr_argmin"][7] is None
    for (lo, hi), lr in zip(n["lr_opt_ci"][:6], n["lr_opt"][:6]):
        assert lo <= lr <= hi
    assert n["used_in_fit"] == [True] * 6 + [False] * 2 and set(n["flags_mean"]) == set(FLAGS)
    adam = n["fits"]["adam"]
    assert adam["b_noise_ci"][0] < 2e6 < adam["b_noise_ci"][1]
    assert adam["eps_max_ci"][0] < 3e-3 < adam["eps_max_ci"][1]
    assert {"band", "at_bound_share", "n_boot"} <= set(adam) and len(adam["band"]["lo"]) == 200
    assert {"sgd_alpha1", "sgd_alpha0.5"} <= set(n["fits"])
    assert any(note.startswith("flat") for note in n["notes"]) and any("tie" in note for note in n["notes"])
    out = capsys.readouterr().out
    assert "beyond_range, flat" in out and "B_noise = 1.882M [" in out
    a = script["analyse"](script["read_table"](table), n_boot=100)
    fig = script["figure"](a, "t", "tokens")
    shown = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "clipped, flat" in shown and "tie: no optimum" in shown
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("95% interval" in t for t in legend) and any("[" in t and "B_noise" in t for t in legend)


def test_fig7_gives_no_intervals_without_residual_degrees_of_freedom(tmp_path):
    rows = [(b, lr, 2.0 + 0.1 * np.log(lr / 2e-3 / b ** 0.1) ** 2) for b in (1, 2, 4, 8) for lr in (1e-3, 2e-3, 4e-3)]
    pd.DataFrame(rows, columns=["batch_size", "lr", "loss"]).to_csv(tmp_path / "three.csv", index=False)
    script = runpy.run_path(str(ROOT / "reports" / "fig7_table.py"))
    assert script["main"]([str(tmp_path / "three.csv"), "--out", str(tmp_path)]) == 0
    n = json.loads((tmp_path / "fig7_three.json").read_text())
    assert n["noise_df"] == 0 and n["noise_sd"] is None and all(ci == [None, None] for ci in n["lr_opt_ci"])
    assert all(lr is not None for lr in n["lr_opt"]) and any("no intervals" in note for note in n["notes"])
    assert n["fits"]["adam"]["b_noise_ci"] == [None, None] and n["fits"]["adam"]["band"] == {}
