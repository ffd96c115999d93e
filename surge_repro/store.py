"""The store: one directory per point, the source of truth of every fit and figure.

Layout, under ``paths.store``::

    <experiment>/<signature>/       signature: see ``point``
        config.yaml                 the point's resolved config, written when a run starts
        metrics.jsonl               append-only, a line per logged step: step, examples, loss, estimate, lr, wall_s,
                                    probe_loss (at steps that probed: the loss the targets are read on)
        events.jsonl                append-only, as they happen: target crossings, drop windows, divergence, cap
        summary.json                written once when a run ends, atomically: status, the point, one record per
                                    target, steps, wall time, provenance
        checkpoint.pt               the state of a run in progress (``checkpoint``); gone once summary.json is there
        checkpoint.json             its step and mode (``surge_repro.launch.status`` reads this, never the checkpoint)
        mirror.json                 the W&B run this run was mirrored to (``mirror``); wandb/ holds offline runs
        attempts/<n>/               files of earlier runs of the point that did not finish; kept, never read
    <experiment>/.slurm/<job>.json  which points each array task of a SLURM submission trains (``launch.cluster``);
                                    ``point_dirs`` lists the point directories and skips it
        .lock                       flock-ed while a run of the point is in progress

Point statuses: ``done`` (every target reached and its drop measured), ``capped`` (a cap or a stall came first),
``diverged``; these three are final and a relaunch skips them. ``failed`` (an exception, named in summary.json),
``corrupt`` (a summary.json that does not parse or lacks what this code writes: ``check_summary``) and
``incomplete`` (files but no summary and no lock: a killed run) are run again by a relaunch (their files move to
attempts/), from their checkpoint if they have one. ``running`` means another process holds the lock.

Files are written with the permissions the umask allows (``0o666 & ~umask``), as ``open`` would, so that the other
users of a shared store can read them; they are data, and nothing here unpickles them.

``load_grid`` returns the tidy table, one row per (run x target), built from summary.json files only. Its columns:

    experiment, signature, status         the run
    task, model, optimizer                the workload (names of the config choices)
    batch_size, batch_unit, lr, beta1, beta2, seed, k
                                          the point; beta1/beta2 are NaN for optimizers without betas
    target_loss, reached                  the target, and whether the run reached it
    steps_to_target, examples_to_target   S and E (NaN when not reached): the first probed step at or below the
                                          target (see ``protocol``); the drop window starts there
    loss_at_target, loss_after_k          probe-set loss at the window's start and end
    start_gap                             target_loss - loss_at_target: how far below the target the window starts
    exact_crossing                        whether the step before S was probed (above the target), so that S is the
                                          first step at or below it (``probe.reach``); None for older summaries
    windows, loss_drop_mean               K-step windows measured after the target, and the mean drop per window
                                          over them (= loss_drop_after_k for one window; -inf/NaN alike)
    loss_drop_at_target                   the drop over K steps of a window that starts exactly at the target's level
                                          (``protocol``); NaN where not measured, -inf as loss_drop_after_k
    loss_drop_after_k                     their difference: the paper's measure. NaN when not measured; -inf when
                                          the run diverged inside the window (the worst possible outcome)
    estimate_drop_after_k                 the same drop read off the loss estimate
    b_simple, noise_trace, grad_sq        McCandlish's B_simple = tr(Sigma) / |G|^2 measured in training, and its
                                          two moving averages, at S (``noise_scale``; NaN where not measured)
    probes                                how many times the run evaluated its probe set (the protocol's overhead)
    steps, examples_seen, wall_s          the whole run (wall_s of a packed run: from its pack's start to its finish,
                                          less time spent in W&B)
    pack_id, pack_points                  the pack it trained in and how many points that pack started with (its
                                          own signature and 1 for a point trained alone)
    mode                                  how it trained: "alone" or "packed", threads, device
                                          (``train.execution_mode``)
    grid, data                            the grid it belongs to (a hash of its identity minus batch, LR and seed:
                                          ``point.grid_of``) and the fingerprint of its data
    git_sha, git_dirty                    provenance of the code that ran it

``load_grid(...).attrs["grids"]`` maps each grid to its identity's dotted keys, so that ``one_grid`` can name the
keys on which an experiment's grids differ.

Run ``python -m surge_repro.store [STORE] [EXPERIMENT ...]`` for the count of points in each status (``--help``).
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
STATUSES = FINAL + ("failed", "corrupt", "incomplete", "running")  # a point directory's, in the order shown
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"  # the checkpoint's step and mode, for status: readable without unpickling
MIRRORED = "mirror.json"  # the W&B run a finished run was mirrored to (``mirror``): a new run of the point is not
STREAMS = ("metrics", "events")
COLUMNS = [
    "experiment", "signature", "status", "task", "model", "optimizer", "batch_size", "batch_unit", "lr", "beta1",
    "beta2", "seed", "k", "target_loss", "reached", "steps_to_target", "examples_to_target", "loss_at_target",
    "start_gap", "exact_crossing", "loss_after_k", "loss_drop_after_k", "loss_drop_at_target", "windows",
    "loss_drop_mean", "estimate_drop_after_k", "b_simple",
    "noise_trace", "grad_sq", "probes", "steps", "examples_seen", "wall_s", "pack_id", "pack_points", "mode", "grid",
    "data",
    "git_sha", "git_dirty",
]


class StoreError(RuntimeError):
    """The store cannot be written or read. The message says what to do; finished points are never touched."""


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the branch above)
    os.umask(mask)
    return mask


def atomic_write(path: Path, content: str | Callable[[IO[bytes]], None]) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: a reader sees the old file or the new one.
    ``content``: the text, or a function that writes the bytes to the open file (``torch.save``). The file gets the
    permissions ``open`` would give it (mkstemp's are 0600: other users of a shared store could not read it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
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


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


def _disk_cause(err: BaseException) -> OSError | None:
    """The OSError of a full disk or a read-only store behind ``err``, if any. torch.save reports a failed write
    as a RuntimeError from its zip writer ("PytorchStreamWriter failed writing file ... inline_container.cc"), with
    the OSError of the file's write as its context."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _free(path: Path) -> str:
    for folder in (path.parent, *path.parents):
        try:
            return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free on its file system"
        except OSError:
            continue
    return "free space unknown"


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or a read-only store into an error that says so and names the fix."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        cause = _disk_cause(err)
        writer = isinstance(err, RuntimeError) and ("PytorchStreamWriter" in str(err) or "inline_container" in str(err))
        if cause is None and not writer:
            raise
        why = cause.strerror if cause is not None else f"the write failed ({str(err).splitlines()[0][:120]})"
        raise StoreError(f"cannot write {path}: {why}; {_free(path)}. Free space or fix permissions there (a "
                         f"store's checkpoint.pt files of interrupted runs, attempts/ folders and the W&B folders are "
                         f"what can go; or point paths.store elsewhere) and relaunch: finished points are kept and "
                         f"skipped.") from err


