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
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import submitit
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf

from surge_repro.launch.launcher import PackedLauncher, run_unit
from surge_repro.run import checkpoint

log = logging.getLogger("surge_repro")

PACKING_KEYS = ("pack", "cpu_max_batch", "memory_fraction", "points_per_task")


class PackedSubmititLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher with surge_repro's packing: one array task per pack or chunk of points."""

    def __init__(self, executor: str, **params: Any) -> None:
        self._EXECUTOR = executor  # "slurm" or "local": submitit's executor
        packing = {k: params.pop(k) for k in PACKING_KEYS if k in params}
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

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        units, cfgs, final = self.planner.plan(job_overrides, initial_job_idx, workers=1,
                                               device_type=self._device_type())
        tasks = self.tasks(units)
        if not tasks:
            log.info("every point of the sweep is already final in the store: nothing to submit")
            return self.planner.returns([], [], final, job_overrides, sweep_dir)
        executor = self._executor()
        args = [[[cfgs[i] for i in units[u]] for u in task] for task in tasks]
        logs = [str(sweep_dir / f"task-{k}.log") for k in range(len(tasks))]
        jobs = executor.map_array(ArrayTask(), args, [self.planner.memory_fraction] * len(tasks), logs)
        log.info("submitted %d job(s) as %d array task(s) of %s job %s (%d pack(s)); logs in %s", sum(map(len, units)),
                 len(tasks), self._EXECUTOR, jobs[0].job_id.split("_")[0] if jobs else "-",
                 sum(len(u) > 1 for u in units), sweep_dir)
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
