"""Hydra's entry points to surge_repro's packing launcher (``surge_repro/launcher.py`` holds the logic).

Hydra loads plugins only from the ``hydra_plugins`` namespace, so this module defines the classes Hydra instantiates
and registers their configs: ``hydra/launcher=surge_packed`` and ``hydra/sweeper=surge_basic``, both selected by
``conf/launcher/packed.yaml``.
"""

from dataclasses import dataclass
from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore

from surge_repro.launcher import PackedLauncher, group_jobs


class SurgePackedLauncher(PackedLauncher):
    pass


class SurgeBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper (the same grid syntax and order of jobs), checking one job per group of jobs that
    differ only in LR and seed before the launch. Hydra composes every job up front to catch errors early (0.1 s a
    job: 15 s of the quickstart's 175 points); within such a group a job composes if the first does, and the
    training loop checks every point's values before it writes anything."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        super().validate_batch_is_legal([batch[group[0]] for group in group_jobs(batch)])


@dataclass
class SurgePackedLauncherConf:
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgePackedLauncher"
    n_jobs: int = 1               # worker processes; -1 = one per CPU core
    pack: str = "auto"            # auto | always | never
    cpu_max_batch: int = 16       # auto packs on a CPU only up to this batch size
    memory_fraction: float = 0.5  # a pack may use this fraction of the device's free memory


@dataclass
class SurgeBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgeBasicSweeper"


ConfigStore.instance().store(group="hydra/launcher", name="surge_packed", node=SurgePackedLauncherConf,
                             provider="surge_repro")
ConfigStore.instance().store(group="hydra/sweeper", name="surge_basic", node=SurgeBasicSweeperConf,
                             provider="surge_repro")
