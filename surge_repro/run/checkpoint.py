"""Checkpoints of runs in progress, so that a preempted, timed-out or killed run resumes where it was.

A checkpoint is one file per point, ``<store>/<experiment>/<signature>/checkpoint.pt``, written atomically at a step
boundary and deleted when the point's summary is written. It holds everything the next step depends on:

    step              optimizer steps done
    params            the point's parameters, by name
    optimizer         the optimizer's state per parameter name (Adam's moments and step count, ...)
    rng               torch's global RNG states (CPU, and CUDA if used): dropout draws from them
    run               the protocol tracker's state (targets crossed, windows open, EMA, probe schedule) and the
                      noise scale's, the wall time so far, the sizes of metrics.jsonl / events.jsonl (lines written
                      after the checkpoint are cut on resume, so none is duplicated), the W&B run id (resumed, not
                      duplicated)
    pack              for a point trained packed: the pack's id, size and this point's row in it
    mode              how the point trains (``train.execution_mode``: alone or packed, threads, device type): a
                      relaunch resumes it in the same mode, where the same bits come out

Everything in it is a tensor, a number, a string, or a list or dict of those, and it is read with
``torch.load(weights_only=True)``: a store may be shared by many users, and a pickle that runs code on load must not
turn write access to it into code execution for everyone who reads it. A file that is refused (another format, a foreign
pickle) or unreadable (truncated) is a corrupt checkpoint: a warning, the file kept in attempts/, the point starts over.
``checkpoint.json`` beside it holds its step and mode, so that ``surge_repro.launch.status`` reports progress without
opening the checkpoint at all.

What is not stored because it is a function of the step: the data position (each epoch's order is the next draw of
the seed's generator, ``TensorTask.epoch_orders``; the loops replay the draws up to the step) and the LR schedule
(replayed ``step`` times). The format is per point whether the point trained alone or in a pack: a pack saves one
file per point still training, all at the same step, and resumes as the same pack, row for row, so that the result
is bit-identical on the CPU to a run that was never interrupted (``tests/test_checkpoint.py``).

When: every ``checkpoint.every_s`` seconds of training, and at the next step boundary after SLURM's signal. On a
cluster, submitit installs a handler for its signal (USR2, sent ``signal_delay_s`` before the time limit, and on
preemption) that calls the task's ``checkpoint()``, requeues the job and exits: mid-step, where no consistent state
exists. ``defer_signal`` (called in each array task) wraps that handler: inside a training loop the signal only marks
a request; ``Saver.step`` saves at the next step boundary and then calls submitit's handler, which requeues and exits
as usual. Outside a loop the signal goes straight to submitit (the points in progress resume from their last
checkpoint, or restart).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from surge_repro.run.noise_scale import NoiseScale
from surge_repro.run.protocol import TargetTracker
from surge_repro.store import (
    CHECKPOINT,
    CHECKPOINT_INFO,
    PointDir,
    atomic_write,
    disk_errors,
)

log = logging.getLogger("surge_repro")

FILE = CHECKPOINT
VERSION = 2  # 2: plain data only (weights_only); 1 pickled the tracker and is refused

_pending: Callable[[], None] | None = None  # submitit's handler, deferred from the signal to a step boundary
_loops = 0  # training loops running in this process (0 or 1; a counter keeps nesting harmless)


def path(point: PointDir) -> Path:
    return point.path / FILE


def save(point: PointDir, state: dict) -> None:
    """Write ``state`` to the point's checkpoint: a temporary file, fsync, rename (a kill leaves the old one); then
    its step and mode to checkpoint.json."""
    target = path(point)
    with disk_errors(target):
        atomic_write(target, lambda f: torch.save({"version": VERSION, **state}, f))
        atomic_write(point.path / CHECKPOINT_INFO, json.dumps({"step": int(state["step"]), "mode": state.get("mode"),
                                                               "pack": state.get("pack")}))


def load(point: PointDir) -> dict | None:
    """The point's checkpoint, or None if it has none or it is refused or unreadable (then the run starts over, and
    ``PointDir.begin`` moves the file to attempts/)."""
    target = path(point)
    if not target.exists():
        return None
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)  # never unpickle a store's file
        check(state)
    except Exception as err:  # refused, truncated by a copy, or from another version: not worth failing the point over
        log.warning("%s: checkpoint refused (%s: %s); the point starts over from step 0 and the file is kept in "
                    "attempts/", point.path.name, type(err).__name__, str(err).splitlines()[0][:300])
        return None
    return state


def check(state: dict) -> None:
    """Raise unless ``state`` is a checkpoint of this format whose tracker and noise scale rebuild."""
    if not isinstance(state, dict) or state.get("version") != VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"format {found}, this code reads {VERSION}")
    missing = {"step", "model", "optimizer", "rng", "run", "pack", "mode"} - set(state)
    if missing:
        raise ValueError(f"lacks {sorted(missing)}")
    missing = {"tracker", "noise", "step", "wall_s", "files", "resumed", "mode", "mode_changes"} - \
        set(state["run"])
    if missing:
        raise ValueError(f"its run state lacks {sorted(missing)}")
    TargetTracker.from_state(state["run"]["tracker"])
    NoiseScale.from_state(state["run"]["noise"])


def info(point: PointDir) -> dict | None:
    """The point's checkpoint.json (step, mode, pack: a JSON file, so nothing is unpickled), None if it has no
    checkpoint or the record is unreadable."""
    if not path(point).exists():
        return None
    try:
        record = json.loads((point.path / CHECKPOINT_INFO).read_text())
        return record if isinstance(record.get("step"), int) else None
    except (OSError, ValueError, AttributeError):  # missing or unreadable: either way nothing to go by
        return None


def step_of(point: PointDir) -> int | None:
    """The step of the point's checkpoint (``info``); None if none."""
    record = info(point)
    return None if record is None else record["step"]


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def replay_schedule(scheduler, steps: int) -> None:
    """Bring a fresh LR scheduler to where it was after ``steps`` optimizer steps (schedules are functions of the
    step; replaying them gives the very floats an uninterrupted run had)."""
    if scheduler is not None:
        with warnings.catch_warnings():  # torch warns of scheduler steps before optimizer steps: intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(steps):
                scheduler.step()