_POINT_KEYS = {"task": str, "model": str, "optimizer": str, "batch_size": int, "lr": (int, float), "seed": int,
               "k": int}
_TARGET_KEYS = {"target": (int, float), "reached": bool}


def check_summary(summary: object) -> str | None:
    """None if ``summary`` has what this code writes and reads (``train.PointRun.finish``), else what it lacks.
    A summary that fails this is corrupt: the point runs again, and no report reads it."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    if summary.get("status") not in FINAL + ("failed",):
        return f"status {summary.get('status')!r} is none of {', '.join(FINAL + ('failed',))}"
    for key, kind in (("experiment", str), ("signature", str), ("point", dict), ("targets", list)):
        if not isinstance(summary.get(key), kind):
            return f"{key} is missing or not a {kind.__name__}"
    point = summary["point"]
    bad = [k for k, kind in _POINT_KEYS.items() if not isinstance(point.get(k), kind) or isinstance(point.get(k), bool)]
    if bad:
        return f"point lacks {', '.join(bad)}"
    for rec in summary["targets"]:
        if not isinstance(rec, dict) or any(not isinstance(rec.get(k), kind) for k, kind in _TARGET_KEYS.items()):
            return f"a target record lacks {', '.join(_TARGET_KEYS)}"
    return None


class PointDir:
    """The directory of one point."""

    def __init__(self, store: str | Path, experiment: str, signature: str):
        self.path = Path(store) / experiment / signature
        self._lock_file = None
        self._streams: dict[str, object] = {}

    def read_summary(self) -> tuple[dict | None, str | None]:
        """(the summary, None), (None, what is wrong with it), or (None, None) when there is none."""
        try:
            summary = json.loads((self.path / "summary.json").read_text())
        except FileNotFoundError:
            return None, None
        except NotADirectoryError as err:
            raise StoreError(f"{err.filename} is not a directory: is paths.store a store?") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:  # not through atomic_write: a copied or edited store
            return None, f"unreadable ({type(err).__name__})"
        problem = check_summary(summary)
        return (None, problem) if problem else (summary, None)

    def summary(self) -> dict | None:
        """The point's summary if it has a sound one (``check_summary``), else None."""
        return self.read_summary()[0]

    def status(self) -> str:
        summary, problem = self.read_summary()
        if summary is not None:
            return summary["status"]
        if not self.path.exists():
            return "missing"
        if self._locked_elsewhere():
            return "running"
        return "corrupt" if problem else "incomplete"

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
            leftovers = [p for p in ("config.yaml", "metrics.jsonl", "events.jsonl", "summary.json", CHECKPOINT,
                                     CHECKPOINT_INFO, MIRRORED) if (self.path / p).exists()]
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
        for name in (CHECKPOINT, CHECKPOINT_INFO):  # a final or failed point never resumes
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()


