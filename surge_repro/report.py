"""Rebuild a figure from the store: tidy table -> fits -> figure (PNG) and the fitted numbers (JSON) beside it.

The scripts in ``reports/`` are thin: they name experiments and a title and call ``main`` here, e.g.

    python reports/fig2_cnn5_fmnist.py                         # Fig. 2(b) and 2(c) from their experiments
    python reports/fig2_cnn5_fmnist.py +experiment=quickstart  # the quickstart's grid
    python reports/fig2_cnn5_fmnist.py logger=wandb            # also log figure and numbers to the W&B group

Arguments are Hydra overrides of ``conf/config.yaml``, so ``paths.store`` and the experiment names mean exactly what
they mean to ``run.py``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import DictConfig

from surge_repro import provenance
from surge_repro.config import compose
from surge_repro.fit import TargetFit, fit_experiment
from surge_repro.mirror import Mirror
from surge_repro.plots import surge_figure
from surge_repro.store import load_grid, status_counts
from surge_repro.theory import LAWS

log = logging.getLogger("surge_repro.report")


def _plain(value):
    """JSON without NaN (null instead), floats rounded to 6 significant digits."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def describe(fit: TargetFit) -> str:
    """The fitted numbers of one target as a few lines of text."""

    def ci(v, c):
        return f"{v:.4g} [{c[0]:.4g}, {c[1]:.4g}]" if math.isfinite(v) and math.isfinite(c[0]) else f"{v:.4g}"

    lines = [f"target {fit.target:g}: {fit.n_runs} runs ({len(fit.batch_sizes)} batch sizes x {len(fit.lrs)} LRs x "
             f"{fit.n_seeds} seeds), 95% intervals from {fit.n_boot} bootstrap replicates over seeds",
             f"  B_noise = {ci(fit.b_noise, fit.b_noise_ci)}   S_min = {ci(fit.s_min, fit.s_min_ci)}   "
             f"(Eq 22 over {int(np.isfinite(fit.steps_at_opt).sum())} batch sizes)"]
    for law, (label, _) in LAWS.items():
        lines.append(f"  eps_max {label:24s} = {ci(fit.eps_max[law], fit.eps_max_ci[law])}")
    lines.append(f"  observed peak of the optimal LR at B = {ci(fit.peak_batch_size, fit.peak_batch_size_ci)}")
    lines.append("  B      optimal LR  95% interval            same LR in   S at optimum  seeds")
    for i, b in enumerate(fit.batch_sizes):
        lo, hi = fit.lr_opt_ci[i]
        lines.append(f"  {b:<6g} {fit.lr_opt[i]:<11.3g} [{lo:.3g}, {hi:.3g}]{'':9s}{fit.lr_opt_agreement[i]:>6.0%} "
                     f"        {fit.steps_at_opt[i]:<13.1f} {fit.seeds_at_opt[i]}"
                     f"{'   (on the edge)' if fit.on_edge[i] else ''}")
    lines += [f"  note: {n}" for n in fit.notes]
    return "\n".join(lines)


def render(cfg: DictConfig, title: str, n_boot: int = 1000) -> Path | None:
    """Fit and draw ``cfg.experiment_name`` from ``cfg.paths.store`` into ``cfg.paths.figures``; returns the PNG
    path, or None if the store has no finished runs of it."""
    experiment, store, out_dir = cfg.experiment_name, cfg.paths.store, Path(cfg.paths.figures)
    table = load_grid(store, experiment)
    if table.empty:
        print(f"{experiment}: no finished runs in {store}/{experiment}. "
              f"Run: python run.py -m +experiment={experiment}")
        return None
    fits = fit_experiment(table, n_boot=n_boot)
    counts = status_counts(store, experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, js = out_dir / f"{experiment}.png", out_dir / f"{experiment}.json"
    fig = surge_figure(fits, f"{title}\n{experiment}: {sum(counts.values())} points "
                             f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    payload = {
        "experiment": experiment, "store": str(Path(store).resolve()), "title": title,
        "criterion": "argmax over LR of the mean loss drop over K steps (paper section 3.1)",
        "points": dict(counts), "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": provenance.code_state(), "figure": png.name, "targets": [f.to_dict() for f in fits],
    }
    js.write_text(json.dumps(_plain(payload), indent=1))
    print(f"\n{title} -- {experiment}")
    for fit in fits:
        print(describe(fit))
    print(f"figure: {png}\nnumbers: {js}")
    mirror = Mirror(cfg.logger, group=experiment, name=f"report-{experiment}", job_type="report",
                    config={"experiment": experiment}, directory=out_dir)
    mirror.log_image("figure", png)
    mirror.finish({f"target_{f.target:g}": {"b_noise": f.b_noise, "s_min": f.s_min, **{
        f"eps_max_{law}": v for law, v in f.eps_max.items()}} for f in fits})
    return png


def main(experiments: Sequence[str], title: str, argv: Sequence[str] | None = None) -> int:
    """Render ``experiments`` (or the one named by a ``+experiment=`` override in ``argv``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = [None] if any(a.startswith("+experiment=") for a in argv) else list(experiments)
    rendered = 0
    for exp in chosen:
        cfg = compose(argv + ([f"+experiment={exp}"] if exp else []))
        rendered += render(cfg, title) is not None
    return 0 if rendered else 1
