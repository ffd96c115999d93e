"""Every figure's report script, the B_noise-against-target summary, and reports/index.py, on stores drawn from the
laws (tests/synthetic.py) under the registry's experiment names, whether or not their configs exist yet."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic
from test_data import write_fashion_mnist

from surge_repro.analysis.fit import fit_experiment
from surge_repro.analysis.identify import b_noise_trend
from surge_repro.point import signature
from surge_repro.report import figures
from surge_repro.report.plots import surge_figure
from surge_repro.sweep import grid_points

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"fig4a_distilgpt2_eli5_adam00": "sequences", "fig4b_distilgpt2_eli5_adam": "sequences",
         "fig5_moe_redpajama": "tokens", "fig6_distilgpt2_eli5_fine": "sequences", "shakespeare_small": "sequences"}
NEW_SCRIPTS = ["fig4_distilgpt2_eli5.py", "fig5_moe_redpajama.py", "fig6_distilgpt2_eli5_fine.py",
               "shakespeare_small.py", "vit_cifar.py"]  # fig3 has its own test below


def write_points(store: Path, experiment: str, frame: pd.DataFrame, unit: str = "examples", names=None) -> None:
    """Each run of ``frame`` (a row per target) as a done point; ``names`` maps (B, LR, seed) to the signature the
    sweep gives that point, so that status counts it."""
    for (b, lr, seed), rows in frame.groupby(["batch_size", "lr", "seed"]):
        sig = names[(int(b), f"{lr:.6g}", int(seed))] if names else rows["signature"].iloc[0]
        targets = [{"target": r.target_loss, "steps": r.steps_to_target, "examples": r.examples_to_target,
                    "probe_loss": r.loss_at_target, "probe_loss_after_k": r.loss_after_k,
                    "loss_drop": r.loss_drop_after_k, "reached": True} for r in rows.itertuples()]
        point = {"task": "synthetic", "model": "law", "optimizer": "adam", "batch_size": int(b), "batch_unit": unit,
                 "lr": float(f"{lr:.6g}"), "beta1": 0.9, "beta2": 0.999, "seed": int(seed), "k": 10}
        d = store / experiment / sig
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps({"status": "done", "experiment": experiment, "signature": sig,
                                                    "point": point, "targets": targets, "steps": 1,
                                                    "examples_seen": 0, "wall_s": 0.1}))


def draw(targets_b_noise: dict[float, float], seeds: int = 2, **kw) -> pd.DataFrame:
    """One table over several targets, each with its own B_noise (the same runs: one signature per (B, LR, seed))."""
    return pd.concat([synthetic.table(b_noise=bn, target=t, seeds=seeds, rng=i, **kw)
                      for i, (t, bn) in enumerate(targets_b_noise.items())])


def run_script(script: str, *argv: str) -> int:
    old = sys.argv
    sys.argv = [str(ROOT / "reports" / script), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = old
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("script", NEW_SCRIPTS)
def test_each_new_report_draws_its_experiments_in_their_units(tmp_path, script):
    _, items = figures.by_script(script)
    for item in items:
        unit = UNITS.get(item.experiment, "examples")
        scale = 1e5 if unit == "tokens" else 1.0
        frame = draw({3.0: 20 * scale, 2.5: 40 * scale}, batch_sizes=scale * np.array([2, 5, 10, 20, 50, 100]),
                     lrs=np.geomspace(1e-4, 1e-2, 7))
        write_points(tmp_path / "store", item.experiment, frame, unit)
    code = run_script(script, f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                      "report.n_boot=50")
    assert code == 0
    for item in items:
        numbers = json.loads((tmp_path / "fig" / f"{item.experiment}.json").read_text())
        assert (tmp_path / "fig" / numbers["figure"]).stat().st_size > 20_000
        assert numbers["batch_unit"] == UNITS.get(item.experiment, "examples")
        assert numbers["title"] == figures.TITLES[script]
        assert numbers["command"].startswith(f"python reports/{script}")
        assert [t["target"] for t in numbers["targets"]] == [3.0, 2.5]
        assert numbers["b_noise_trend"]["targets"] == [3.0, 2.5]  # two targets: the summary is there


@pytest.mark.slow
def test_fig3_summary_recovers_b_noise_rising_as_the_loss_falls(tmp_path):
    (item,) = figures.by_script("fig3_resnet18_tinyimagenet.py")[1]
    truth = dict(zip(item.paper_targets, [30.0, 45.0, 70.0, 100.0, 150.0, 220.0]))
    frame = draw(truth, seeds=5, eps_max=4e-4, batch_sizes=16 + 33 * np.arange(11),
                 lrs=1e-4 + 7.65e-5 * np.arange(9))  # Table 1's ResNet-18 grid
    write_points(tmp_path / "store", item.experiment, frame)
    assert run_script("fig3_resnet18_tinyimagenet.py", f"paths.store={tmp_path / 'store'}",
                      f"paths.figures={tmp_path / 'fig'}", "report.n_boot=100") == 0
    numbers = json.loads((tmp_path / "fig" / f"{item.experiment}.json").read_text())
    assert (tmp_path / "fig" / f"{item.experiment}.png").stat().st_size > 100_000
    trend = numbers["b_noise_trend"]
    assert trend["targets"] == list(item.paper_targets)  # training order, the highest loss first
    assert trend["b_noise"] == pytest.approx(list(truth.values()), rel=0.2)
    assert trend["verdict"] == "rises as the loss falls" and trend["spearman"] > 0.9
    assert numbers["panels"] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"] and numbers["notes"] == []


def test_the_trend_says_falls_and_needs_enough_seeds_for_intervals():
    falling = fit_experiment(draw({2.0: 80.0, 1.5: 40.0, 1.0: 20.0}, seeds=5), n_boot=50)
    assert b_noise_trend(falling)["verdict"] == "falls as the loss falls"
    one_seed = fit_experiment(draw({2.0: 20.0, 1.0: 80.0}, seeds=1), n_boot=20)
    assert b_noise_trend(one_seed)["verdict"] == "too few seeds"
    assert b_noise_trend(one_seed[:1]) is None


def test_batch_axes_name_their_unit():
    fits = fit_experiment(draw({2.0: 2e6, 1.0: 4e6}, batch_sizes=np.geomspace(2e5, 1.2e7, 6)), n_boot=20)
    fig = surge_figure(fits, "t", unit="tokens", trend=b_noise_trend(fits))
    labels = [label for ax in fig.axes for label in (ax.get_xlabel(), ax.get_ylabel())
              if label.startswith(("batch size", "B (", "1 / E"))]
    # summary, 2 heatmaps, 2 S-E panels, 2 Theorem 5 panels
    assert len(labels) == 7 and all("tokens" in label for label in labels)
    heatmap = next(ax for ax in fig.axes if ax.get_xlabel().startswith("batch size"))
    fig.canvas.draw()
    assert any(t.get_text().endswith("M") for t in heatmap.get_xticklabels())  # 4M, not 4e6 or an offset


@pytest.mark.slow
def test_index_gives_done_partial_and_not_run_and_links_the_figures(tmp_path):
    store, out = tmp_path / "store", tmp_path / "fig"
    write_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw")  # the data name the points (their fingerprint)
    over = [f"paths.store={store}", f"paths.figures={out}", f"paths.data={tmp_path / 'data'}", "rounds=2",
            "report.n_boot=50"]

    def names(experiment):
        return {(int(c.batch), f"{c.optimizer.lr:.6g}", int(c.seed)): signature(c)
                for _, c in grid_points([f"+experiment={experiment}", *over])}

    quick = names("quickstart")  # complete: every point of its 2-round sweep
    write_points(store, "quickstart", draw({1.4: 20.0, 1.0: 40.0}, batch_sizes=[1, 4, 16, 64, 256],
                                           lrs=[2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]), names=quick)
    small = names("fig2b_cnn5_fmnist_small_bs")  # partial: seed 0 everywhere, seed 1 at B = 1-3
    frame = synthetic.table(batch_sizes=range(1, 13), lrs=np.arange(1, 11) * 1e-4, seeds=2, b_noise=6.0)
    write_points(store, "fig2b_cnn5_fmnist_small_bs", frame[(frame.seed == 0) | (frame.batch_size <= 3)],
                 names=small)
    synthetic.write_store(store, "mygrid", synthetic.table(seeds=2, rng=0, batch_sizes=[1, 4, 16],
                                                           lrs=np.geomspace(1e-4, 1e-2, 9)))  # a user's own
    out_run = subprocess.run([sys.executable, str(ROOT / "reports" / "index.py"), *over], capture_output=True,
                             text=True, timeout=300)
    assert out_run.returncode == 0, (out_run.stdout + out_run.stderr)[-3000:]
    page = (out / "index.html").read_text()
    row = {i.experiment: page.split(f"<code>{i.experiment}</code>", 1)[1].split("</tr>", 1)[0] for i in figures.ITEMS}
    assert f"done ({len(quick)} points)" in row["quickstart"] and len(quick) == 70
    assert f"partial 150 of {len(small)}" in row["fig2b_cnn5_fmnist_small_bs"] and len(small) == 12 * 18 * 2
    assert f"not run (0 of {12 * 15 * 2})" in row["fig2c_cnn5_fmnist_large_bs"]
    for item in figures.ITEMS:  # the others, configured by now or not
        if item.experiment in ("quickstart", "fig2b_cnn5_fmnist_small_bs", "fig2c_cnn5_fmnist_large_bs"):
            continue
        if not item.store:  # analytic (Fig. 1): drawn every time, no sweep
            assert "analytic (needs no store)" in row[item.experiment]
            continue
        assert "not run (0 of" in row[item.experiment] or "config missing" in row[item.experiment]
    for drawn in ("quickstart", "fig2b_cnn5_fmnist_small_bs", "fig1_theory", "mygrid"):
        assert f'<img src="{drawn}.png"' in page and (out / f"{drawn}.png").exists()
        assert f'<a href="{drawn}.json">' in page
    assert page.count("<img ") == 4 and "B_noise (examples)" in page
    mine = page.split("<code>mygrid</code>", 1)[1].split("</tr>", 1)[0]  # outside the registry, in the store
    assert "your grid" in page and "config missing" in mine and f"({9 * 3 * 2} final points in the store)" in mine
    for drawn in ("quickstart", "mygrid"):  # each figure's verdicts and its flat table of optima
        assert f'<a href="{drawn}.optima.csv">' in page and (out / f"{drawn}.optima.csv").exists()
    assert "optima resolved" in page.split('id="mygrid"', 1)[1]
    assert "python reports/fig2_cnn5_fmnist.py +experiment=quickstart" in page
