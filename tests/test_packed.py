"""Packed execution (surge_repro/run/engines.py, packing.py, surge_repro/launch/launcher.py): points trained together
equal the same points trained one by one, each keeps its own store entry, and what cannot be packed says why and runs
one by one."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from surge_repro.run.packing import pack_bytes, why_not_packable
from surge_repro.run.train import run, run_points
from surge_repro.store import load_grid, status_counts
from surge_repro.sweep import group_jobs

ROOT = Path(__file__).resolve().parent.parent
# LRs from slow to divergent, so that points leave the pack at different steps and the stack shrinks under the rest
GRID = [(lr, seed) for lr in (0.003, 0.01, 0.03, 30.0) for seed in (0, 1)]
COMPARED = ["status", "steps", "reached", "steps_to_target", "loss_at_target", "loss_after_k", "loss_drop_after_k"]


def grid_table(make_cfg, store, overrides, packed, **kwargs):
    # 512 examples: epochs of 32 steps, so points draw new epoch orders after others have left the pack
    cfgs = [make_cfg(f"paths.store={store}", "task.size=512", f"optimizer.lr={lr}", f"seed={seed}", *overrides)
            for lr, seed in GRID]
    if packed:
        summaries = run_points(cfgs, **kwargs)
    else:
        summaries = [run(cfg) for cfg in cfgs]
    table = load_grid(store, "manual").sort_values(["lr", "seed", "target_loss"]).reset_index(drop=True)
    return summaries, table


# Packing changes the order of float operations (vmap's batched kernels, torch's fused optimizer step), so results
# agree to rounding, not bit for bit. Sign descent (Adam with betas (0, 0)) maps a gradient element's rounding-level
# change near zero to a full step of the other sign, so its points agree less tightly.
@pytest.mark.parametrize("overrides, atol", [
    ((), 1e-5),                                                        # Adam (0.9, 0.999), constant LR
    (("optimizer=adam_sign", "lr=warmup_constant", "lr.scheduler.total_iters=20"), 1e-3),  # sign; a schedule
    (("optimizer=sgd", "optimizer.momentum=0.9"), 1e-5),               # momentum: optimizer state not Adam's
], ids=["adam", "adam_sign_warmup", "sgd_momentum"])
def test_packed_points_equal_the_same_points_one_by_one(make_cfg, tmp_path, overrides, atol):
    summaries, packed = grid_table(make_cfg, tmp_path / "packed", overrides, packed=True)
    _, alone = grid_table(make_cfg, tmp_path / "alone", overrides, packed=False)
    assert {s["pack"]["points"] for s in summaries} == {len(GRID)}  # all trained in one pack
    assert set(packed.status) >= {"done", "diverged"}  # points left the pack at different steps
    assert len(set(packed.steps)) >= 4
    pd.testing.assert_frame_equal(packed[COMPARED], alone[COMPARED], check_exact=False, rtol=0, atol=atol)


def test_a_pack_split_to_fit_memory_gives_the_same_points(make_cfg, tmp_path):
    whole, table = grid_table(make_cfg, tmp_path / "whole", [], packed=True)
    per_point = pack_bytes(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), _task(make_cfg), 16)
    assert per_point > 7 * (64 * 4 + 4) * 4  # parameters and their copies, plus activations and the batch
    from surge_repro.run import packing as packing

    free = packing.free_bytes
    packing.free_bytes = lambda device: 3 * 2 * _point_bytes(make_cfg)  # room for 3 points at fraction 0.5
    try:
        split, split_table = grid_table(make_cfg, tmp_path / "split", [], packed=True, memory_fraction=0.5)
    finally:
        packing.free_bytes = free
    assert sorted({s["pack"]["points"] for s in split}) == [2, 3]  # 8 points in packs of 3, 3 and 2
    assert {s["pack"]["points"] for s in whole} == {8}
    pd.testing.assert_frame_equal(table[COMPARED], split_table[COMPARED], check_exact=False, rtol=0, atol=1e-5)


def _task(make_cfg):
    from surge_repro.config import build

    return build(make_cfg().task)


def _point_bytes(make_cfg):
    from surge_repro.config import build

    cfg = make_cfg()
    return pack_bytes(build(cfg.model), _task(make_cfg), int(cfg.batch))


def test_a_relaunched_pack_skips_finished_points_and_trains_the_rest(make_cfg, tmp_path):
    store = tmp_path / "store"
    first = [make_cfg(f"paths.store={store}", f"optimizer.lr={lr}", f"seed={seed}") for lr, seed in GRID[:4]]
    run_points(first)
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (store / "manual").iterdir()}
    everything = [make_cfg(f"paths.store={store}", f"optimizer.lr={lr}", f"seed={seed}") for lr, seed in GRID]
    summaries = run_points(everything)
    after = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (store / "manual").iterdir()}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished points untouched
    assert len(after) == len(GRID) and all(s["status"] in ("done", "diverged") for s in summaries)
    assert {s["pack"]["points"] for s in summaries[4:]} == {4}  # only the missing points trained, packed


def test_what_cannot_be_packed_says_why_and_runs_one_by_one(make_cfg, tmp_path):
    cfg = make_cfg()
    assert why_not_packable(cfg, torch.nn.Linear(2, 2)) is None
    bn = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert "BatchNorm" in why_not_packable(cfg, bn)
    assert "weight decay" in why_not_packable(make_cfg("optimizer.weight_decay=0.01"))
    lbfgs = make_cfg("optimizer._target_=torch.optim.LBFGS", "~optimizer.betas", "~optimizer.eps",
                     "~optimizer.weight_decay")
    assert "LBFGS" in why_not_packable(lbfgs)

    store = tmp_path / "store"
    cfgs = [make_cfg(f"paths.store={store}", "optimizer.weight_decay=0.01", f"optimizer.lr={lr}")
            for lr in (0.01, 0.03)]
    summaries = run_points(cfgs)
    assert [s["status"] for s in summaries] == ["done", "done"]
    assert all(s["pack"] is None for s in summaries)  # trained one by one, and the store says so


def test_jobs_group_by_everything_but_lr_and_seed():
    jobs = [["batch=8", "optimizer.lr=0.1", "seed=0"], ["batch=8", "optimizer.lr=0.2", "seed=1"],
            ["seed=0", "optimizer.lr=0.1", "batch=16"], ["batch=8", "optimizer=sgd", "optimizer.lr=0.1"]]
    assert group_jobs(jobs) == [[0, 1], [2], [3]]


@pytest.mark.slow
def test_a_packed_multirun_on_two_workers_matches_one_by_one(tmp_path):
    def sweep(store, *extra):
        out = subprocess.run([sys.executable, "run.py", "-m", "+experiment=smoke", "rounds=2", f"paths.store={store}",
                              f"hydra.sweep.dir={tmp_path}/multirun", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout + out.stderr

    log = sweep(tmp_path / "packed", "hydra.launcher.n_jobs=2", "hydra.launcher.cpu_max_batch=32", "threads=null")
    assert "on 2 worker(s)" in log and "12 of 12 points finished" in log
    assert "per worker (2 workers on" in log  # the cores are shared out, not oversubscribed
    sweep(tmp_path / "alone", "launcher=local")
    packed, alone = (load_grid(tmp_path / s, "smoke").sort_values(["signature", "target_loss"]).reset_index(drop=True)
                     for s in ("packed", "alone"))
    assert list(packed.signature) == list(alone.signature)  # packing is not part of a point's identity
    pd.testing.assert_frame_equal(packed[COMPARED], alone[COMPARED], check_exact=False, rtol=0, atol=1e-5)
    assert status_counts(tmp_path / "packed", "smoke") == {"done": 8, "diverged": 4}
    log = sweep(tmp_path / "packed", "hydra.launcher.n_jobs=2")
    assert log.count("6 point(s) already final in the store (2 diverged, 4 done): skipped") == 2  # per batch size
    assert "launching 0 job(s)" in log and "reached" not in log
