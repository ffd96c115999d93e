"""Grids on a real SLURM (slurm/up.sh; .ci/run brings it up): a packed multirun as one job array; a scancel, a time
limit and a preemption (scontrol requeue) mid-sweep. Every interrupted point resumes from its checkpoint, through
submitit's requeue or the same command relaunched, and the final table equals an uninterrupted run's bit for bit.
Skipped on a machine without SLURM, except in CI (CI=true), where a missing SLURM is a failure."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from surge_repro.store import load_grid, point_dirs, status_counts

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ["signature", "status", "steps", "reached", "steps_to_target", "loss_at_target", "loss_after_k",
            "loss_drop_after_k"]

if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI needs a running SLURM for tests/test_slurm.py: .ci/run starts one with slurm/up.sh")
    pytest.skip("no SLURM here (start one: sudo bash slurm/up.sh)", allow_module_level=True)

pytestmark = pytest.mark.slow
# the smoke grid, plus one slow LR: 1e-5 runs to its 20,000-step cap (about 20 s), so the sweep is surely
# interrupted while it trains, on a fast machine too; it checkpoints every second
SLOW = ["+experiment=smoke", "optimizer.lr=0.003,0.03,1e-5", "protocol.max_steps=20000",
        "protocol.patience=10000000", "checkpoint.every_s=1"]


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


def resumed(store) -> dict:
    """Signature -> the steps at which the point resumed from a checkpoint, for the points that did."""
    out = {}
    for p in point_dirs(store, "smoke"):
        steps = json.loads((p / "summary.json").read_text())["resumed_at"]
        if steps:
            out[p.name] = steps
    return out


def checkpointed(store) -> bool:
    return any((p / "checkpoint.pt").exists() for p in point_dirs(store, "smoke"))


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
    """The same grid run uninterrupted, in the same packs and single points as the array tasks run them."""
    tmp = tmp_path_factory.mktemp("reference")
    code, log = sweep(tmp, tmp / "store", "launcher=packed", "hydra.launcher.n_jobs=1")
    assert code == 0, log
    return table(tmp / "store")


def test_a_grid_is_one_job_array_of_packs_and_chunks_and_matches_local(tmp_path, reference):
    code, log = sweep(tmp_path, tmp_path / "store", "launcher=slurm", "hydra.launcher.points_per_task=2",
                      "hydra.launcher.progress_every_s=2")
    assert code == 0, log
    # B=8: one pack of 3 LRs; B=32: 3 single points in chunks of 2 -> 1 + 2 array tasks
    assert "submitted 6 job(s) as 3 array task(s) of slurm job" in log
    assert "points finished (" in log and "left); array tasks: " in log  # progress while it waits (1e-5: ~20 s)
    job = log.split("of slurm job ")[1].split()[0]

    def states():
        return subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "JobID,State", "--parsable2"],
                              capture_output=True, text=True).stdout.split()

    # accounting records a task's end a moment after its result is written
    assert wait_for(lambda: len(states()) == 3 and all(s.endswith("|COMPLETED") for s in states()), 60), states()
    pd.testing.assert_frame_equal(table(tmp_path / "store"), reference, check_exact=True)


def test_scancel_mid_sweep_then_relaunch_resumes_the_cut_points(tmp_path, reference):
    store = tmp_path / "store"
    proc = sweep(tmp_path, store, "launcher=slurm", background=True)
    try:
        # cancel once the fast points are final and the slow one is training and has checkpointed
        assert wait_for(lambda: status_counts(store, "smoke").get("running", 0) >= 1 and checkpointed(store)
                        and sum(status_counts(store, "smoke").get(s, 0) for s in ("done", "diverged")) >= 3), \
            status_counts(store, "smoke")
        before = {p.name: (p / "summary.json").read_text() for p in point_dirs(store, "smoke")
                  if (p / "summary.json").exists()}
        for job in array_job_ids():
            subprocess.run(["scancel", job], check=True)
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
    after = {p.name: (p / "summary.json").read_text() for p in point_dirs(store, "smoke")}
    assert all(after[name] == text for name, text in before.items())  # and not rewritten
    assert resumed(store)  # from their checkpoints, not from scratch
    pd.testing.assert_frame_equal(table(store), reference, check_exact=True)


def test_a_task_out_of_time_checkpoints_at_the_signal_and_the_relaunch_resumes_it(tmp_path):
    # one minute is SLURM's smallest limit; submitit's signal comes signal_delay_s = 30 s before it, give or take the
    # ~30 s of slurmctld's timer: it has come 5 s into the job, and before the task had started a point. The slow
    # point (60,000 steps, about a minute) is then still training; the fast two may be final or saved with it.
    # max_num_timeout=0: the task is not requeued; what it saved at the signal stays incomplete with its checkpoint,
    # and the relaunch resumes it. (Bit-identity of such resumes: the preemption tests below.)
    store = tmp_path / "store"
    grid = ["+experiment=smoke", "batch=8", "optimizer.lr=0.003,0.03,1e-6", "protocol.max_steps=60000",
            "protocol.patience=10000000", "checkpoint.every_s=1e9"]  # one pack; no checkpoint but the signal's
    for _ in range(2):  # a signal before the task started a point leaves nothing to resume: the scenario again
        code, log = sweep(tmp_path, store, "launcher=slurm", "hydra.launcher.timeout_min=1",
                          "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=0", grid=grid)
        assert code != 0 and "did not complete" in log, log
        if checkpointed(store):
            break
    counts = status_counts(store, "smoke")
    assert counts["incomplete"] >= 1 and set(counts) <= {"done", "incomplete"} and sum(counts.values()) == 3
    assert checkpointed(store)
    saved = {p.name for p in point_dirs(store, "smoke") if (p / "checkpoint.pt").exists()}
    finished = {p.name: (p / "summary.json").read_text() for p in point_dirs(store, "smoke")
                if (p / "summary.json").exists()}
    code, log = sweep(tmp_path, store, "launcher=slurm", grid=grid)
    assert code == 0, log
    assert "submitted 1 job(s)" in log
    assert status_counts(store, "smoke") == {"done": 2, "capped": 1}  # 1e-6 runs to its step cap
    assert set(resumed(store)) == saved and all(steps[0] > 0 for steps in resumed(store).values())  # not rerun
    assert all((store / "smoke" / name / "summary.json").read_text() == text for name, text in finished.items())


def test_a_preempted_task_checkpoints_at_the_signal_requeues_itself_and_resumes(tmp_path, reference):
    # preemption as submitit sees it (SIGTERM, then its signal USR2: what submitit's own job._interrupt() sends): the
    # task saves its points at the end of the step, requeues itself through submitit, and the requeued task resumes
    store = tmp_path / "store"
    proc = sweep(tmp_path, store, "launcher=slurm", "checkpoint.every_s=1e9", background=True)
    try:
        assert wait_for(lambda: status_counts(store, "smoke").get("running", 0) >= 1
                        and sum(status_counts(store, "smoke").get(s, 0) for s in ("done", "diverged")) >= 3)
        running = array_job_ids("RUNNING")
        assert running
        for job in running:
            for sig in ("SIGTERM", "USR2"):
                subprocess.run(["scancel", "--signal", sig, job], check=True)
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log
    assert resumed(store)  # from the checkpoint made at the signal: no periodic one was due
    pd.testing.assert_frame_equal(table(store), reference, check_exact=True)


def test_scontrol_requeue_mid_sweep_resumes_the_cut_points_bit_for_bit(tmp_path, reference):
    # preemption as a cluster does it: SLURM kills the running tasks and queues them again; the requeued task skips
    # its finished points and resumes the cut ones from their last periodic checkpoint
    store = tmp_path / "store"
    proc = sweep(tmp_path, store, "launcher=slurm", background=True)
    try:
        assert wait_for(lambda: status_counts(store, "smoke").get("running", 0) >= 1 and checkpointed(store)
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
    assert resumed(store)
    pd.testing.assert_frame_equal(table(store), reference, check_exact=True)


def test_a_dry_run_prints_the_plan_and_submits_nothing(tmp_path):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    code, log = sweep(tmp_path, tmp_path / "store", "launcher=slurm", "hydra.launcher.points_per_task=2",
                      "hydra.launcher.dry_run=true", "hydra.launcher.partition=debug")
    assert code == 0, log
    assert "slurm job array: 3 task(s) (1 pack(s), 2 chunk(s) of up to 2 single points), 6 point(s), 1-3 per task" \
        in log
    assert "each task asks for: partition=debug, timeout_min=60, cpus_per_task=1, mem_gb=4" in log
    assert "task 0: pack of 3 point(s), B=8" in log and "task 1: chunk of 2 point(s), B=32\n" in log
    assert "dry run (hydra.launcher.dry_run=true): nothing submitted" in log
    assert not (tmp_path / "store").exists() and not (tmp_path / "mr" / ".submitit").exists()
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == before


def test_a_launch_that_does_not_wait_returns_and_status_follows_the_array(tmp_path):
    store = tmp_path / "store"
    start = time.time()
    code, log = sweep(tmp_path, store, "launcher=slurm", "hydra.launcher.wait=false")
    assert code == 0, log
    assert time.time() - start < 60 and "not waiting (hydra.launcher.wait=false)" in log
    job = log.split("squeue -j ")[1].split()[0]
    assert (store / "smoke" / ".slurm" / f"{job}.json").exists()
    status = [sys.executable, "-m", "surge_repro.launch.status", *SLOW, f"paths.store={store}"]
    out = subprocess.run(status, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and f"SLURM (job {job}): of the " in out.stdout, out.stdout + out.stderr
    assert any(f"in {s} tasks" in out.stdout for s in ("pending", "running", "completing", "completed"))

    def final() -> bool:
        return subprocess.run(status, cwd=ROOT, capture_output=True, text=True, timeout=120).returncode == 0

    assert wait_for(final, 300, every=5)  # the array trains every point while nobody waits for it
    assert sum(status_counts(store, "smoke").values()) == 6
