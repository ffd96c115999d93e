"""Grids on a SLURM cluster (or submitit's local executor): packs and chunks of points as the tasks of one job array.

    python run.py -m +experiment=quickstart launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
    python run.py -m +experiment=smoke launcher=submitit_local        # the same path, in local processes

The launcher is hydra-submitit-launcher's (its keys: partition, account, qos, timeout_min, gpus_per_node,
cpus_per_task, mem_gb, constraint, array_parallelism, setup, additional_parameters, ...; ``slurm/README.md``), with
surge_repro's packing in front: the sweep's jobs are planned as by ``launcher=packed`` (a pack per workload and batch
size, single points where packing does not apply or pay), and each array task runs one pack, or a chunk of
``points_per_task`` single points, so a grid of thousands of small points is tens of tasks, not thousands. Every
point keeps its own store entry; a task that dies (scancel, time limit, node failure) leaves its finished points
final and the rest incomplete, and relaunching the same command submits only what is missing.

Time limits and preemption: each task is submitit-Checkpointable (``ArrayTask``). Before the limit (``signal_delay_s``)
or when preempted, its points in training checkpoint at the end of their step and the task requeues itself (up to
``max_num_timeout`` times for time limits); the requeued task resumes them, bit for bit
(``surge_repro.run.checkpoint``).

Packing is decided for the nodes, not for the submitting machine: with ``device=auto`` a request for GPUs
(``gpus_per_node``, ``gpus_per_task`` or a ``gres`` with gpu) means CUDA there.

Submitting and waiting:

    ... launcher=slurm hydra.launcher.dry_run=true   # print the plan (tasks, points per task, resources) only
    ... launcher=slurm hydra.launcher.wait=false     # submit, print the job id and the status command, and return

With ``wait`` (the default) the command logs every ``progress_every_s`` seconds how many points are final, their
rate and the time left, and the array's task states. Each submission is recorded in the store
(``<experiment>/.slurm/<job id>.json``: which points each array task trains), so that
``python -m surge_repro.launch.status`` can join the store's states with ``sacct``'s for the points not yet final.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import submitit
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf

from surge_repro.launch.launcher import PackedLauncher, progress, run_unit, sweep_log
from surge_repro.point import signature
from surge_repro.run import checkpoint
from surge_repro.store import FINAL, PointDir, atomic_write

log = logging.getLogger("surge_repro")

PACKING_KEYS = ("pack", "cpu_max_batch", "memory_fraction", "points_per_task")
SUBMIT_KEYS = ("wait", "dry_run", "progress_every_s")
RESOURCE_KEYS = ("partition", "account", "qos", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node",
                 "gpus_per_task", "gres", "constraint", "array_parallelism")


class PackedSubmititLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher with surge_repro's packing: one array task per pack or chunk of points."""

    def __init__(self, executor: str, **params: Any) -> None:
        self._EXECUTOR = executor  # "slurm" or "local": submitit's executor
        packing = {k: params.pop(k) for k in PACKING_KEYS if k in params}
        submit = {k: params.pop(k) for k in SUBMIT_KEYS if k in params}
        self.wait, self.dry_run = bool(submit.get("wait", True)), bool(submit.get("dry_run", False))
        self.progress_every_s = float(submit.get("progress_every_s", 300))
        self.points_per_task = int(packing.pop("points_per_task", 16))
        if self.points_per_task < 1:
            raise ValueError(f"hydra.launcher.points_per_task={self.points_per_task}: at least 1. "
                             f"Fix: hydra.launcher.points_per_task=16")
        super().__init__(**params)
        self.planner = PackedLauncher(n_jobs=1, **packing)

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.planner.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _device_type(self) -> str:
        p = self.params
        gpus = p.get("gpus_per_node") or p.get("gpus_per_task") or "gpu" in str(p.get("gres") or "")
        return "cuda" if gpus else "cpu"

    def _executor(self):
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def tasks(self, units: list[list[int]]) -> list[list[int]]:
        """Array tasks as lists of indices into ``units``: each pack alone; single points in chunks of
        ``points_per_task``."""
        packs = [[k] for k, u in enumerate(units) if len(u) > 1]
        singles = [k for k, u in enumerate(units) if len(u) == 1]
        chunks = [singles[k:k + self.points_per_task] for k in range(0, len(singles), self.points_per_task)]
        return packs + chunks

    def plan_lines(self, units: list[list[int]], cfgs: dict[int, DictConfig], tasks: list[list[int]]) -> list[str]:
        """The array a launch would submit: its tasks, what each trains, and the resources each asks for."""
        packs = sum(len(units[t[0]]) > 1 for t in tasks)
        points = [sum(len(units[u]) for u in task) for task in tasks]
        asked = {k: self.params[k] for k in RESOURCE_KEYS if self.params.get(k) is not None}
        lines = [f"{self._EXECUTOR} job array: {len(tasks)} task(s) ({packs} pack(s), {len(tasks) - packs} chunk(s) "
                 f"of up to {self.points_per_task} single points), {sum(points)} point(s), {min(points)}-"
                 f"{max(points)} per task",
                 "each task asks for: " + ", ".join(f"{k}={v}" for k, v in asked.items())]
        for k, task in enumerate(tasks[:20]):
            kind = "pack" if len(units[task[0]]) > 1 else "chunk"
            sizes = sorted({int(cfgs[units[u][0]].batch) for u in task})
            batch = f"B={sizes[0]}" + (f"-{sizes[-1]}" if len(sizes) > 1 else "")
            lines.append(f"  task {k}: {kind} of {points[k]} point(s), {batch}")
        if len(tasks) > 20:
            lines.append(f"  ... and {len(tasks) - 20} more task(s)")
        return lines

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with sweep_log(sweep_dir / "sweep.log"):
            return self._launch(job_overrides, initial_job_idx, sweep_dir)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                sweep_dir: Path) -> Sequence[JobReturn]:
        units, cfgs, final = self.planner.plan(job_overrides, initial_job_idx, workers=1,
                                               device_type=self._device_type())
        tasks = self.tasks(units)
        if not tasks:
            log.info("every point of the sweep is already final in the store: nothing to submit")
            return self.planner.returns([], [], final, job_overrides, sweep_dir)
        for line in self.plan_lines(units, cfgs, tasks):
            log.info("%s", line)
        if self.dry_run:
            log.info("dry run (hydra.launcher.dry_run=true): nothing submitted")
            return self.planner.returns(units, [[(JobStatus.COMPLETED, "planned")] * len(u) for u in units], final,
                                        job_overrides, sweep_dir)
        executor = self._executor()
        args = [[[cfgs[i] for i in units[u]] for u in task] for task in tasks]
        logs = [str(sweep_dir / f"task-{k}.log") for k in range(len(tasks))]
        jobs = executor.map_array(ArrayTask(), args, [self.planner.memory_fraction] * len(tasks), logs)
        job_id = jobs[0].job_id.split("_")[0] if jobs else "-"
        record(cfgs, units, tasks, job_id, sweep_dir, self._EXECUTOR)
        log.info("submitted %d job(s) as %d array task(s) of %s job %s (%d pack(s)); logs in %s", sum(map(len, units)),
                 len(tasks), self._EXECUTOR, job_id, sum(len(u) > 1 for u in units), sweep_dir)
        first = cfgs[units[0][0]]
        status = (f"python -m surge_repro.launch.status +experiment={first.experiment_name} "
                  f"paths.store={first.paths.store} [the sweep's overrides]")
        if not self.wait:
            log.info("not waiting (hydra.launcher.wait=false). Follow it with:\n  squeue -j %s\n  %s\n"
                     "Relaunch the same command once it ends to run what did not finish.", job_id, status)
            return self.planner.returns(units, [[(JobStatus.COMPLETED, "submitted")] * len(u) for u in units],
                                        final, job_overrides, sweep_dir)
        self.follow(jobs, [cfgs[i] for u in units for i in u])
        outcomes: dict[int, list] = {}
        for task, job in zip(tasks, jobs):
            try:
                per_unit = job.results()[0]
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
                # cancelled, out of time, or the node died: its finished points are final in the store, the rest
                # are incomplete and the next launch of the same command runs them
                log.error("array task %s did not complete: %s", job.job_id, str(err).splitlines()[0])
                per_unit = [[(JobStatus.FAILED, err)] * len(units[u]) for u in task]
            outcomes.update(zip(task, per_unit))
        return self.planner.returns(units, [outcomes[k] for k in range(len(units))], final, job_overrides,
                                    sweep_dir)

    def follow(self, jobs: list, cfgs: list[DictConfig]) -> None:
        """Wait for the array's tasks, logging every ``progress_every_s`` how many of its points are final in the
        store, at what rate, the time left, and the tasks' states."""
        points = [PointDir(c.paths.store, c.experiment_name, signature(c)) for c in cfgs]
        start = last = time.perf_counter()
        while not all(job.done() for job in jobs):
            time.sleep(min(5.0, self.progress_every_s))
            if time.perf_counter() - last >= self.progress_every_s:
                last = time.perf_counter()
                done = sum(p.status() in FINAL for p in points)
                states = Counter(job.state for job in jobs)
                log.info("%s; array tasks: %s", progress(done, len(points), last - start),
                         ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))


