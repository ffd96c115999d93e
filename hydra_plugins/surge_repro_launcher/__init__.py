"""Hydra's registration of surge_repro's launchers and sweeper; the logic lives in ``surge_repro.launch``.

Hydra loads plugins only from the ``hydra_plugins`` namespace and instantiates only classes defined there, so this
module holds thin classes that build their ``surge_repro.launch`` counterpart on first use (importing nothing of
surge_repro at import time: ``config.compose`` imports this module for its registrations, and the launchers import
the training loop, which imports ``config``). It registers ``hydra/launcher=surge_packed``
(``conf/launcher/packed.yaml``), ``surge_slurm`` and ``surge_submitit_local`` (``conf/launcher/slurm.yaml``,
``submitit_local.yaml``: ``surge_repro/launch/cluster.py``), ``hydra/sweeper=surge_basic``
(``surge_repro/launch/sweeper.py``), and puts ``slurm/conf`` on the config search path, so that a site profile
``slurm/conf/site/<name>.yaml`` is ``+site=<name>`` from any directory.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

SITES = Path(__file__).resolve().parents[2] / "slurm" / "conf"


class SurgeSitePath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if SITES.is_dir():  # a source checkout; an installed suite takes site profiles from hydra.searchpath
            search_path.append(provider="surge_repro-sites", path=f"file://{SITES}")


class _Thin(Launcher):
    """A launcher Hydra can instantiate that hands everything to ``impl``, built from the same parameters."""

    def __init__(self, **params: Any) -> None:
        self.impl = self._impl(**params)

    @staticmethod
    def _impl(**params: Any) -> Launcher:
        raise NotImplementedError

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)


class SurgePackedLauncher(_Thin):
    @staticmethod
    def _impl(**params: Any) -> Launcher:
        from surge_repro.launch.launcher import PackedLauncher

        return PackedLauncher(**params)


class SurgeSlurmLauncher(_Thin):
    @staticmethod
    def _impl(**params: Any) -> Launcher:
        from surge_repro.launch.cluster import PackedSubmititLauncher

        return PackedSubmititLauncher(executor="slurm", **params)


class SurgeSubmititLocalLauncher(_Thin):
    @staticmethod
    def _impl(**params: Any) -> Launcher:
        from surge_repro.launch.cluster import PackedSubmititLauncher

        return PackedSubmititLauncher(executor="local", **params)


class SurgeBasicSweeper(Sweeper):
    """``surge_repro.launch.sweeper.CheckedSweeper``, built on first use."""

    def __init__(self, **params: Any) -> None:
        from surge_repro.launch.sweeper import CheckedSweeper

        self.impl = CheckedSweeper(**params)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


@dataclass
class _Packing:
    pack: str = "auto"            # auto | always | never (auto: every B on a GPU, B <= cpu_max_batch on a CPU)
    cpu_max_batch: int = 16       # auto packs on a CPU only up to this batch size
    memory_fraction: float = 0.5  # a pack may use this fraction of the device's free memory


@dataclass
class SurgePackedLauncherConf(_Packing):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgePackedLauncher"
    n_jobs: int = 1               # worker processes; -1 = one per CPU core
    gpus: Any = None              # auto | n | [ids]: one worker per GPU, pinned by CUDA_VISIBLE_DEVICES (n_jobs unused)


@dataclass
class _ClusterPacking(_Packing):
    points_per_task: int = 16     # single (unpacked) points per array task; a pack is always one task
    wait: bool = True             # false: submit, print the job id and the status command, return
    dry_run: bool = False         # true: print the array's plan (tasks, points, resources), submit nothing
    progress_every_s: float = 300  # while waiting: points final, rate, time left and task states this often


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
