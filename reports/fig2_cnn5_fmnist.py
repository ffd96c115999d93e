"""Fig. 2(b) and 2(c): the CNN on Fashion-MNIST, Adam (0.9, 0.999), batch sizes 1-12 and 64-1164 (Table 1).

Per experiment and target: the loss-drop heatmap over (B, LR) with the optimal LR of each B, the fitted B_noise and
the three laws (Adam surge Eq 2; SGD alpha = 1 and 0.5, Eq 24); and 1/S against 1/E with the Eq 22 line. Writes
reports/figures/<experiment>.png and .json (the fitted numbers, with bootstrap intervals and n).

    python reports/fig2_cnn5_fmnist.py                         # both paper grids
    python reports/fig2_cnn5_fmnist.py +experiment=quickstart  # any experiment of the same kind
"""

import sys

from surge_repro import report

EXPERIMENTS = ["fig2b_cnn5_fmnist_small_bs", "fig2c_cnn5_fmnist_large_bs"]

if __name__ == "__main__":
    sys.exit(report.main(EXPERIMENTS, "Fig. 2: optimal LR against batch size, CNN on Fashion-MNIST, Adam"))
