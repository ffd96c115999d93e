"""The packing launcher: a Hydra launcher that trains the points of a multirun in units (packs or single points).

Select it with ``launcher=packed`` (the default of every experiment); ``conf/launcher/packed.yaml`` lists its keys::

    python run.py -m +experiment=quickstart                               # packs, one worker per core
    python run.py -m +experiment=fig2b_cnn5_fmnist_small_bs hydra.launcher.pack=never   # one by one

Jobs whose overrides differ only in ``optimizer.lr`` and ``seed`` (``PACK_KEYS``) form a group: one workload at one
batch size. A group trains as packs when ``pack`` allows it (``auto``: always on a GPU; on a CPU only at batch sizes up
to ``cpu_max_batch``, where the shared per-step overhead outweighs vmap's slower convolutions, measured in
``reports/bench_speed.py``) and the workload allows it (``packing.why_not_packable``); otherwise its points run one
by one. Units go to ``n_jobs`` worker processes through joblib, largest first, each to the one training loop
(``surge_repro.run.train.run_points``); with ``n_jobs: 1`` they run in this process, which is what one GPU wants.
With ``gpus`` set (``auto``: every visible GPU; a number: the first n; a list: those ids) there is one worker per
GPU, pinned to it by ``CUDA_VISIBLE_DEVICES`` before it touches CUDA, and the units go to whichever worker is free::

    python run.py -m +experiment=fig2c_cnn5_fmnist_large_bs hydra.launcher.gpus=auto    # 8 GPUs: 8 workers

Each point keeps its own store entry: the store, not Hydra's job directories, holds the results, and relaunching
skips what is done.

Units train eager unless ``compile`` (a root config key, not part of a point's identity) asks for torch.compile:
``compile=default`` compiles each step's forward and backward, ``compile=reduce-overhead`` adds CUDA graphs on a GPU
(``surge_repro/run/engines.py``). Eager is the default because compiling does not pay on a CPU: on this repository's
2-core machine (torch 2.13, one thread, the CNN, ``reports/bench_compile.py --threads 1``) eager/compiled step time
was 1.01x for a pack of 32 at B = 1, 0.82x at B = 4, 0.76x at B = 16, and 0.60x and 0.56x for one point at B = 64 and
256, after 8 to 16 s of compiling per graph (a cold cache). Not yet measured on a GPU, where CUDA graphs may pay at
small B: run ``python reports/bench_compile.py --mode reduce-overhead`` there before setting it.

The class Hydra instantiates is a thin one in ``hydra_plugins/surge_repro_launcher`` (Hydra only loads launchers
from that namespace); the logic is here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from surge_repro.mirror import decide
from surge_repro.store import StoreError
from surge_repro.sweep import PACK_KEYS, group_jobs, with_pack_keys

log = logging.getLogger("surge_repro")

PACK_CHOICES = ("auto", "always", "never")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def check_sweep(compose_job: Callable[[Sequence[str]], DictConfig], jobs: Sequence[Sequence[str]]) -> None:
    """Check every point of a sweep before any of them runs: its values (``config.validate``, the same messages as a
    single run), its batch size against its task's data, and that its data are there. Composes one job per group
    (``group_jobs``: the others differ only in LR and seed, set on copies). Raises SystemExit naming each problem
    and a point that has it: nothing has been run or written."""
    from surge_repro.config import ConfigError, build, validate
    from surge_repro.tasks import DataError

    problems: dict[str, list[str]] = {}
    for group in group_jobs(jobs):
        cfg, valid = compose_job(jobs[group[0]]), []
        for i in group:
            try:
                validate(with_pack_keys(cfg, jobs[i]))
                valid.append(i)
            except ConfigError as err:
                problems.setdefault(str(err), []).append(" ".join(jobs[i]))
        if not valid:
            continue
        try:  # the data, once per group (the loaders cache it for the points this process runs)
            build(cfg.task).check_batch_size(int(cfg.batch))
        except (DataError, ValueError) as err:
            problems.setdefault(str(err), []).extend(" ".join(jobs[i]) for i in valid)
    if problems:
        lines = [f"  {msg}\n    ({len(points)} point(s), e.g. {points[0]})" for msg, points in problems.items()]
        raise SystemExit("error: the sweep has points that cannot run:\n" + "\n".join(lines)
                         + "\nNo point of the sweep was run.")


def failed_points(returns: Sequence[Sequence[JobReturn]]) -> list[tuple[str, str]]:
    """(overrides, what happened) for each job of a sweep that did not finish its point: a point that failed (its
    summary says why) or a unit that raised."""
    out = []
    for batch in returns:
        for r in batch:
            if r.status == JobStatus.FAILED:
                out.append((" ".join(r.overrides), f"{type(r._return_value).__name__}: {r._return_value}"))
            elif r.status == JobStatus.COMPLETED and r._return_value == "failed":
                out.append((" ".join(r.overrides), "failed (the error is in its summary.json)"))
    return out


def _n_workers(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) + 1 + n_jobs if n_jobs < 0 else n_jobs)  # joblib's meaning of -1, -2, ...


def gpu_ids(gpus: Any) -> list[str]:
    """The GPUs that ``hydra.launcher.gpus`` names, as ``CUDA_VISIBLE_DEVICES`` entries of the workers: ``auto``
    every GPU this process sees, a number n the first n of them, a list those ids as given. The ids this process
    sees are its own ``CUDA_VISIBLE_DEVICES`` entries when that is set (a SLURM allocation's GPUs), else 0, 1, ..."""
    if not isinstance(gpus, str) and hasattr(gpus, "__len__"):  # a list, or Hydra's ListConfig of one
        ids = [str(g) for g in gpus]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"hydra.launcher.gpus={list(gpus)}: name each GPU once. Fix: hydra.launcher.gpus=auto")
        return ids
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = [g.strip() for g in visible.split(",") if g.strip()][:count] if visible else [str(i) for i in range(count)]
    if gpus == "auto":
        want = len(seen)
    elif isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
        want = gpus
    else:
        raise ValueError(f"hydra.launcher.gpus={gpus!r}: auto, a number of GPUs or a list of ids. "
                         f"Fix: hydra.launcher.gpus=auto")
    if not seen or want > len(seen):
        raise ValueError(f"hydra.launcher.gpus={gpus} but torch sees {len(seen)} GPU(s) here. Fix: leave "
                         f"hydra.launcher.gpus unset (null) for CPU workers (n_jobs), or ask for at most {len(seen)}")
    return seen[:want]


