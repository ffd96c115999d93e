"""Hydra's entry points to surge_repro's packing launcher (``surge_repro/launcher.py`` holds the logic).

Hydra loads plugins only from the ``hydra_plugins`` namespace, so this module defines the classes Hydra instantiates
and registers their configs: ``hydra/launcher=surge_packed`` (``conf/launcher/packed.yaml``),
``surge_slurm`` and ``surge_submitit_local`` (``conf/launcher/slurm.yaml``, ``submitit_local.yaml``: the cluster
launcher of ``surge_repro/cluster.py``), and ``hydra/sweeper=surge_basic``; and it puts ``slurm/conf`` on the config
search path, so that a site profile ``slurm/conf/site/<name>.yaml`` is ``+site=<name>`` from any directory.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.utils import JobReturn, JobStatus
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

from surge_repro.cluster import PackedSubmititLauncher
from surge_repro.launcher import PackedLauncher, check_sweep, failed_points


SITES = Path(__file__).resolve().parents[2] / "slurm" / "conf"


class SurgeSitePath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="surge_repro-sites", path=f"file://{SITES}")


class SurgePackedLauncher(PackedLauncher):
    pass


class SurgeSlurmLauncher(PackedSubmititLauncher):
    _EXECUTOR = "slurm"


class SurgeSubmititLocalLauncher(PackedSubmititLauncher):
    _EXECUTOR = "local"


class SurgeBasicSweeper(BasicSweeper):
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


@dataclass
class _Packing:
    pack: str = "auto"            # auto | always | never (auto: every B on a GPU, B <= cpu_max_batch on a CPU)
    cpu_max_batch: int = 16       # auto packs on a CPU only up to this batch size
    memory_fraction: float = 0.5  # a pack may use this fraction of the device's free memory


@dataclass
class SurgePackedLauncherConf(_Packing):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgePackedLauncher"
    n_jobs: int = 1               # worker processes; -1 = one per CPU core


@dataclass
class _ClusterPacking(_Packing):
    points_per_task: int = 16     # single (unpacked) points per array task; a pack is always one task


@dataclass
class SurgeSlurmLauncherConf(SlurmQueueConf, _ClusterPacking):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgeSlurmLauncher"


@dataclass
class SurgeSubmititLocalLauncherConf(LocalQueueConf, _ClusterPacking):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgeSubmititLocalLauncher"


@dataclass
class SurgeBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgeBasicSweeper"


ConfigStore.instance().store(group="hydra/launcher", name="surge_packed", node=SurgePackedLauncherConf,
                             provider="surge_repro")
ConfigStore.instance().store(group="hydra/launcher", name="surge_slurm", node=SurgeSlurmLauncherConf,
                             provider="surge_repro")
ConfigStore.instance().store(group="hydra/launcher", name="surge_submitit_local", node=SurgeSubmititLocalLauncherConf,
                             provider="surge_repro")
ConfigStore.instance().store(group="hydra/sweeper", name="surge_basic", node=SurgeBasicSweeperConf,
                             provider="surge_repro")
