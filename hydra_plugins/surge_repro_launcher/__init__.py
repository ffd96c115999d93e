"""Hydra's entry points to surge_repro's packing launcher (``surge_repro/launcher.py`` holds the logic).

Hydra loads plugins only from the ``hydra_plugins`` namespace, so this module defines the classes Hydra instantiates
and registers their configs: ``hydra/launcher=surge_packed`` (``conf/launcher/packed.yaml``),
``surge_slurm`` and ``surge_submitit_local`` (``conf/launcher/slurm.yaml``, ``submitit_local.yaml``: the cluster
launcher of ``surge_repro/cluster.py``), and ``hydra/sweeper=surge_basic``; and it puts ``slurm/conf`` on the config
search path, so that a site profile ``slurm/conf/site/<name>.yaml`` is ``+site=<name>`` from any directory.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

from surge_repro.cluster import PackedSubmititLauncher
from surge_repro.launcher import PackedLauncher, group_jobs


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
    """Hydra's basic sweeper (the same grid syntax and order of jobs), checking one job per group of jobs that
    differ only in LR and seed before the launch. Hydra composes every job up front to catch errors early (0.1 s a
    job: 15 s of the quickstart's 175 points); within such a group a job composes if the first does, and the
    training loop checks every point's values before it writes anything."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        super().validate_batch_is_legal([batch[group[0]] for group in group_jobs(batch)])


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