def defer_signal(signum: int) -> None:
    """Route the handler installed for ``signum`` (submitit's checkpoint-and-requeue) through the training loops:
    inside one it runs at the next step boundary, after a checkpoint; elsewhere at once."""
    original = signal.getsignal(signum)
    if not callable(original):
        return

    def handler(sig, frame):
        global _pending
        if _loops:
            log.warning("signal %s: checkpointing at the end of this step, then handing over to submitit",
                        signal.Signals(sig).name)
            _pending = lambda: original(sig, frame)  # noqa: E731
        else:
            original(sig, frame)

    signal.signal(signum, handler)


class Saver:
    """Decides when a training loop checkpoints: every ``every_s`` seconds, and when a signal asks for it.
    ``save()`` writes the loop's checkpoints; ``step()`` is called at each step boundary."""

    def __init__(self, every_s: float, save: Callable[[], None]):
        self.every_s, self.save = float(every_s), save
        self.last = time.monotonic()

    @contextlib.contextmanager
    def running(self) -> Iterator["Saver"]:
        global _loops
        _loops += 1
        try:
            yield self
        finally:
            _loops -= 1

    def step(self) -> None:
        global _pending
        if _pending is None and time.monotonic() - self.last < self.every_s:
            return
        self.save()
        self.last = time.monotonic()
        if _pending is not None:
            action, _pending = _pending, None
            action()  # submitit: requeue and exit (SystemExit), or raise UncompletedJobError if it will not requeue
