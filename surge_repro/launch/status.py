"""Where a grid stands: every point of an experiment's sweep against the store, and which ones are not final.

    python -m surge_repro.launch.status +experiment=fig2b_cnn5_fmnist_small_bs rounds=100
    python -m surge_repro.launch.status +experiment=quickstart 'batch=1,4'      # sweeps as on run.py's command line

It expands the sweep exactly as ``run.py -m`` does (Hydra's basic sweeper's own ``split_arguments`` on the
experiment's ``hydra.sweeper.params`` followed by the command line, a later value of a key replacing an earlier
one), checks every point's values as a run would (``config.validate``), computes each point's signature, and prints
per status (done, capped, diverged, failed, corrupt, incomplete, running, missing) how many points are in it, then
the points that a relaunch of the same command would run, with the overrides that name them and the step of their
checkpoint if they have one (from ``checkpoint.json``: nothing in the store is unpickled). Points submitted to SLURM
(``launcher=slurm`` records each submission in ``<experiment>/.slurm/``) are joined with ``sacct``: the state of the
array task that trains each point not yet final (pending, running, failed, timeout, ...). Exit status 0 when every
point is final, 1 otherwise, 2 for a command line or store it cannot use. ``python -m surge_repro.store`` counts what
the store holds without a sweep to compare with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from surge_repro.config import ConfigError, shell_completion
from surge_repro.point import signature
from surge_repro.run import checkpoint
from surge_repro.store import FINAL, STATUSES, PointDir
from surge_repro.sweep import grid_points
from surge_repro.tasks import DataError

ORDER = STATUSES + ("missing",)
USAGE = ("usage: python -m surge_repro.launch.status +experiment=<name> [overrides ...]\n"
         "  the same arguments as `python run.py -m`, e.g. +experiment=quickstart 'batch=1,4' paths.store=store")


def slurm_states(store: Path, experiment: str, signatures: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Signature -> (job id, state of the array task that trains it) for the points that the latest SLURM
    submission recorded in the store names (``sacct``, then ``squeue``); empty without records or without SLURM."""
    latest: dict[str, tuple[str, int]] = {}
    records = sorted((store / experiment / ".slurm").glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in records:
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get("executor") == "slurm":
            latest.update({sig: (str(rec["job_id"]), int(k)) for sig, k in rec["points"].items()})
    wanted = {sig: latest[sig] for sig in signatures if sig in latest}
    if not wanted or shutil.which("sacct") is None:
        return {}
    jobs = ",".join(sorted({job for job, _ in wanted.values()}))
    states: dict[tuple[str, int], str] = {}
    # accounting learns of a job a moment after its submission; the queue knows at once, so it has the last word
    for cmd in (["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", jobs],
                ["squeue", "-h", "-r", "-o", "%i|%T", "-j", jobs]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            states.update(task_states(out.stdout))
    return {sig: (job, states.get((job, k), "UNKNOWN")) for sig, (job, k) in wanted.items()}


def task_states(sacct: str) -> dict[tuple[str, int], str]:
    """(job id, array index) -> state, from ``sacct -P -o JobID,State`` lines such as ``57_3|RUNNING``,
    ``57_[4-9,12%256]|PENDING`` (tasks not started yet) or ``57_1|CANCELLED by 0``."""
    out = {}
    for line in sacct.splitlines():
        if "|" not in line or "_" not in line.split("|", 1)[0]:
            continue
        job_task, state = line.split("|", 1)
        job, task = job_task.split("_", 1)
        state = state.split()[0] if state.split() else "UNKNOWN"
        if task.startswith("["):
            for part in task.strip("[]").split("%")[0].split(","):
                first, _, last = part.partition("-")
                for k in range(int(first), int(last or first) + 1):
                    out[job, k] = state
        elif task.isdigit():
            out[job, int(task)] = state
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__}" if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if shell_completion(argv, __file__):
        return 0
    try:
        points = grid_points(argv)
        store = Path(str(points[0][1].paths.store)) if points else None
        if store is not None and store.exists() and not store.is_dir():
            raise ConfigError(f"paths.store={store} is a file, not a store directory. Fix: paths.store=<a directory>")
        statuses, dirs = [], []
        for overrides, cfg in points:
            dirs.append(PointDir(cfg.paths.store, cfg.experiment_name, signature(cfg)))
            statuses.append(dirs[-1].status())
    except (ConfigError, DataError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}\n{USAGE}", file=sys.stderr)
        return 2
    counts = Counter(statuses)
    name = points[0][1].experiment_name if points else "?"
    print(f"{name}: {len(points)} points in the sweep: "
          + ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s]))
    todo = [(s, o, d) for s, (o, _), d in zip(statuses, points, dirs) if s not in FINAL]
    if todo and store is not None:
        joined = slurm_states(store, name, [d.path.name for _, _, d in todo])
        if joined:
            by_state = Counter(state for _, state in joined.values())
            jobs = sorted({job for job, _ in joined.values()})
            print(f"SLURM (job {', '.join(jobs)}): of the {len(todo)} points not final, "
                  + ", ".join(f"{n} in {s.lower()} tasks" for s, n in sorted(by_state.items())))
    shared = set.intersection(*(set(o) for o, _ in points)) if points else set()  # the command's own: not repeated
    for status, overrides, point in todo[:20]:
        step = checkpoint.step_of(point) if status in ("incomplete", "running") else None
        named = " ".join(o for o in overrides if o not in shared) or "(the command's only point)"
        print(f"  {status:10s} {named}" + (f"  (checkpoint at step {step})" if step else ""))
    if len(todo) > 20:
        print(f"  ... and {len(todo) - 20} more")
    if todo:
        print(f"relaunching the same sweep runs these {len(todo)} (running ones are left to their process)")
    return 0 if not todo else 1


if __name__ == "__main__":
    sys.exit(main())
