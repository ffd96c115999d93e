"""Where a grid stands: every point of an experiment's sweep against the store, and which ones are not final.

    python -m surge_repro.launch.status +experiment=fig2b_cnn5_fmnist_small_bs rounds=100
    python -m surge_repro.launch.status +experiment=quickstart 'batch=1,4'      # sweeps as on run.py's command line

It expands the sweep exactly as ``run.py -m`` does (Hydra's basic sweeper's own ``split_arguments`` on the
experiment's ``hydra.sweeper.params`` followed by the command line, a later value of a key replacing an earlier
one), checks every point's values as a run would (``config.validate``), computes each point's signature, and prints
per status (done, capped, diverged, failed, corrupt, incomplete, running, missing) how many points are in it, then
the points that a relaunch of the same command would run, with the overrides that name them and the step of their
checkpoint if they have one (from ``checkpoint.json``: nothing in the store is unpickled). Exit status 0 when every
point is final, 1 otherwise, 2 for a command line or store it cannot use. ``python -m surge_repro.store`` counts what
the store holds without a sweep to compare with.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from surge_repro.config import ConfigError
from surge_repro.point import signature
from surge_repro.run import checkpoint
from surge_repro.store import FINAL, STATUSES, PointDir
from surge_repro.sweep import grid_points
from surge_repro.tasks import DataError

ORDER = STATUSES + ("missing",)
USAGE = ("usage: python -m surge_repro.launch.status +experiment=<name> [overrides ...]\n"
         "  the same arguments as `python run.py -m`, e.g. +experiment=quickstart 'batch=1,4' paths.store=store")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__}" if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
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