def read_stream(path: Path) -> list[dict]:
    """The records of a point's jsonl stream (``PointDir.append`` writes them); a line cut short by a killed writer
    is skipped, the others still hold; none where the file does not exist."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def point_dirs(store: str | Path, experiment: str) -> list[Path]:
    root = Path(store) / experiment
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._") if root.is_dir() else []


def _identity(summary: dict, folder: Path) -> dict:
    """The point's identity: from its summary, or for summaries written before they held it, from its config.yaml
    (its data then unknown)."""
    if isinstance(summary.get("identity"), dict):
        return summary["identity"]
    from omegaconf import OmegaConf

    from surge_repro.point import strip

    unknown = "unknown: the summary predates data fingerprints"
    try:
        tree = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    except Exception:  # no or unreadable config.yaml: what the summary says of the point is all there is
        return {"point": {k: v for k, v in summary["point"].items() if k not in ("batch_size", "lr", "seed")},
                "data": unknown}
    return strip({**tree, "data": unknown})


def _mode(summary: dict) -> str:
    mode = summary.get("mode")
    if not isinstance(mode, dict):  # summaries before modes were recorded
        return "packed" if summary.get("pack") else "alone"
    return f"{'packed' if mode.get('packed') else 'alone'}, {mode.get('threads')} threads, {mode.get('device')}"


def _rows(summary: dict, ident: dict, grid: str) -> Iterator[dict]:
    point, prov = summary["point"], summary.get("provenance", {})
    base = {
        "experiment": summary["experiment"], "signature": summary["signature"], "status": summary["status"],
        **{k: point.get(k) for k in ("task", "model", "optimizer", "batch_size", "batch_unit", "lr", "seed", "k")},
        "windows": point.get("windows", 1),
        "beta1": point.get("beta1", math.nan), "beta2": point.get("beta2", math.nan),
        "probes": summary.get("probes"), "steps": summary.get("steps"), "examples_seen": summary.get("examples_seen"),
        "wall_s": summary.get("wall_s"),
        "pack_id": (summary.get("pack") or {}).get("id", summary["signature"]),
        "pack_points": (summary.get("pack") or {}).get("points", 1), "mode": _mode(summary), "grid": grid,
        "data": ident.get("data"), "git_sha": prov.get("git_sha"), "git_dirty": prov.get("git_dirty"),
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
            "start_gap": rec["target"] - rec["probe_loss"] if rec.get("probe_loss") is not None else math.nan,
            "exact_crossing": None if "previous_probe" not in rec or not rec.get("steps")
            else rec["previous_probe"] == rec["steps"] - 1,
            "loss_after_k": rec.get("probe_loss_after_k"), "loss_drop_after_k": drop,
            "loss_drop_mean": drop_mean, "estimate_drop_after_k": estimate_drop,
            "loss_drop_at_target": cut_short if rec.get("loss_drop_at_target") is None
            else rec["loss_drop_at_target"],
            **{k: math.nan if rec.get(k) is None else rec[k] for k in ("b_simple", "noise_trace", "grad_sq")},
        }


def load_grid(store: str | Path, experiment: str, statuses: tuple[str, ...] = FINAL) -> pd.DataFrame:
    """The tidy table of an experiment: one row per (run x target), for runs whose status is in ``statuses``.
    Corrupt summaries are left out, with a warning that names them (a relaunch runs their points again)."""
    from surge_repro.point import grid_of

    rows, grids, corrupt = [], {}, []
    for d in point_dirs(store, experiment):
        summary, problem = PointDir(store, experiment, d.name).read_summary()
        if problem:
            corrupt.append(f"{d.name} ({problem})")
        if summary is not None and summary.get("status") in statuses:
            ident = _identity(summary, d)
            grid, keys = grid_of(ident)
            rows.extend(_rows(summary, ident, grid))
            grids.setdefault(grid, keys)
    if corrupt:
        log.warning("%s/%s: %d corrupt summary.json left out (a relaunch runs these points again): %s", store,
                    experiment, len(corrupt), ", ".join(corrupt[:5]) + (" ..." if len(corrupt) > 5 else ""))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    numeric = ["batch_size", "lr", "beta1", "beta2", "seed", "k", "target_loss", "steps_to_target",
               "examples_to_target", "loss_at_target", "start_gap", "loss_after_k", "loss_drop_after_k",
               "loss_drop_at_target", "windows", "loss_drop_mean", "estimate_drop_after_k", "steps", "examples_seen",
               "wall_s", "pack_points", "probes"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    frame[["batch_size", "seed"]] = frame[["batch_size", "seed"]].astype("Int64")
    frame.attrs["grids"] = grids
    return frame


def read_table(path: str | Path) -> pd.DataFrame:
    """A tidy table that ``load_grid`` made and a report wrote (``<experiment>.csv.gz``), with ``load_grid``'s
    dtypes, so that a fit of it gives the numbers the store gave: reports/examples/ rebuilds from what is committed."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read the tidy table {path}: {err}. Fix: give the .csv.gz a report wrote "
                         f"(report.table=reports/examples/<experiment>.csv.gz)") from err
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise StoreError(f"{path} is not a tidy table of this suite: it lacks {missing[:5]}. Fix: give the .csv.gz "
                         f"a report wrote, or draw from the store (report.table=null)")
    frame = frame[COLUMNS]
    frame[["batch_size", "seed"]] = frame[["batch_size", "seed"]].astype("Int64")
    frame["reached"] = frame["reached"].astype(bool)
    return frame


