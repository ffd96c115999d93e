"""Hydra's entry point to surge_repro's packing launcher (``surge_repro/launcher.py`` holds the logic).

Hydra loads launchers only from the ``hydra_plugins`` namespace, so this module defines the class Hydra instantiates
and registers its config as ``hydra/launcher=surge_packed``; ``conf/launcher/packed.yaml`` selects it.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from surge_repro.launcher import PackedLauncher


class SurgePackedLauncher(PackedLauncher):
    pass


@dataclass
class SurgePackedLauncherConf:
    _target_: str = "hydra_plugins.surge_repro_launcher.SurgePackedLauncher"
    n_jobs: int = 1               # worker processes; -1 = one per CPU core
    pack: str = "auto"            # auto | always | never
    cpu_max_batch: int = 16       # auto packs on a CPU only up to this batch size
    memory_fraction: float = 0.5  # a pack may use this fraction of the device's free memory


ConfigStore.instance().store(group="hydra/launcher", name="surge_packed", node=SurgePackedLauncherConf,
                             provider="surge_repro")
