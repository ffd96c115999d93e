"""Where a grid stands: every point of an experiment's sweep against the store, and which ones are not final.

    python -m surge_repro.status +experiment=fig2b_cnn5_fmnist_small_bs rounds=100
    python -m surge_repro.status +experiment=quickstart 'batch=1,4'      # sweeps as on run.py's command line

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

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from surge_repro import checkpoint
from surge_repro.config import ConfigError, compose, validate
from surge_repro.launcher import group_jobs, with_pack_keys
from surge_repro.point import signature
from surge_repro.store import FINAL, STATUSES, PointDir
from surge_repro.tasks import DataError

ORDER = STATUSES + ("missing",)
USAGE = ("usage: python -m surge_repro.status +experiment=<name> [overrides ...]\n"
         "  the same arguments as `python run.py -m`, e.g. +experiment=quickstart 'batch=1,4' paths.store=store")


def expand(argv: Sequence[str]) -> list[list[str]]:
    """Each job's overrides, in the order ``run.py -m`` launches them: what Hydra's basic sweeper computes from the
    sweeper's params and the command line's task overrides (``hydra.*`` overrides configure Hydra, not jobs)."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(argv))
    base = compose([o.input_line for o in parsed if not o.is_sweep_override()], hydra_node=True)
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + task), None) or [[[]]]
    return [list(job) for job in jobs]


def hydra_overrides(argv: Sequence[str]) -> list[str]:
    """The command line's ``hydra.*`` overrides: they configure Hydra, and compose beside each job's."""
    return [a for a in argv if a.split("=", 1)[0].lstrip("+~").startswith("hydra.")]


def grid_points(argv: Sequence[str]) -> list[tuple[list[str], object]]:
    """(job overrides, config) for every point of the sweep; one composition per group of jobs that differ only in
    LR and seed, as the packing launcher does. Raises ConfigError on a point whose values a run refuses."""
    jobs = expand(argv)
    out: list = [None] * len(jobs)
    for group in group_jobs(jobs):
        cfg = compose(hydra_overrides(argv) + jobs[group[0]])
        for i in group:
            out[i] = (jobs[i], with_pack_keys(cfg, jobs[i]))
            try:
                validate(out[i][1])
            except ConfigError as err:
                raise ConfigError(f"{err} (point: {' '.join(jobs[i])})") from None
    return out


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