@contextlib.contextmanager
def sweep_log(path: Path):
    """The suite's log lines, in its own format (not Hydra's ``[HYDRA]``), on stderr and in ``path`` (the sweep's
    ``sweep.log``, whatever ``n_jobs`` is; worker processes also write ``unit-<k>.log``), while a sweep launches."""
    logger = logging.getLogger("surge_repro")
    handlers = [logging.StreamHandler(), logging.FileHandler(path)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    before = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.propagate, logger.level = before


def progress(done: int, total: int, elapsed: float) -> str:
    """Points finished of the total, their rate and the time left at that rate."""
    if not done or elapsed <= 0:
        return f"{done} of {total} points finished"
    rate = done / elapsed
    return (f"{done} of {total} points finished ({rate * 60:.3g} points/min, about {_duration((total - done) / rate)} "
            f"left)")


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _pin(ids) -> None:
    """A GPU worker's initializer: take one GPU id from the shared queue and see only that GPU. CUDA reads
    CUDA_VISIBLE_DEVICES when it starts, which in a fresh (spawned) worker is after this."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ids.get()


class PackedLauncher(Launcher):
    def __init__(self, n_jobs: int = 1, pack: str = "auto", cpu_max_batch: int = 16,
                 memory_fraction: float = 0.5, gpus: Any = None) -> None:
        if pack not in PACK_CHOICES:
            raise ValueError(f"hydra.launcher.pack={pack!r}: choose one of {', '.join(PACK_CHOICES)}. "
                             f"Fix: hydra.launcher.pack=auto")
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"hydra.launcher.memory_fraction={memory_fraction}: a fraction of free memory in (0, 1]. "
                             f"Fix: hydra.launcher.memory_fraction=0.5")
        self.n_jobs, self.pack, self.cpu_max_batch = n_jobs, pack, cpu_max_batch
        self.memory_fraction = memory_fraction
        self.gpus = gpu_ids(gpus) if gpus is not None else None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _compose(self, overrides: Sequence[str], idx: int) -> DictConfig:
        """The job's config as its task sees it: Hydra's own node set aside in ``HydraConfig``, as ``run_job`` does."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def _group_configs(self, group: list[int], job_overrides: Sequence[Sequence[str]], first: int) -> list[DictConfig]:
        """The configs of a group's jobs. Hydra composes the first; the others differ from it only in the values of
        ``PACK_KEYS``, which are set on copies of it (composing each job anew costs 0.1 s, 15 s for the quickstart)."""
        cfg = self._compose(job_overrides[group[0]], first + group[0])
        return [with_pack_keys(cfg, job_overrides[i]) for i in group]

    def _packs(self, cfg: DictConfig, size: int, device_type: str | None = None) -> tuple[bool, str]:
        """Whether a group of ``size`` jobs like ``cfg`` trains packed, and why (the architecture only, no data).
        ``device_type``: where the jobs will run, when that is not this machine (a cluster's GPU nodes)."""
        if size < 2:
            return False, "a single point"
        if self.pack == "never":
            return False, "hydra.launcher.pack=never"
        from surge_repro.config import build
        from surge_repro.run.packing import why_not_packable
        from surge_repro.run.train import device_for

        with torch.device("meta"):  # the architecture only: no memory, no initialisation cost
            model = build(cfg.model)
        reason = why_not_packable(cfg, model)
        if reason:
            return False, reason
        kind = device_type if str(cfg.device) == "auto" and device_type else device_for(str(cfg.device)).type
        if self.pack == "auto" and kind == "cpu" and int(cfg.batch) > self.cpu_max_batch:
            return False, (f"B={cfg.batch} > hydra.launcher.cpu_max_batch={self.cpu_max_batch} on a CPU, where "
                           f"a packed step costs more than the steps it replaces")
        return True, f"B={cfg.batch} on {kind}"

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, workers: int,
             device_type: str | None = None) -> tuple[list[list[int]], dict[int, DictConfig], dict[int, str]]:
        """Units (lists of job indices: a pack, or one point), largest first; every job's config; and the jobs whose
        point the store already has as final, with its status (nothing to launch for them)."""
        from surge_repro.point import signature
        from surge_repro.run import checkpoint
        from surge_repro.store import FINAL, PointDir

        units: list[list[int]] = []
        packed_groups = []
        cfgs: dict[int, DictConfig] = {}
        final: dict[int, str] = {}
        for group in group_jobs(job_overrides):
            cfgs.update(zip(group, self._group_configs(group, job_overrides, initial_job_idx)))
            resumed: dict[tuple, list[int]] = {}
            for i in group:
                point = PointDir(cfgs[i].paths.store, cfgs[i].experiment_name, signature(cfgs[i]))
                status = point.status()
                if status in FINAL:
                    final[i] = status
                elif (info := checkpoint.info(point)) is not None:  # resumes in its mode: its own pack, or alone
                    key = (info["pack"]["id"], info["step"]) if info.get("pack") else ("alone", i)
                    resumed.setdefault(key, []).append(i)
            for key, unit in resumed.items():
                log.info("%d point(s) resume from their checkpoints %s", len(unit),
                         f"as pack {key[0]} at step {key[1]}" if key[0] != "alone" else "alone")
                units.append(unit)
            skipped = [i for i in group if i in final]
            if skipped:
                log.info("%d point(s) already final in the store (%s): skipped", len(skipped),
                         ", ".join(f"{n} {s}" for s, n in sorted(Counter(final[i] for i in skipped).items())))
            taken = {i for unit in resumed.values() for i in unit}
            group = [i for i in group if i not in final and i not in taken]
            if not group:
                continue
            packs, why = self._packs(cfgs[group[0]], len(group), device_type)
            shared = " ".join(o for o in filter_overrides(job_overrides[group[0]])
                              if o.split("=", 1)[0] not in PACK_KEYS)
            log.info("%d point(s) [%s]: %s (%s)", len(group), shared, "packed" if packs else "one by one", why)
            if packs:
                packed_groups.append(group)
            else:
                units.extend([i] for i in group)
        # fewer packs than workers would leave cores idle: split each pack so that every worker gets one
        parts = max(1, math.ceil(workers / len(packed_groups))) if packed_groups and workers > 1 else 1
        for group in packed_groups:
            size = math.ceil(len(group) / parts)
            units.extend(group[k:k + size] for k in range(0, len(group), size))
        # packs first (the longest units start first), then single points in the sweep's order: the experiments put
        # the seed outermost, so a sweep stopped half-way leaves a complete grid with fewer seeds, not some batch
        # sizes with every seed and others with none
        units.sort(key=lambda unit: (-len(unit), min(unit)))
        return units, cfgs, final

    def returns(self, units: list[list[int]], outcomes: list[list], final: dict[int, str],
                job_overrides: Sequence[Sequence[str]], sweep_dir: Path) -> list[JobReturn]:
        """Hydra's job returns, in job order, from each unit's outcomes (a (status, value) per job) and the jobs
        that were already final."""
        returns: dict[int, JobReturn] = {}
        outcomes = list(outcomes) + [[(JobStatus.COMPLETED, status)] for status in final.values()]
        units = list(units) + [[i] for i in final]
        for unit, outcome in zip(units, outcomes):
            for i, (status, value) in zip(unit, outcome):
                returns[i] = JobReturn(overrides=list(job_overrides[i]), working_dir=str(sweep_dir),
                                       task_name=self.config.hydra.job.name, status=status, _return_value=value)
        return [returns[i] for i in range(len(job_overrides))]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with sweep_log(sweep_dir / "sweep.log"):
            return self._launch(job_overrides, initial_job_idx, sweep_dir)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                sweep_dir: Path) -> Sequence[JobReturn]:
        workers = len(self.gpus) if self.gpus else _n_workers(int(self.n_jobs))
        units, cfgs, final = self.plan(job_overrides, initial_job_idx, workers, "cuda" if self.gpus else None)
        decide(c.logger for c in cfgs.values())  # W&B's auto mode: the server is asked once for the whole sweep
        if workers > 1:  # torch would give every worker all cores; share them out instead (threads is not identity)
            share = max(1, (os.cpu_count() or 1) // workers)
            unset = [c for c in cfgs.values() if c.threads is None]
            for c in unset:
                c.threads = share
            if unset:
                log.info("threads=%d per worker (%d workers on %d cores); set threads= to choose", share, workers,
                         os.cpu_count() or 1)
        log.info("launching %d job(s) as %d unit(s) (%d pack(s)) on %d worker(s)", sum(map(len, units)), len(units),
                 sum(len(u) > 1 for u in units), workers)

        args = [([cfgs[i] for i in unit], self.memory_fraction, str(sweep_dir / f"unit-{k}.log"))
                for k, unit in enumerate(units)]
        if self.gpus:
            log.info("one worker per GPU, pinned by CUDA_VISIBLE_DEVICES: %s", ", ".join(self.gpus))
            finished = _on_gpus(self.gpus, args)
        elif workers == 1:
            finished = ((k, run_unit(*a, configure=False)) for k, a in enumerate(args))
        else:
            from joblib import Parallel, delayed

            finished = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(
                delayed(_numbered)(k, *a) for k, a in enumerate(args))
        outcomes: dict[int, list] = {}
        points, total, start = 0, sum(map(len, units)), time.perf_counter()
        from tqdm import tqdm

        bar = tqdm(total=total, unit="point", desc="sweep", disable=not sys.stderr.isatty() or not total,
                   dynamic_ncols=True)
        try:
            for k, outcome in finished:  # as units finish, in whatever order
                outcomes[k] = outcome
                points += len(outcome)
                bar.update(len(outcome))
                log.info("unit %d of %d finished (%d point(s)): %s", len(outcomes), len(units), len(outcome),
                         progress(points, total, time.perf_counter() - start))
        except StoreError as err:  # every next point would fail the same way: stop, keep what is done
            raise SystemExit(f"error: {err}\nThe sweep stopped after {points} of {sum(map(len, units))} point(s); "
                             f"relaunch the same command once the store can be written.") from err
        finally:
            bar.close()
        return self.returns(units, [outcomes[k] for k in range(len(units))], final, job_overrides, sweep_dir)


def _numbered(k: int, *args: Any) -> tuple[int, list]:
    return k, run_unit(*args)


def _on_gpus(ids: list[str], args: list[tuple]):
    """Run the units on one spawned worker per GPU id (``_pin``); yield (unit index, outcome) as they finish."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # a forked child would inherit CUDA's state, or its absence
    queue = context.Manager().Queue()
    for gpu in ids:
        queue.put(gpu)
    with ProcessPoolExecutor(len(ids), mp_context=context, initializer=_pin, initargs=(queue,)) as pool:
        futures = {pool.submit(run_unit, *a): k for k, a in enumerate(args)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_unit(cfgs: list[DictConfig], memory_fraction: float, log_file: str,
              configure: bool = True) -> list[tuple[JobStatus, Any]]:
    """Run one unit (a pack, or one point) in this process; return per job its status and return value (the
    point's status, or the exception that stopped it)."""
    if configure:  # a joblib worker starts with bare logging
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True,
                            handlers=[logging.StreamHandler(), logging.FileHandler(log_file)])
    from surge_repro.run import train

    try:
        summaries = train.run_points(cfgs, memory_fraction=memory_fraction)
        return [(JobStatus.COMPLETED, s["status"]) for s in summaries]
    except Exception as err:  # a config or data error: Hydra reports it for each job of the unit
        if train.interrupted(err) or isinstance(err, StoreError):  # a time limit, preemption, a full disk: the
            raise  # task did not complete, its points stay incomplete (and resume), and the sweep stops
        log.error("%s", err)
        return [(JobStatus.FAILED, err)] * len(cfgs)
