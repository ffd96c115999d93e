"""Fig. 6: a finer (B, LR) grid for the Fig. 4(b) setting, DistilGPT2 on ELI5-Category, Adam (0.9, 0.999).

The same panels as Fig. 4 on the denser grid: the loss-drop heatmap with the optimal LR of each B (the paper's
"yellow line"), the B_noise line and the three fitted laws, and 1/S against 1/E (Eq 22). Writes
reports/figures/fig6_distilgpt2_eli5_fine.png and .json. Experiment and title: surge_repro/report/figures.py.

    python reports/fig6_distilgpt2_eli5_fine.py
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
