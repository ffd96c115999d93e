"""The sweep of ``run.py -m`` (``hydra/sweeper=surge_basic``): Hydra's basic sweeper with two checks.

Hydra instantiates the thin class of ``hydra_plugins/surge_repro_launcher``, which delegates here.
"""

from __future__ import annotations

from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus

from surge_repro.launch.launcher import check_sweep, failed_points


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper (the same grid syntax and order of jobs) with two checks: before the launch, every
    point's values (``launcher.check_sweep``: one composition per group of jobs that differ only in LR and seed;
    Hydra's own check composes every job, 0.1 s each, 15 s of the quickstart's 175 points); after it, the exit
    status: a sweep with points that failed exits non-zero and names them (``launcher.failed_points``), so that CI
    and SLURM scripts do not read it as a success."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        check_sweep(lambda overrides: self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)), batch)

    def sweep(self, arguments: list[str]) -> Any:
        # Hydra's basic sweeper raises the first failed job's exception (with a traceback) as soon as its batch
        # returns, which hides the others; so failed jobs are collected here and reported together at the end
        failed: list[tuple[str, str]] = []
        launch = self.launcher.launch

        def collecting(batch: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            returns = launch(batch, initial_job_idx)
            failed.extend(failed_points([returns]))
            return [JobReturn(overrides=r.overrides, cfg=r.cfg, hydra_cfg=r.hydra_cfg, working_dir=r.working_dir,
                              task_name=r.task_name, status=JobStatus.COMPLETED, _return_value="failed")
                    if r.status == JobStatus.FAILED else r for r in returns]

        self.launcher.launch = collecting
        try:
            returns = super().sweep(arguments)
        finally:
            self.launcher.launch = launch
        if failed:
            total = sum(len(batch) for batch in returns)
            listed = "\n".join(f"  {overrides}: {what}" for overrides, what in failed[:20])
            more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
            raise SystemExit(f"error: {len(failed)} of {total} point(s) of the sweep failed:\n{listed}{more}\n"
                             f"Finished points are kept; relaunching the same command runs the failed ones again.")
        return returns
