"""Faults on the local paths: many processes writing the store at once, a sweep killed with SIGKILL and relaunched,
a truncated metrics file. (SLURM's scancel and time limit: tests/test_slurm.py; full disk, corrupt data, W&B down:
tests/test_store.py, test_data.py, test_mirror.py.)"""

import copy
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from surge_repro.config import compose
from surge_repro.run.train import run
from surge_repro.store import load_grid, status_counts

ROOT = Path(__file__).resolve().parent.parent
GRID = [(b, lr, seed) for b in (8, 16) for lr in (0.01, 0.02, 0.03, 0.05, 0.1) for seed in range(20)]  # 200
TINY = ["task=synthetic_images", "model=tiny_mlp", "protocol.targets=[1.1]", "protocol.k=2", "protocol.probe.size=64",
        "protocol.max_steps=400", "threads=1", "device=cpu", "experiment_name=many"]


def _worker(store: str, order_seed: int) -> None:
    points = list(GRID)
    random.Random(order_seed).shuffle(points)  # every process walks the grid in its own order
    base = compose(TINY + [f"paths.store={store}", "batch=8", "optimizer.lr=0.01"])
    for b, lr, seed in points:
        cfg = copy.deepcopy(base)  # composing 200 configs in each of 8 processes would take minutes
        cfg.batch, cfg.optimizer.lr, cfg.seed = b, lr, seed
        run(cfg)


@pytest.mark.slow
def test_eight_processes_share_a_store_of_200_points_without_losing_or_tearing_any(tmp_path):
    store = str(tmp_path / "store")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(store, k)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    dirs = sorted((tmp_path / "store" / "many").iterdir())
    assert len(dirs) == 200
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())  # parses: no torn writes
        assert summary["status"] in ("done", "capped", "diverged")
        assert not (d / "attempts").exists()  # each point trained exactly once, by one process
        starts = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in starts] == sorted(r["step"] for r in starts)  # one writer, in order
    assert sum(status_counts(store, "many").values()) == 200 and len(load_grid(store, "many")) == 200


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_then_relaunched_gives_the_same_table(tmp_path):
    def sweep(store, background=False):
        cmd = [sys.executable, "run.py", "-m", "+experiment=smoke", "rounds=3", "launcher=local",
               "optimizer.lr=0.003,0.03,0.0003", f"paths.store={store}", f"hydra.sweep.dir={tmp_path}/mr"]
        if background:
            return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout + out.stderr

    sweep(tmp_path / "reference")
    store = tmp_path / "store"
    proc = sweep(store, background=True)
    deadline = time.time() + 120
    while time.time() < deadline and status_counts(store, "smoke").get("done", 0) < 4:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: files as the kernel left them
    proc.wait()
    counts = status_counts(store, "smoke")
    assert counts.get("done", 0) >= 4 and sum(counts.values()) < 18, counts
    log = sweep(store)
    assert log.count("skipped") == counts["done"]  # what was finished is not trained again
    cols = ["signature", "status", "steps", "steps_to_target", "loss_drop_after_k"]
    got, want = (load_grid(s, "smoke").sort_values(["signature", "target_loss"]).reset_index(drop=True)[cols]
                 for s in (store, tmp_path / "reference"))
    pd.testing.assert_frame_equal(got, want)  # one by one on the CPU: bit for bit


def test_a_truncated_metrics_file_of_a_killed_run_is_set_aside_and_the_point_rerun(make_cfg):
    cfg = make_cfg()
    first = run(cfg)
    point = Path(cfg.paths.store) / "manual" / first["signature"]
    (point / "summary.json").unlink()  # as if killed before its end ...
    text = (point / "metrics.jsonl").read_text()
    (point / "metrics.jsonl").write_text(text[: len(text) // 2 + 3])  # ... in the middle of a line
    again = run(cfg)
    assert again["status"] == first["status"] and again["targets"] == first["targets"]
    assert (point / "attempts" / "0" / "metrics.jsonl").read_text() == text[: len(text) // 2 + 3]  # kept apart
    lines = (point / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the new one is whole


def test_status_lists_what_a_relaunch_would_run(tmp_path, capsys):
    from surge_repro.launch.status import main as status
    from surge_repro.sweep import grid_points

    store = tmp_path / "store"
    args = ["+experiment=smoke", f"paths.store={store}"]
    points = grid_points(args)
    assert [o[:3] for o, _ in points][:2] == [["seed=0", "batch=8", "optimizer.lr=0.003"],
                                             ["seed=0", "batch=8", "optimizer.lr=0.03"]]  # run.py -m's order
    for _, cfg in points[:2]:
        run(cfg)
    (store / "smoke" / "b32-lr30-junk").mkdir(parents=True)  # not a point of this sweep: ignored
    assert status(args) == 1
    out = capsys.readouterr().out
    assert "smoke: 6 points in the sweep: 2 done, 4 missing" in out
    assert "missing    batch=32 optimizer.lr=30.0" in out  # what names the point; the command's own keys left out
    for _, cfg in points[2:]:
        run(cfg)
    assert status(args) == 0 and "4 done, 2 diverged" in capsys.readouterr().out
