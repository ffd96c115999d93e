"""Checkpoint and resume (surge_repro/run/checkpoint.py): a run stopped by SLURM's signal, or killed, resumes from its
checkpoint and ends bit for bit where an uninterrupted run ends, alone or packed; its metrics and events carry no
duplicate line. (On a real SLURM, through submitit's requeue: tests/test_slurm.py.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY

from surge_repro.config import build
from surge_repro.point import signature
from surge_repro.run import checkpoint
from surge_repro.run.train import run, run_points
from surge_repro.store import PointDir

ROOT = Path(__file__).resolve().parent.parent

# slow enough to be stopped before its first target (about 1,700 steps in), with a warmup schedule to replay and two
# drop windows per target; 1e-3 finishes (about 240 steps) before the signal, so its pack shrinks first
LONG = ["optimizer.lr=1e-4", "protocol.max_steps=20000", "lr=warmup_constant", "protocol.windows=2",
        "progress.log_every=10", "checkpoint.every_s=1e9"]


class Preempted(BaseException):
    """Stands in for submitit's handler, which requeues the job and leaves with SystemExit."""


@pytest.fixture
def preempt_at():
    """``preempt_at(metrics_file, step)``: send SIGUSR2 to this process once the run has logged ``step``, as SLURM
    does before a time limit; the handler is deferred through ``checkpoint.defer_signal`` as in an array task."""
    previous = signal.getsignal(signal.SIGUSR2)

    def raise_preempted(signum, frame):
        raise Preempted()

    signal.signal(signal.SIGUSR2, raise_preempted)
    checkpoint.defer_signal(signal.SIGUSR2)
    threads = []

    def arm(metrics: Path, step: int) -> None:
        def watch():
            end = time.time() + 60
            while time.time() < end:
                if metrics.exists() and any(json.loads(line)["step"] >= step
                                            for line in metrics.read_text().splitlines()[-3:] if line.endswith("}")):
                    os.kill(os.getpid(), signal.SIGUSR2)  # Python runs the handler in the main thread, mid-loop
                    return
                time.sleep(0.001)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        threads.append(thread)

    yield arm
    for thread in threads:
        thread.join(timeout=60)
    signal.signal(signal.SIGUSR2, previous)
    checkpoint._pending = None


def lines(path: Path, drop=("wall_s",)) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


def same_run(got: dict, want: dict) -> None:
    for key in ("status", "steps", "targets", "final_probe_loss", "final_estimate", "probes", "examples_seen"):
        assert got[key] == want[key], key  # exact: floats compared bit for bit


@pytest.mark.parametrize("schedule", ["lr=warmup_constant", "lr=constant"])
def test_a_run_stopped_by_the_signal_resumes_bit_for_bit(make_cfg, tmp_path, preempt_at, schedule):
    want = run(make_cfg(*LONG, schedule, f"paths.store={tmp_path / 'reference'}"))
    cfg = make_cfg(*LONG, schedule)
    point = Path(cfg.paths.store) / "manual" / signature(cfg)
    preempt_at(point / "metrics.jsonl", 300)
    with pytest.raises(Preempted):
        run(cfg)
    state = checkpoint.load(PointDir(cfg.paths.store, "manual", signature(cfg)))
    assert state is not None and 300 <= state["step"] < want["targets"][0]["steps"]  # stopped before its target
    assert checkpoint.step_of(PointDir(cfg.paths.store, "manual", signature(cfg))) == state["step"]  # for status
    assert not (point / "summary.json").exists()
    got = run(cfg)  # the relaunch (or the requeued task)
    same_run(got, want)
    assert got["resumed_at"] == [state["step"]] and want["resumed_at"] == []
    assert not (point / "checkpoint.pt").exists() and not (point / "attempts").exists()
    ref = tmp_path / "reference" / "manual" / signature(cfg)
    assert lines(point / "metrics.jsonl") == lines(ref / "metrics.jsonl")  # nothing written twice, nothing lost
    assert lines(point / "events.jsonl") == lines(ref / "events.jsonl")


