"""The store: one directory per point, the source of truth of every fit and figure.

Layout, under ``paths.store``::

    <experiment>/<signature>/       signature: see ``point``
        config.yaml                 the point's resolved config, written when a run starts
        metrics.jsonl               append-only, a line per logged step: step, examples, loss, estimate, lr, wall_s
        events.jsonl                append-only, as they happen: target crossings, drop windows, divergence, cap
        summary.json                written once when a run ends, atomically: status, the point, one record per
                                    target, steps, wall time, provenance
        checkpoint.pt               the state of a run in progress (``checkpoint``); gone once summary.json is there
        attempts/<n>/               files of earlier runs of the point that did not finish; kept, never read
        .lock                       flock-ed while a run of the point is in progress

Point statuses: ``done`` (every target reached and its drop measured), ``capped`` (a cap or a stall came first),
``diverged``; these three are final and a relaunch skips them. ``failed`` (an exception, named in summary.json) and
``incomplete`` (files but no summary and no lock: a killed run) are run again by a relaunch, from their checkpoint
if they have one. ``running`` means another
process holds the lock.

``load_grid`` returns the tidy table, one row per (run x target), built from summary.json files only. Its columns:

    experiment, signature, status         the run
    task, model, optimizer                the workload (names of the config choices)
    batch_size, batch_unit, lr, beta1, beta2, seed, k
                                          the point; beta1/beta2 are NaN for optimizers without betas
    target_loss, reached                  the target, and whether the run reached it
    steps_to_target, examples_to_target   S and E (NaN when not reached): the first probed step at or below the
                                          target (see ``protocol``); the drop window starts there
    loss_at_target, loss_after_k          probe-set loss at the window's start and end
    windows, loss_drop_mean               K-step windows measured after the target, and the mean drop per window
                                          over them (= loss_drop_after_k for one window; -inf/NaN alike)
    loss_drop_after_k                     their difference: the paper's measure. NaN when not measured; -inf when
                                          the run diverged inside the window (the worst possible outcome)
    estimate_drop_after_k                 the same drop read off the loss estimate
    b_simple, noise_trace, grad_sq        McCandlish's B_simple = tr(Sigma) / |G|^2 measured in training, and its
                                          two moving averages, at S (``noise_scale``; NaN where not measured)
    steps, examples_seen, wall_s          the whole run (wall_s of a packed run: from its pack's start to its finish)
    pack_id, pack_points                  the pack it trained in and how many points that pack started with (its
                                          own signature and 1 for a point trained alone)
    git_sha, git_dirty                    provenance of the code that ran it

Run ``python -m surge_repro.store [STORE] [EXPERIMENT ...]`` for the count of points in each status.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, Callable, Iterator

import pandas as pd

log = logging.getLogger("surge_repro")

FINAL = ("done", "capped", "diverged")
CHECKPOINT = "checkpoint.pt"
STREAMS = ("metrics", "events")
COLUMNS = [
    "experiment", "signature", "status", "task", "model", "optimizer", "batch_size", "batch_unit", "lr", "beta1",
    "beta2", "seed", "k", "target_loss", "reached", "steps_to_target", "examples_to_target", "loss_at_target",
    "loss_after_k", "loss_drop_after_k", "windows", "loss_drop_mean", "estimate_drop_after_k", "b_simple",
    "noise_trace", "grad_sq", "steps", "examples_seen", "wall_s", "pack_id", "pack_points", "git_sha", "git_dirty",
]


class StoreError(RuntimeError):
    """The store cannot be written or read. The message says what to do; finished points are never touched."""


def atomic_write(path: Path, content: str | Callable[[IO[bytes]], None]) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: a reader sees the old file or the new one.
    ``content``: the text, or a function that writes the bytes to the open file (``torch.save``)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or a read-only store into an error that says so and names the fix."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise StoreError(f"cannot write {path}: {err.strerror}. Free space or fix permissions there (or point "
                             f"paths.store elsewhere) and relaunch: finished points are kept and skipped.") from err
        raise


class PointDir:
    """The directory of one point."""

    def __init__(self, store: str | Path, experiment: str, signature: str):
        self.path = Path(store) / experiment / signature
        self._lock_file = None
        self._streams: dict[str, object] = {}

    def summary(self) -> dict | None:
        try:
            return json.loads((self.path / "summary.json").read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # cannot happen through atomic_write; if it does (copied store), rerun the point

    def status(self) -> str:
        summary = self.summary()
        if summary is not None and summary.get("status") in FINAL + ("failed",):
            return summary["status"]
        if not self.path.exists():
            return "missing"
        if self._locked_elsewhere():
            return "running"
        return "incomplete"

    def _locked_elsewhere(self) -> bool:
        lock = self.path / ".lock"
        if self._lock_file is not None or not lock.exists():
            return False
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def claim(self) -> Iterator[bool]:
        """Hold the point's lock for the block; yields False (and holds nothing) if another process has it."""
        with disk_errors(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            yield False
            return
        self._lock_file = f
        try:
            yield True
        finally:
            self.close_streams()
            self._lock_file = None
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def begin(self, config_yaml: str) -> None:
        """Start a run: move an unfinished earlier run's files to attempts/<n>/, write config.yaml."""
        assert self._lock_file is not None, "begin() needs claim()"
        with disk_errors(self.path):
            leftovers = [p for p in ("config.yaml", "metrics.jsonl", "events.jsonl", "summary.json", CHECKPOINT)
                         if (self.path / p).exists()]
            if leftovers:
                attempts = self.path / "attempts"
                n = len(list(attempts.glob("*"))) if attempts.exists() else 0
                dest = attempts / str(n)
                dest.mkdir(parents=True)
                for p in leftovers:
                    shutil.move(str(self.path / p), dest / p)
            atomic_write(self.path / "config.yaml", config_yaml)

    def resume(self, config_yaml: str, sizes: dict[str, int]) -> None:
        """Continue a run from its checkpoint: cut each stream back to its size at the checkpoint (the lines after it
        will be written again), keep config.yaml (or write it if it has gone)."""
        assert self._lock_file is not None, "resume() needs claim()"
        with disk_errors(self.path):
            for stream, size in sizes.items():
                file = self.path / f"{stream}.jsonl"
                have = file.stat().st_size if file.exists() else 0
                if have > size:
                    os.truncate(file, size)
                elif have < size:  # lines the checkpoint had seen are gone: the file was cut by hand or a copy
                    log.warning("%s is shorter than at the checkpoint (%d < %d bytes): lines of steps before the "
                                "checkpoint are missing from it", file, have, size)
            if not (self.path / "config.yaml").exists():
                atomic_write(self.path / "config.yaml", config_yaml)

    def stream_sizes(self) -> dict[str, int]:
        """The sizes of metrics.jsonl and events.jsonl now (every line is flushed as it is written)."""
        return {s: (self.path / f"{s}.jsonl").stat().st_size if (self.path / f"{s}.jsonl").exists() else 0
                for s in STREAMS}

    def append(self, stream: str, record: dict) -> None:
        """Append one JSON line to ``<stream>.jsonl`` and hand it to the OS at once: a killed run loses nothing."""
        with disk_errors(self.path / f"{stream}.jsonl"):
            f = self._streams.get(stream)
            if f is None:
                f = self._streams[stream] = open(self.path / f"{stream}.jsonl", "a")
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def close_streams(self) -> None:
        for f in self._streams.values():
            with contextlib.suppress(OSError):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        self._streams.clear()

    def write_summary(self, summary: dict) -> None:
        self.close_streams()
        with disk_errors(self.path / "summary.json"):
            atomic_write(self.path / "summary.json", json.dumps(summary, indent=1, allow_nan=True))
        with contextlib.suppress(FileNotFoundError):
            (self.path / CHECKPOINT).unlink()  # a final or failed point never resumes


def point_dirs(store: str | Path, experiment: str) -> list[Path]:
    root = Path(store) / experiment
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._") if root.is_dir() else []


def _rows(summary: dict) -> Iterator[dict]:
    point, prov = summary["point"], summary.get("provenance", {})
    base = {
        "experiment": summary["experiment"], "signature": summary["signature"], "status": summary["status"],
        **{k: point.get(k) for k in ("task", "model", "optimizer", "batch_size", "batch_unit", "lr", "seed", "k")},
        "windows": point.get("windows", 1),
        "beta1": point.get("beta1", math.nan), "beta2": point.get("beta2", math.nan),
        "steps": summary.get("steps"), "examples_seen": summary.get("examples_seen"), "wall_s": summary.get("wall_s"),
        "pack_id": (summary.get("pack") or {}).get("id", summary["signature"]),
        "pack_points": (summary.get("pack") or {}).get("points", 1),
        "git_sha": prov.get("git_sha"), "git_dirty": prov.get("git_dirty"),
    }
    for rec in summary.get("targets", []):
        # a window cut short by divergence is the worst outcome an LR can have, not a missing value
        cut_short = -math.inf if rec.get("reached") and summary["status"] == "diverged" else math.nan
        drop = cut_short if rec.get("loss_drop") is None else rec["loss_drop"]
        drop_mean = rec.get("loss_drop_mean", rec.get("loss_drop"))  # summaries from before windows: one window
        drop_mean = cut_short if drop_mean is None else drop_mean
        estimate_drop = rec["estimate"] - rec["estimate_after_k"] \
            if rec.get("estimate") is not None and rec.get("estimate_after_k") is not None else math.nan  # S = 0: none
        yield {
            **base, "target_loss": rec["target"], "reached": bool(rec.get("reached")),
            "steps_to_target": rec.get("steps"), "examples_to_target": rec.get("examples"),
            "loss_at_target": rec.get("probe_loss"),
            "loss_after_k": rec.get("probe_loss_after_k"), "loss_drop_after_k": drop,
            "loss_drop_mean": drop_mean, "estimate_drop_after_k": estimate_drop,
            **{k: math.nan if rec.get(k) is None else rec[k] for k in ("b_simple", "noise_trace", "grad_sq")},
        }


def load_grid(store: str | Path, experiment: str, statuses: tuple[str, ...] = FINAL) -> pd.DataFrame:
    """The tidy table of an experiment: one row per (run x target), for runs whose status is in ``statuses``."""
    rows = []
    for d in point_dirs(store, experiment):
        summary = PointDir(store, experiment, d.name).summary()
        if summary is not None and summary.get("status") in statuses:
            rows.extend(_rows(summary))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    numeric = ["batch_size", "lr", "beta1", "beta2", "seed", "k", "target_loss", "steps_to_target",
               "examples_to_target", "loss_at_target", "loss_after_k", "loss_drop_after_k", "windows",
               "loss_drop_mean", "estimate_drop_after_k", "steps", "examples_seen", "wall_s", "pack_points"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    frame[["batch_size", "seed"]] = frame[["batch_size", "seed"]].astype("Int64")
    return frame


def status_counts(store: str | Path, experiment: str) -> Counter:
    return Counter(PointDir(store, experiment, d.name).status() for d in point_dirs(store, experiment))


def main(argv: list[str]) -> int:
    store = Path(argv[0]) if argv else Path("store")
    experiments = argv[1:]
    if not experiments and store.is_dir():
        experiments = sorted(p.name for p in store.iterdir() if p.is_dir())
    if not experiments:
        print(f"no experiments under {store}/")
        return 1
    for exp in experiments:
        counts = status_counts(store, exp)
        total = sum(counts.values())
        parts = ", ".join(f"{counts[s]} {s}" for s in (*FINAL, "failed", "incomplete", "running") if counts[s])
        print(f"{exp}: {total} points: {parts or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
