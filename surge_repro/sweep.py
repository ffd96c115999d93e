"""A sweep's points, as ``run.py -m`` launches them: the ground that launching, status and the figure registry share.

``expand`` turns a command line into each job's overrides (Hydra's basic sweeper's own ``split_arguments``);
``group_jobs`` gathers the jobs that differ only in LR and seed (``PACK_KEYS``: one workload at one batch size, which
one composition serves, and which the launcher may train as one pack); ``with_pack_keys`` sets a job's LR and seed on
a copy of its group's config; ``grid_points`` gives every point's config, checked as a run checks it.
"""

from __future__ import annotations

import copy
from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from surge_repro.config import ConfigError, compose, validate

PACK_KEYS = ("optimizer.lr", "seed")


def group_jobs(job_overrides: Sequence[Sequence[str]]) -> list[list[int]]:
    """Indices of jobs whose overrides agree on everything but ``PACK_KEYS``, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, overrides in enumerate(job_overrides):
        key = tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in PACK_KEYS))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def with_pack_keys(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A copy of ``cfg`` (composed for a job of the same group) with this job's values of ``PACK_KEYS`` set."""
    job = copy.deepcopy(cfg)
    keys = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in PACK_KEYS]
    for override in OverridesParser.create().parse_overrides(keys):
        OmegaConf.update(job, override.key_or_group, override.value(), force_add=True)
    return job


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
