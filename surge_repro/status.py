"""Where a grid stands: every point of an experiment's sweep against the store, and which ones are not final.

    python -m surge_repro.status +experiment=fig2b_cnn5_fmnist_small_bs rounds=100
    python -m surge_repro.status +experiment=quickstart 'batch=1,4'      # sweeps as on run.py's command line

It expands the sweep exactly as ``run.py -m`` would (the experiment's ``hydra.sweeper.params`` and the command
line's sweeps), computes each point's signature, and prints per status (done, capped, diverged, failed, incomplete,
running, missing) how many points are in it, then the points that a relaunch of the same command would run, with
the overrides that name them and the step of their checkpoint if they have one (a relaunch resumes them there).
Exit status 0 when every point is final, 1 otherwise. ``python -m surge_repro.store`` counts what the store holds
without a sweep to compare with.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from surge_repro import checkpoint
from surge_repro.config import compose
from surge_repro.launcher import group_jobs, with_pack_keys
from surge_repro.point import signature
from surge_repro.store import FINAL, PointDir

ORDER = ("done", "capped", "diverged", "failed", "incomplete", "running", "missing")


def expand(argv: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The fixed overrides and each job's sweep overrides, in the order the basic sweeper launches them."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(argv))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose(fixed, hydra_node=True)
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    sweeps = {o.get_key_element(): o for o in parser.parse_overrides(params)}
    sweeps.update({o.get_key_element(): o for o in parsed if o.is_sweep_override()})
    (jobs,) = BasicSweeper.split_arguments(list(sweeps.values()), None) or [[[]]]
    return fixed, [list(job) for job in jobs]


def grid_points(argv: Sequence[str]) -> list[tuple[list[str], object]]:
    """(job overrides, config) for every point of the sweep; one composition per group of jobs that differ only in
    LR and seed, as the packing launcher does."""
    fixed, jobs = expand(argv)
    out: list = [None] * len(jobs)
    for group in group_jobs(jobs):
        cfg = compose(fixed + jobs[group[0]])
        for i in group:
            out[i] = (jobs[i], with_pack_keys(cfg, jobs[i]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    points = grid_points(argv)
    statuses, dirs = [], []
    for overrides, cfg in points:
        dirs.append(PointDir(cfg.paths.store, cfg.experiment_name, signature(cfg)))
        statuses.append(dirs[-1].status())
    counts = Counter(statuses)
    name = points[0][1].experiment_name if points else "?"
    print(f"{name}: {len(points)} points in the sweep: "
          + ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s]))
    todo = [(s, o, d) for s, (o, _), d in zip(statuses, points, dirs) if s not in FINAL]
    for status, overrides, point in todo[:20]:
        step = checkpoint.step_of(point) if status in ("incomplete", "running") else None
        print(f"  {status:10s} {' '.join(overrides)}" + (f"  (checkpoint at step {step})" if step else ""))
    if len(todo) > 20:
        print(f"  ... and {len(todo) - 20} more")
    if todo:
        print(f"relaunching the same sweep runs these {len(todo)} (running ones are left to their process)")
    return 0 if not todo else 1


if __name__ == "__main__":
    sys.exit(main())
