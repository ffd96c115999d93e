"""Fig. 5: the fine-grained MoE on RedPajama-v2, Adam (0.9, 0.999), batch sizes in tokens (192k to 11M).

Per target: the loss-drop heatmap over (B, LR) with the optimal LR of each B, the B_noise line and the three fitted
laws, and 1/S against 1/E (Eq 22, E in tokens); with several targets, B_noise against the target loss first. Every
batch axis names its unit, read from the store (the table's batch_unit). Writes
reports/figures/fig5_moe_redpajama.png and .json. Experiment and title: surge_repro/report/figures.py.

    python reports/fig5_moe_redpajama.py
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
