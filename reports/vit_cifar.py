"""The suite's ViT grid on CIFAR (not a paper figure): the paper's panels for a vision transformer.

Per target: the loss-drop heatmap over (B, LR) with the optimal LR of each B, the B_noise line and the three fitted
laws, and 1/S against 1/E (Eq 22); with several targets, B_noise against the target loss first. Writes
reports/figures/vit_cifar.png and .json. Experiment and title: surge_repro/report/figures.py.

    python reports/vit_cifar.py
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
