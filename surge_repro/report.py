"""Rebuild a figure from the store: tidy table -> fits -> figure (PNG) and the fitted numbers (JSON) beside it.

The scripts in ``reports/`` are thin: they name experiments and a title and call ``main`` here, e.g.

    python reports/fig2_cnn5_fmnist.py                         # Fig. 2(b) and 2(c) from their experiments
    python reports/fig2_cnn5_fmnist.py +experiment=quickstart  # the quickstart's grid
    python reports/fig2_cnn5_fmnist.py logger=wandb            # also log figure and numbers to the W&B group
    python reports/fig2_cnn5_fmnist.py report.criterion=steps  # the optimal LR as the fewest steps to target

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
from surge_repro.fit import CRITERIA, TargetFit, fit_experiment
from surge_repro.identify import CONFIDENCE, surge_verdict
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


def describe(fit: TargetFit, steps_fit: TargetFit | None = None, confidence: float = CONFIDENCE) -> str:
    """The fitted numbers of one target as a few lines of text, with the verdicts; ``steps_fit`` (the fewest-steps
    criterion's fit) adds its optimum beside the main criterion's."""

    def ci(v, c):
        return f"{v:.4g} [{c[0]:.4g}, {c[1]:.4g}]" if math.isfinite(v) and math.isfinite(c[0]) else f"{v:.4g}"

    verdict = surge_verdict(fit, confidence)
    lines = [f"target {fit.target:g}: {fit.n_runs} runs ({len(fit.batch_sizes)} batch sizes x {len(fit.lrs)} LRs x "
             f"{fit.n_seeds} seeds), criterion {fit.criterion}, 95% intervals from {fit.n_boot} bootstrap "
             f"replicates over seeds",
             f"  verdict: {verdict['verdict']}: {verdict['text']}",
             f"  B_noise = {ci(fit.b_noise, fit.b_noise_ci)}   S_min = {ci(fit.s_min, fit.s_min_ci)}   "
             f"(Eq 22 over {int(np.isfinite(fit.steps_at_opt).sum())} batch sizes)"]
    for law, (label, _) in LAWS.items():
        lines.append(f"  eps_max {label:24s} = {ci(fit.eps_max[law], fit.eps_max_ci[law])}")
    lines.append(f"  observed peak of the optimal LR at B = {ci(fit.peak_batch_size, fit.peak_batch_size_ci)}")
    extra = "   fewest steps [95%]" if steps_fit else ""
    lines.append(f"  B      optimal LR  95% interval         within 1 step  verdict           S at optimum{extra}")
    for i, b in enumerate(fit.batch_sizes):
        lo, hi = fit.lr_opt_ci[i]
        side = f" ({fit.edge_side[i]})" if fit.on_edge[i] else ""
        row = (f"  {b:<6g} {fit.lr_opt[i]:<11.3g} [{lo:.3g}, {hi:.3g}]{'':6s}{verdict['within_one_step'][i]:>8.0%}"
               f"       {(verdict['per_batch'][i] + side):<17s} {fit.steps_at_opt[i]:<12.1f}")
        if steps_fit:
            slo, shi = steps_fit.lr_opt_ci[i]
            row += f" {steps_fit.lr_opt[i]:.3g} [{slo:.3g}, {shi:.3g}]"
        lines.append(row)
    lines += [f"  note: {n}" for n in fit.notes]
    return "\n".join(lines)


def render(cfg: DictConfig, title: str) -> Path | None:
    """Fit and draw ``cfg.experiment_name`` from ``cfg.paths.store`` into ``cfg.paths.figures`` with the criterion,
    confidence and bootstrap size of ``cfg.report``; returns the PNG path, or None if the store has no finished runs.
    The fewest-steps criterion is fitted beside the chosen one and drawn over it."""
    experiment, store, out_dir = cfg.experiment_name, cfg.paths.store, Path(cfg.paths.figures)
    criterion, confidence, n_boot = str(cfg.report.criterion), float(cfg.report.confidence), int(cfg.report.n_boot)
    if criterion not in CRITERIA:
        raise ValueError(f"report.criterion={criterion!r}: choose one of {', '.join(CRITERIA)}. "
                         f"Fix: report.criterion=drop")
    table = load_grid(store, experiment)
    if table.empty:
        print(f"{experiment}: no finished runs in {store}/{experiment}. "
              f"Run: python run.py -m +experiment={experiment}")
        return None
    fits = fit_experiment(table, n_boot=n_boot, criterion=criterion)
    steps_fits = fit_experiment(table, n_boot=n_boot, criterion="steps") if criterion != "steps" else None
    verdicts = [surge_verdict(f, confidence) for f in fits]
    steps_verdicts = [surge_verdict(f, confidence) for f in steps_fits] if steps_fits else None
    counts = status_counts(store, experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, js = out_dir / f"{experiment}.png", out_dir / f"{experiment}.json"
    fig = surge_figure(fits, f"{title}\n{experiment}: {sum(counts.values())} points "
                             f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); optimal LR by "
                             f"{criterion}", verdicts=verdicts, overlay=steps_fits,
                       overlay_verdicts=steps_verdicts)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    payload = {
        "experiment": experiment, "store": str(Path(store).resolve()), "title": title,
        "criterion": criterion, "criterion_means": CRITERIA[criterion], "confidence": confidence,
        "points": dict(counts), "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": provenance.code_state(), "figure": png.name,
        "targets": [{**f.to_dict(), "verdict": v} for f, v in zip(fits, verdicts)],
        "steps_criterion": [{**f.to_dict(), "verdict": v} for f, v in zip(steps_fits, steps_verdicts)]
        if steps_fits else None,
    }
    js.write_text(json.dumps(_plain(payload), indent=1))
    print(f"\n{title} -- {experiment}")
    print(f"optimal LR: {CRITERIA[criterion]}")
    for i, fit in enumerate(fits):
        print(describe(fit, steps_fits[i] if steps_fits else None, confidence))
        if steps_fits:
            print(f"  fewest-steps criterion: {steps_verdicts[i]['verdict']}: {steps_verdicts[i]['text']}")
    print(f"figure: {png}\nnumbers: {js}")
    mirror = Mirror(cfg.logger, group=experiment, name=f"report-{experiment}", job_type="report",
                    config={"experiment": experiment, "criterion": criterion}, directory=out_dir)
    mirror.log_image("figure", png)
    mirror.finish({f"target_{f.target:g}": {"b_noise": f.b_noise, "s_min": f.s_min, "verdict": v["verdict"], **{
        f"eps_max_{law}": e for law, e in f.eps_max.items()}} for f, v in zip(fits, verdicts)})
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
