"""surge_repro: grids of (batch size x learning rate) runs that test the surge of the optimal learning rate.

The data flow, one module a step: ``conf/`` (Hydra) -> ``tasks`` and ``models`` -> ``train.run`` (the one training
loop, with ``protocol.TargetTracker``) -> ``store`` (the source of truth; ``sinks`` mirror it to W&B) ->
``store.load_grid`` (the tidy table) -> ``fit`` (``theory`` holds the laws) -> ``plots`` -> ``reports/``.

Importing the package does one thing besides defining names: it installs a finder that lets the CPU build of torch
import the CUDA-built torchvision wheel (see ``_torchvision_shim``). It only acts if torchvision's compiled ops fail to
load, and it has to run before anything imports torchvision, timm or transformers.
"""

from surge_repro import _torchvision_shim

_torchvision_shim.install()

__version__ = "0.1.0"