@pytest.mark.slow
def test_a_pack_stopped_by_the_signal_resumes_as_the_same_pack_bit_for_bit(make_cfg, tmp_path, preempt_at):
    lrs = (1e-4, 1e-3, 2e-4)

    def cfgs(store):
        return [make_cfg(*LONG, f"optimizer.lr={lr}", f"paths.store={store}") for lr in lrs]

    want = run_points(cfgs(tmp_path / "reference"))
    assert {s["pack"]["points"] for s in want} == {3}
    points = [Path(c.paths.store) / "manual" / signature(c) for c in cfgs(tmp_path / "store")]
    preempt_at(points[0] / "metrics.jsonl", 400)
    with pytest.raises(Preempted):
        run_points(cfgs(tmp_path / "store"))
    assert (points[1] / "summary.json").exists()  # lr 1e-3 finished before the signal: final, no checkpoint
    states = [checkpoint.load(PointDir(p.parent.parent, "manual", p.name)) for p in (points[0], points[2])]
    assert [s["pack"]["row"] for s in states] == [0, 2] and states[0]["step"] == states[1]["step"] >= 400
    # a point's own parameters and moments, copied out of the stack (a row of it would drag the whole stack along)
    size = sum(p.numel() for p in build(cfgs(tmp_path)[0].model).parameters())
    assert sum(t.untyped_storage().nbytes() for t in states[0]["model"].values()) == 4 * size
    moments = [v for s in states[0]["optimizer"].values() for k, v in s.items() if k != "step"]
    assert sum(v.numel() for v in moments) == 2 * size
    got = run_points(cfgs(tmp_path / "store"))
    for g, w in zip(got, want):
        same_run(g, w)
        assert g["pack"] == w["pack"]  # resumed as the pack it was, and says so
    assert got[0]["resumed_at"] == got[2]["resumed_at"] == [states[0]["step"]] and got[1]["resumed_at"] == []


def test_a_point_checkpointed_in_a_pack_resumes_packed_when_relaunched_alone_and_says_so(make_cfg, tmp_path,
                                                                                       preempt_at):
    # a relaunch of this point alone (launcher=local, or another sweep) keeps it packed, in a pack of one: its
    # pack-mates' rows are gone, so the result equals the whole pack's to rounding, and the summary records why
    cfgs = [make_cfg(*LONG, f"optimizer.lr={lr}") for lr in (1e-4, 2e-4)]
    want = run_points([make_cfg(*LONG, f"optimizer.lr={lr}", f"paths.store={tmp_path / 'reference'}")
                     for lr in (1e-4, 2e-4)])[0]
    point = Path(cfgs[0].paths.store) / "manual" / signature(cfgs[0])
    preempt_at(point / "metrics.jsonl", 300)
    with pytest.raises(Preempted):
        run_points(cfgs)
    info = json.loads((point / "checkpoint.json").read_text())
    assert info["mode"]["packed"] is True and info["pack"]["live"] == 2
    got = run(cfgs[0])
    assert got["resumed_at"] == [info["step"]] and got["mode"] == want["mode"] and got["mode"]["packed"]
    assert [c["why"] for c in got["mode_changes"]] == ["resumed in a pack of 1 of the 2 it was checkpointed with"]
    assert got["status"] == want["status"]
    for g, w in zip(got["targets"], want["targets"]):
        assert g["steps"] == pytest.approx(w["steps"], abs=2)
        assert g["loss_drop"] == pytest.approx(w["loss_drop"], abs=1e-4)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_periodic_checkpoint_bit_for_bit(make_cfg, tmp_path):
    # kill -9: no handler runs, so the lines written after the last checkpoint are in the files and must be cut
    args = [*TINY, *LONG[:-1], "optimizer.lr=3e-5", "checkpoint.every_s=0.3"]
    want = run(make_cfg(*args, f"paths.store={tmp_path / 'reference'}", tiny=False))
    cfg = make_cfg(*args, tiny=False)
    point = PointDir(cfg.paths.store, "manual", signature(cfg))
    proc = subprocess.Popen([sys.executable, "run.py", *args, f"paths.store={cfg.paths.store}",
                             f"paths.data={cfg.paths.data}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 120
        while time.time() < end and not (point.path / "checkpoint.pt").exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.15)  # between two checkpoints
    finally:
        proc.kill()
        proc.wait()
    state = checkpoint.load(point)
    assert state is not None and not (point.path / "summary.json").exists(), "the run ended before the kill"
    assert (point.path / "metrics.jsonl").stat().st_size > state["run"]["files"]["metrics"]  # lines past it
    got = run(cfg)
    same_run(got, want)
    assert got["resumed_at"] == [state["step"]]
    ref = tmp_path / "reference" / "manual" / point.path.name
    assert lines(point.path / "metrics.jsonl") == lines(ref / "metrics.jsonl")
    assert lines(point.path / "events.jsonl") == lines(ref / "events.jsonl")


def test_an_unreadable_checkpoint_starts_the_point_over_and_is_kept_apart(make_cfg, preempt_at):
    cfg = make_cfg(*LONG)
    point = PointDir(cfg.paths.store, "manual", signature(cfg))
    preempt_at(point.path / "metrics.jsonl", 200)
    with pytest.raises(Preempted):
        run(cfg)
    assert checkpoint.load(point)["step"] >= 200
    (point.path / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    got = run(cfg)
    assert got["resumed_at"] == [] and got["status"] == "done"
    assert (point.path / "attempts" / "0" / "checkpoint.pt").exists()  # kept apart, like the run's other files
