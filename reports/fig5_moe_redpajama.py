"""Fig. 5: the fine-grained MoE (moe_shared) with Adam (0.9, 0.999) on RedPajama-Data-1T-Sample (the paper trains on
RedPajama-v2; conf/task/redpajama.yaml says why the sample), batch sizes in tokens.

By default it draws ``fig5_moe_redpajama``, Table 1's lattice (B 0.192M to 10.992M tokens in steps of 1.2M, LR 2e-6
to 6e-5 in steps of 2e-6, 10 rounds); ``+experiment=fig5_moe_redpajama_small`` draws the suite's scaled-down grid
(B 8,192 to 262,144 tokens, LR 1.25e-4 to 4e-3, 3 rounds), the one a single GPU runs. Per target: the loss-drop heatmap
over (B, LR) with the optimal LR of each B, the B_noise line and the three fitted laws, and 1/S against 1/E (Eq 22, E
in tokens); with several targets, B_noise against the target loss first. Every batch axis names its unit, read from
the store (the table's batch_unit). Writes reports/figures/<experiment>.png and .json. Experiments and title:
surge_repro/report/figures.py.

    python reports/fig5_moe_redpajama.py
    python reports/fig5_moe_redpajama.py +experiment=fig5_moe_redpajama_small
"""

import sys

from surge_repro.report import render

if __name__ == "__main__":
    sys.exit(render.main(__file__))
