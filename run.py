"""Train one grid point with the paper's protocol, or a whole grid with -m; results go to the store.

    python run.py task=fashion_mnist model=cnn5 optimizer=adam batch=8 optimizer.lr=3e-4
    python run.py -m +experiment=quickstart
    python run.py -m +experiment=fig2b_cnn5_fmnist_small_bs rounds=4
    python run.py --cfg job batch=8 optimizer.lr=3e-4

A single run calls ``surge_repro.run.train.run`` here. A multirun's launcher (``surge_repro.launch``) hands units of
points (a pack, or one point) to ``surge_repro.run.train.run_points``, of which ``run`` is the one-point case: Hydra's
task function takes one config, and a pack is many. Either way every point trains in the same loop
(``surge_repro.run.train.train``); conf/ holds every choice.
"""

import hydra
from omegaconf import DictConfig

from surge_repro.cli import train_point


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    return train_point(cfg)  # installed, ``surge-run`` is the same command


if __name__ == "__main__":
    main()
