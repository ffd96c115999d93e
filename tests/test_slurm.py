"""Grids on a real SLURM (slurm/up.sh; .ci/run brings it up): a packed multirun as one job array, a scancel and a
time limit mid-sweep, each followed by the same command relaunched. Skipped on a machine without SLURM, except in CI
(CI=true), where a missing SLURM is a failure."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from surge_repro.store import load_grid, status_counts

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ["signature", "status", "steps", "reached", "steps_to_target", "loss_drop_after_k"]

if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI needs a running SLURM for tests/test_slurm.py: .ci/run starts one with slurm/up.sh")
    pytest.skip("no SLURM here (start one: sudo bash slurm/up.sh)", allow_module_level=True)

pytestmark = pytest.mark.slow
# the smoke grid, plus one slow LR: 1e-5 runs to its 20,000-step cap (about 20 s), so the sweep is surely
# interrupted while it trains, on a fast machine too
SLOW = ["+experiment=smoke", "optimizer.lr=0.003,0.03,1e-5", "protocol.max_steps=20000",
        "protocol.patience=10000000"]


def sweep(tmp_path, store, *extra, background=False, grid=SLOW):
    cmd = [sys.executable, "run.py", "-m", *grid, f"paths.store={store}", *extra]
    if background:
        return subprocess.Popen(cmd + [f"hydra.sweep.dir={tmp_path}/mr-bg"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = subprocess.run(cmd + [f"hydra.sweep.dir={tmp_path}/mr"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    return out.returncode, out.stdout + out.stderr


def table(store):
    return load_grid(store, "smoke").sort_values(["signature", "target_loss"]).reset_index(drop=True)[COMPARED]


def wait_for(predicate, timeout=120, every=0.5):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def array_job_ids(state="all"):
    out = subprocess.run(["squeue", "-h", "-t", state, "-o", "%F"], capture_output=True, text=True).stdout.split()
    return sorted(set(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same grid run uninterrupted in this process's launcher, one point at a time."""
    tmp = tmp_path_factory.mktemp("reference")
    code, log = sweep(tmp, tmp / "store", "launcher=local")
    assert code == 0, log
    return table(tmp / "store")


def test_a_grid_is_one_job_array_of_packs_and_chunks_and_matches_local(tmp_path, reference):
    code, log = sweep(tmp_path, tmp_path / "store", "launcher=slurm", "hydra.launcher.points_per_task=2")
    assert code == 0, log
    # B=8: one pack of 3 LRs; B=32: 3 single points in chunks of 2 -> 1 + 2 array tasks
    assert "submitted 6 job(s) as 3 array task(s) of slurm job" in log
    job = log.split("of slurm job ")[1].split()[0]

    def states():
        return subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "JobID,State", "--parsable2"],
                              capture_output=True, text=True).stdout.split()

    # accounting records a task's end a moment after its result is written
    assert wait_for(lambda: len(states()) == 3 and all(s.endswith("|COMPLETED") for s in states()), 60), states()
    pd.testing.assert_frame_equal(table(tmp_path / "store"), reference, check_exact=False, rtol=0, atol=1e-5)


def _interrupt_then_relaunch(tmp_path, reference, stop, *extra):
    store = tmp_path / "store"
    proc = sweep(tmp_path, store, "launcher=slurm", *extra, background=True)
    try:
        # interrupt once the fast points are final and the slow one is training
        assert wait_for(lambda: status_counts(store, "smoke").get("running", 0) >= 1
                        and sum(status_counts(store, "smoke").get(s, 0) for s in ("done", "diverged")) >= 3), \
            status_counts(store, "smoke")
        before = {p.name: (p / "summary.json").read_text() for p in (store / "smoke").iterdir()
                  if (p / "summary.json").exists()}
        stop()
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0  # the sweep reports the points it could not finish
    assert "did not complete" in log
    counts = status_counts(store, "smoke")
    assert counts.get("incomplete", 0) >= 1 and "running" not in counts, counts
    unfinished = 6 - sum(counts.get(s, 0) for s in ("done", "capped", "diverged"))
    code, relog = sweep(tmp_path, store, "launcher=slurm")  # the same command, relaunched
    assert code == 0, relog
    assert "already final in the store" in relog and f"submitted {unfinished} job(s)" in relog  # only the rest
    after = {p.name: (p / "summary.json").read_text() for p in (store / "smoke").iterdir()}
    assert all(after[name] == text for name, text in before.items())  # and not rewritten
    assert any((p / "attempts").is_dir() for p in (store / "smoke").iterdir())  # the interrupted run's files kept
    pd.testing.assert_frame_equal(table(store), reference, check_exact=False, rtol=0, atol=1e-5)


def test_scancel_mid_sweep_then_relaunch_gives_the_same_table(tmp_path, reference):
    def cancel():
        for job in array_job_ids():
            subprocess.run(["scancel", job], check=True)

    _interrupt_then_relaunch(tmp_path, reference, cancel)


def test_a_task_out_of_time_is_rerun_by_the_relaunch(tmp_path):
    # one minute is SLURM's smallest limit; at LR 1e-7 the pack's third point never reaches a target and runs to its
    # step cap, about 90 s, while the other two finish in a second
    store = tmp_path / "store"
    grid = ["+experiment=smoke", "batch.size=8", "optimizer.lr=0.003,0.03,1e-7", "protocol.max_steps=100000",
            "protocol.patience=10000000"]
    code, log = sweep(tmp_path, store, "launcher=slurm", "hydra.launcher.timeout_min=1",
                      "hydra.launcher.signal_delay_s=15", grid=grid)
    assert code != 0 and "did not complete" in log, log
    counts = status_counts(store, "smoke")
    assert counts == {"done": 2, "incomplete": 1}, counts  # the fast points are final; the cut one has no summary
    finished = {p.name: (p / "summary.json").read_text() for p in (store / "smoke").iterdir()
                if (p / "summary.json").exists()}
    code, log = sweep(tmp_path, store, "launcher=slurm", "hydra.launcher.timeout_min=10", grid=grid)
    assert code == 0, log
    assert "submitted 1 job(s)" in log
    assert status_counts(store, "smoke") == {"done": 2, "capped": 1}
    assert all((store / "smoke" / name / "summary.json").read_text() == text for name, text in finished.items())


def test_scontrol_requeue_mid_sweep_reruns_the_cut_points_and_gives_the_same_table(tmp_path, reference):
    # preemption as a cluster does it: SLURM kills the running tasks and queues them again; the requeued task skips
    # its finished points and trains the cut ones from their start (checkpointed resume is not built yet)
    store = tmp_path / "store"
    proc = sweep(tmp_path, store, "launcher=slurm", background=True)
    try:
        assert wait_for(lambda: status_counts(store, "smoke").get("running", 0) >= 1
                        and sum(status_counts(store, "smoke").get(s, 0) for s in ("done", "diverged")) >= 3)
        running = array_job_ids("RUNNING")
        assert running  # a requeue of an array that has already finished would test nothing
        for job in running:
            subprocess.run(["scontrol", "requeue", job], check=True)
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log
    assert any((p / "attempts").is_dir() for p in (store / "smoke").iterdir())  # a cut run's files, kept apart
    pd.testing.assert_frame_equal(table(store), reference, check_exact=False, rtol=0, atol=1e-5)
