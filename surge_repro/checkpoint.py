"""Checkpoints of runs in progress, so that a preempted, timed-out or killed run resumes where it was.

A checkpoint is one file per point, ``<store>/<experiment>/<signature>/checkpoint.pt``, written atomically at a step
boundary and deleted when the point's summary is written. It holds everything the next step depends on:

    step              optimizer steps done
    params            the point's parameters, by name
    optimizer         the optimizer's state per parameter name (Adam's moments and step count, ...)
    rng               torch's global RNG states (CPU, and CUDA if used): dropout draws from them
    run               the protocol tracker (targets crossed, windows open, EMA, probe schedule), the wall time so
                      far, the sizes of metrics.jsonl / events.jsonl (lines written after the checkpoint are cut on
                      resume, so none is duplicated), the W&B run id (resumed, not duplicated)
    pack              for a point trained packed: the pack's id, size and this point's row in it

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
import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from surge_repro.store import CHECKPOINT, PointDir, atomic_write, disk_errors

log = logging.getLogger("surge_repro")

FILE = CHECKPOINT
VERSION = 1

_pending: Callable[[], None] | None = None  # submitit's handler, deferred from the signal to a step boundary
_loops = 0  # training loops running in this process (0 or 1; a counter keeps nesting harmless)


def path(point: PointDir) -> Path:
    return point.path / FILE


def save(point: PointDir, state: dict) -> None:
    """Write ``state`` to the point's checkpoint: a temporary file, fsync, rename (a kill leaves the old one)."""
    target = path(point)
    with disk_errors(target):
        atomic_write(target, lambda f: torch.save({"version": VERSION, **state}, f))


def load(point: PointDir) -> dict | None:
    """The point's checkpoint, or None if it has none or it cannot be read (then the run starts over, and
    ``PointDir.begin`` moves the unreadable file to attempts/)."""
    target = path(point)
    if not target.exists():
        return None
    try:
        # our own file, written by save(): it pickles the protocol tracker, so weights_only does not apply
        state = torch.load(target, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated by a copy, or from another torch: not worth failing the point over
        log.warning("%s: checkpoint unreadable (%s: %s); the point starts over from step 0", point.path.name,
                    type(err).__name__, err)
        return None
    if state.get("version") != VERSION:
        log.warning("%s: checkpoint of format %s, this code reads %s; the point starts over from step 0",
                    point.path.name, state.get("version"), VERSION)
        return None
    return state


def step_of(point: PointDir) -> int | None:
    """The step of the point's checkpoint, read without loading its tensors (memory-mapped); None if none."""
    try:
        return int(torch.load(path(point), map_location="cpu", mmap=True, weights_only=False)["step"])
    except Exception:  # missing or unreadable: either way nothing to resume from
        return None


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
