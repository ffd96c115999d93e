"""Fig. 3: ResNet-18 on Tiny-ImageNet, Adam (0, 0), at the paper's six training losses 5.213 ... 4.633.

A row per target, labelled with the paper's panel (a)-(f): the loss-drop heatmap over (B, LR) with the optimal LR of
each B, the B_noise line and the three fitted laws, and 1/S against 1/E (Eq 22). The figure opens with B_noise (and
the observed peak of the optimal LR) against the target loss: the paper's claim is that it moves to larger B as the
loss falls; the JSON's ``b_noise_trend`` says whether the intervals resolve that. Writes
reports/figures/fig3_resnet18_tinyimagenet.png and .json. Experiment and title: surge_repro/report/figures.py.

    python reports/fig3_resnet18_tinyimagenet.py
    python reports/fig3_resnet18_tinyimagenet.py report.criterion=steps   # optimal LR as the fewest steps
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
