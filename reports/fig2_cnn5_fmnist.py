"""Fig. 2(b) and 2(c): the CNN on Fashion-MNIST, Adam (0.9, 0.999), batch sizes 1-12 and 64-1164 (Table 1).

Per experiment and target: the loss-drop heatmap over (B, LR) with the optimal LR of each B, the fitted B_noise and
the three laws (Adam surge Eq 2; SGD alpha = 1 and 0.5, Eq 24); and 1/S against 1/E with the Eq 22 line; the five
targets open with B_noise against the target loss. Writes reports/figures/<experiment>.png and .json (the fitted
numbers, with bootstrap intervals and n). Experiments and title: surge_repro/report/figures.py.

    python reports/fig2_cnn5_fmnist.py                         # both paper grids
    python reports/fig2_cnn5_fmnist.py +experiment=quickstart  # any experiment of the same kind
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
