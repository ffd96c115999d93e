"""Train one grid point with the paper's protocol, or a whole grid with -m; results go to the store.

    python run.py task=fashion_mnist model=cnn5 optimizer=adam batch=8 optimizer.lr=3e-4
    python run.py -m +experiment=quickstart
    python run.py -m +experiment=fig2b_cnn5_fmnist_small_bs rounds=4
    python run.py --cfg job batch=8 optimizer.lr=3e-4

The loop is surge_repro.train.run; conf/ holds every choice.
"""

import hydra
from omegaconf import DictConfig

from surge_repro import train


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    return train.run(cfg)["status"]


if __name__ == "__main__":
    main()
