"""Every report script renders from a store the test writes, and its numbers recover what the store was drawn from."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic

from surge_repro.config import compose
from surge_repro.report.render import render
from surge_repro.store import MixedGridsError, StoreError, load_grid

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "reports" / "fig2_cnn5_fmnist.py"]  # the other scripts: tests/test_reports_all.py
SMALL = {"batch_sizes": [1, 4, 16, 64, 256], "lrs": np.geomspace(1e-5, 1e-2, 16)}  # where the test needs no accuracy


def test_render_writes_figure_and_numbers_that_recover_the_truth(tmp_path):
    frame = synthetic.table(law="adam", eps_max=1e-3, b_noise=20.0, seeds=5, rng=5)  # 5: the fewest with intervals
    synthetic.write_store(tmp_path / "store", "smoke", frame)
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "report.n_boot=100"])
    png = render(cfg, "test")
    assert png.stat().st_size > 20_000
    numbers = json.loads(png.with_suffix(".json").read_text())
    (fit,) = numbers["targets"]
    assert fit["b_noise"] == pytest.approx(20.0, rel=0.15)
    assert fit["eps_max"]["adam"] == pytest.approx(1e-3, rel=0.15)
    assert fit["n_seeds"] == 5 and fit["n_runs"] == len(frame) and fit["interval"]["enough_seeds"]
    assert numbers["points"] == {"done": len(frame)}
    assert json.dumps(numbers).count("NaN") == 0  # strict JSON
    assert numbers["criterion"] == "drop" and "loss drop" in numbers["criterion_means"]
    verdict = fit["verdict"]
    assert verdict["verdict"] in ("surge supported", "not single-peaked", "rise only", "fall only",
                                  "no trend resolved")
    assert len(verdict["per_batch"]) == len(fit["batch_sizes"]) == len(fit["lr_opt_dist"])
    assert all(abs(sum(d) - 1) < 1e-6 for d in fit["lr_opt_dist"])  # the bootstrap distribution of each optimum
    assert set(fit["law_band"]) == {"adam", "sgd_alpha1", "sgd_alpha0.5"}
    (steps,) = numbers["steps_criterion"]
    assert steps["criterion"] == "steps" and steps["verdict"]["per_batch"]


def test_a_committed_tidy_table_rebuilds_the_figure_and_numbers_of_its_store(tmp_path):
    # reports/examples/ holds the table, not the store: report.table must give the very numbers the store gave
    frame = synthetic.table(law="adam", b_noise=20.0, seeds=5, rng=3, **SMALL)  # any grid: the numbers must agree
    frame.loc[frame.index[:7], "loss_drop_after_k"] = -np.inf  # diverged inside the window: must survive the CSV
    synthetic.write_store(tmp_path / "store", "smoke", frame)
    first = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'a'}",
                     "report.n_boot=100"])
    from_store = json.loads(render(first, "test").with_suffix(".json").read_text())
    table = tmp_path / "a" / "smoke.csv.gz"
    again = compose(["+experiment=smoke", f"paths.store={tmp_path / 'nowhere'}", f"paths.figures={tmp_path / 'b'}",
                     "report.n_boot=100", f"report.table={table}"])
    png = render(again, "test")
    from_table = json.loads(png.with_suffix(".json").read_text())
    assert png.stat().st_size > 20_000 and from_table["store"] == str(table)
    for key in ("targets", "steps_criterion", "b_noise_trend", "points"):
        assert from_table[key] == from_store[key], key
    bad = compose(["+experiment=smoke", f"paths.figures={tmp_path / 'c'}", f"report.table={tmp_path / 'none.csv.gz'}"])
    with pytest.raises(StoreError, match="report.table"):
        render(bad, "test")


def test_the_report_says_which_criterion_it_used(tmp_path):
    synthetic.write_store(tmp_path / "store", "smoke", synthetic.table(seeds=3, rng=2, **SMALL))
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "report.n_boot=50", "report.criterion=steps"])
    numbers = json.loads(render(cfg, "test").with_suffix(".json").read_text())
    assert numbers["criterion"] == "steps" and numbers["steps_criterion"] is None
    assert numbers["targets"][0]["criterion"] == "steps"
    bad = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", "report.criterion=fastest"])
    with pytest.raises(ValueError, match="report.criterion=drop"):
        render(bad, "test")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_report_script_runs_on_a_store(tmp_path, script):
    synthetic.write_store(tmp_path / "store", "smoke", synthetic.table(seeds=2, rng=1))
    out = subprocess.run([sys.executable, str(script), "+experiment=smoke", f"paths.store={tmp_path / 'store'}",
                          f"paths.figures={tmp_path / 'fig'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fig" / "smoke.png").exists() and (tmp_path / "fig" / "smoke.json").exists()


@pytest.mark.slow
def test_a_report_without_data_says_how_to_get_it(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "reports" / "fig2_cnn5_fmnist.py"),
                          f"paths.store={tmp_path}", f"paths.figures={tmp_path / 'fig'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "python run.py -m +experiment=fig2b_cnn5_fmnist_small_bs" in out.stdout


def test_rounds_from_a_committed_table_and_a_store_fit_as_one_grid(tmp_path):
    # seeds 0-2 were run and committed as a table in one session, seeds 3-4 run into a store in another: the report
    # of both is the report of all five in one store; a table of another grid is refused, not merged
    frame = synthetic.table(law="adam", b_noise=20.0, seeds=5, rng=4, **SMALL)
    synthetic.write_store(tmp_path / "all", "smoke", frame)
    whole = compose(["+experiment=smoke", f"paths.store={tmp_path / 'all'}", f"paths.figures={tmp_path / 'a'}",
                     "report.n_boot=100"])
    want = json.loads(render(whole, "test").with_suffix(".json").read_text())
    synthetic.write_store(tmp_path / "early", "smoke", frame[frame.seed < 3])
    synthetic.write_store(tmp_path / "late", "smoke", frame[frame.seed >= 3])
    early = tmp_path / "early.csv.gz"  # the tidy table a report of the early store writes
    load_grid(tmp_path / "early", "smoke").to_csv(early, index=False)
    both = compose(["+experiment=smoke", f"paths.store={tmp_path / 'late'}", f"paths.figures={tmp_path / 'b'}",
                    "report.n_boot=100", f"report.tables=[{early},{early}]"])  # listed twice: counted once
    got = json.loads(render(both, "test").with_suffix(".json").read_text())
    assert got["tables"] == [str(early), str(early)]
    for key in ("targets", "steps_criterion", "points"):
        assert got[key] == want[key], key
    odd = pd.read_csv(early).assign(grid="0123456789")  # rounds of another config: another grid
    odd.to_csv(tmp_path / "odd.csv.gz", index=False)
    mixed = compose(["+experiment=smoke", f"paths.store={tmp_path / 'late'}", f"paths.figures={tmp_path / 'm'}",
                     "report.n_boot=100", f"report.tables=[{tmp_path / 'odd.csv.gz'}]"])
    with pytest.raises(MixedGridsError):
        render(mixed, "test")