def merge_tables(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of several tidy tables of one experiment as one table: rounds run in different sessions or places
    (a committed table of seeds 0-4 beside a store of seeds 5-9). A point in more than one keeps the rows of the
    first table that has it. Whether they are one grid is ``one_grid``'s to check: a point's grid is its identity
    less batch size, LR and seed, so rounds run with another config or data are refused, not merged."""
    tagged = [t.assign(_table=k) for k, t in enumerate(tables) if not t.empty]
    if not tagged:
        return tables[0]
    frame = pd.concat(tagged, ignore_index=True)
    first = frame.groupby("signature", sort=False)["_table"].transform("min")
    return frame[frame["_table"] == first].drop(columns="_table").reset_index(drop=True)


class MixedGridsError(ValueError):
    """An experiment's points belong to more than one grid; the message names the keys that differ and the fix."""


def one_grid(table: pd.DataFrame, select: list[str] | tuple[str, ...] = (), where: str = "the table") -> pd.DataFrame:
    """The rows of the one grid in ``table`` (``load_grid``): points that agree on every identity key but batch
    size, LR and seed. ``select``: ``key=value`` pairs (dotted identity keys, values as ``point.canonical`` writes
    them) that pick one grid when the table holds several. Raises ``MixedGridsError`` naming the keys whose values
    differ between grids (and how many points each has) when the table mixes grids and ``select`` picks not one:
    runs with different configs must never be merged into one cell."""
    grids: dict[str, dict] = table.attrs.get("grids", {})
    present = list(dict.fromkeys(table["grid"])) if "grid" in table else []
    keep = present
    for item in select:
        key, _, value = str(item).partition("=")
        keep = [g for g in keep if str(grids.get(g, {}).get(key)) == value]
    if len(keep) == 1:
        return table[table["grid"] == keep[0]] if len(present) > 1 else table
    if len(present) <= 1 and not select:
        return table
    keys = sorted({k for g in present for k in grids.get(g, {})})
    differ = [k for k in keys if len({json.dumps(grids.get(g, {}).get(k), sort_keys=True) for g in present}) > 1]
    points = table.drop_duplicates("signature").groupby("grid").size().to_dict()
    lines = []
    for k in differ[:6]:
        values: dict[str, int] = {}
        for g in present:
            v = str(grids.get(g, {}).get(k))
            values[v] = values.get(v, 0) + points.get(g, 0)
        shown = ", ".join(f"{v} ({n} points)" for v, n in list(values.items())[:4])
        lines.append(f"  {k}: {shown}" + (f" and {len(values) - 4} more values" if len(values) > 4 else ""))
    first = differ[0] if differ else "key"
    example = f"{first}={grids.get(present[0], {}).get(first)}" if present else "key=value"
    picked = f"report.select={list(select)} picks {len(keep)} of them. " if select else ""
    raise MixedGridsError(
        f"{where} holds {len(present)} grids of points that differ beyond batch size, LR and seed; a fit of their "
        f"mix would put one run per cell where there are several:\n" + "\n".join(lines) + f"\n{picked}Fix: pick "
        f"one with 'report.select=[\"{example}\"]', or give each grid its own experiment_name.")


def status_counts(store: str | Path, experiment: str) -> Counter:
    return Counter(PointDir(store, experiment, d.name).status() for d in point_dirs(store, experiment))


def experiments_in(store: Path, names: list[str]) -> list[str]:
    """``names`` (all of the store's experiments if none), checked against what ``store`` holds (StoreError)."""
    if not store.is_dir():
        raise StoreError(f"{store} is not a store directory (paths.store). Fix: give the folder run.py wrote into")
    found = sorted(p.name for p in store.iterdir() if p.is_dir() and p.name[0] not in "._")
    unknown = [e for e in names if e not in found]
    if unknown:
        raise StoreError(f"no experiment {', '.join(unknown)} in {store}/; it holds: {', '.join(found) or 'none'}")
    return list(names) or found


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m surge_repro.store",
                                     description="Count the points of a store's experiments in each status.")
    parser.add_argument("store", nargs="?", default="store", help="the store directory (paths.store; default store)")
    parser.add_argument("experiments", nargs="*", help="experiments to count (default: every one in the store)")
    args = parser.parse_args(argv)
    store = Path(args.store)
    try:
        found = experiments_in(store, args.experiments)
    except StoreError as err:
        parser.error(str(err))
    if not found:
        print(f"{store}/ holds no experiments yet")
        return 0
    for exp in found:
        counts = status_counts(store, exp)
        total = sum(counts.values())
        parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        print(f"{exp}: {total} points: {parts or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
