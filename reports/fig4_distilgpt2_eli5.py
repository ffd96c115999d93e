"""Fig. 4(a) and 4(b): the simplified DistilGPT2 on ELI5-Category, Adam (0, 0) and Adam (0.9, 0.999).

One figure per experiment (fig4a_distilgpt2_eli5_adam00, fig4b_distilgpt2_eli5_adam): per target, the loss-drop
heatmap over (B, LR) with the optimal LR of each B, the B_noise line and the three fitted laws, and 1/S against 1/E
(Eq 22); with several targets, B_noise against the target loss first. Batch sizes in the task's unit. Writes
reports/figures/<experiment>.png and .json. Experiments and title: surge_repro/report/figures.py.

    python reports/fig4_distilgpt2_eli5.py
    python reports/fig4_distilgpt2_eli5.py +experiment=fig4a_distilgpt2_eli5_adam00   # one of the two
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