def record(cfgs: dict[int, DictConfig], units: list[list[int]], tasks: list[list[int]], job_id: str,
           sweep_dir: Path, executor: str) -> None:
    """Which points each array task of job ``job_id`` trains, in the store (``<experiment>/.slurm/<job id>.json``),
    for ``launch.status`` to join with ``sacct``."""
    by_experiment: dict[tuple[str, str], dict[str, int]] = {}
    for k, task in enumerate(tasks):
        for u in task:
            for i in units[u]:
                key = (str(cfgs[i].paths.store), cfgs[i].experiment_name)
                by_experiment.setdefault(key, {})[signature(cfgs[i])] = k
    for (store, experiment), tasks_of in by_experiment.items():
        path = Path(store) / experiment / ".slurm" / f"{job_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"job_id": job_id, "sweep_dir": str(sweep_dir), "points": tasks_of,
                                       "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                       "executor": executor}, indent=1))


class ArrayTask(submitit.helpers.Checkpointable):
    """One array task: its units one after another, in the task's own process.

    Checkpointable: on SLURM's signal (time limit near, or preemption) submitit calls ``checkpoint()``, which
    resubmits the same units, requeues the job and exits. ``checkpoint.defer_signal`` makes that wait for the end of
    the current training step, after the points in training have saved their checkpoints; the requeued task then
    skips its finished points and resumes the others where they were (``surge_repro.run.checkpoint``).
    """

    def __call__(self, units: list[list[DictConfig]], memory_fraction: float, log_file: str) -> list[list[tuple]]:
        checkpoint.defer_signal(submitit.JobEnvironment._usr_sig())
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        for cfgs in units:
            for cfg in cfgs:
                if cfg.threads is None and cpus:  # the CPUs SLURM gave the task, not every core of the node
                    cfg.threads = int(cpus)
        return [run_unit(cfgs, memory_fraction, log_file, configure=k == 0) for k, cfgs in enumerate(units)]
