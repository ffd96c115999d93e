"""Figures of the paper's kind, drawn from fits (``fit.TargetFit``); functions return matplotlib Figures, no file I/O.

``surge_row`` draws one target as the paper's two panels:

- left: the criterion's mean over (B, LR) as a heatmap (the paper's: the loss drop over K steps), the optimal LR of
  each B (filled: resolved; hollow: on the grid's edge; small and faint: not identifiable; bars = bootstrap 95%
  interval over seeds), the fewest-steps optimum beside it (blue diamonds), a red dashed line at the fitted B_noise,
  the three fitted laws (Adam surge Eq 2, SGD alpha = 1 and alpha = 0.5 of Eq 24) with their eps_max, each with its
  95% band over seeds;
- right: 1/S against 1/E at the optimal LRs with the Eq 22 line, whose slope is -B_noise.

Axes are linear for a linear lattice (Table 1's grids) and logarithmic for a geometric one.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from surge_repro.fit import TargetFit  # noqa: E402
from surge_repro.theory import LAWS  # noqa: E402

LAW_STYLE = {"adam": dict(color="tab:orange", lw=2.2, ls="-"),
             "sgd_alpha1": dict(color="tab:cyan", lw=1.6, ls="--"),
             "sgd_alpha0.5": dict(color="magenta", lw=1.6, ls=":")}


def _is_geometric(values: np.ndarray) -> bool:
    v = np.sort(np.asarray(values, float))
    if len(v) < 3 or v[0] <= 0:
        return False
    lin, log = np.diff(v), np.diff(np.log(v))
    return np.std(log) / np.mean(log) < np.std(lin) / np.mean(lin)


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges half-way between grid values (in log space for a log axis); never below 0 on a linear axis."""
    v = np.log(values) if log else np.asarray(values, float)
    if len(v) == 1:
        mid = np.array([v[0] - 0.5, v[0] + 0.5]) if not log else np.array([v[0] - 0.3, v[0] + 0.3])
    else:
        inner = (v[1:] + v[:-1]) / 2
        mid = np.concatenate([[v[0] - (inner[0] - v[0])], inner, [v[-1] + (v[-1] - inner[-1])]])
    return np.exp(mid) if log else np.maximum(mid, 0.0)


def _fmt_ci(value: float, ci: list[float], fmt: str = ".3g") -> str:
    if not math.isfinite(value):
        return "n/a"
    lo, hi = ci
    return f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if math.isfinite(lo) else f"{value:{fmt}}"


def _optima(ax, fit: TargetFit, b: np.ndarray, verdict: dict | None, color: str, marker: str, prefix: str) -> None:
    """The optimal LR per B with its 95% bootstrap interval: filled where resolved (or where no verdict is given),
    hollow on the grid's edge, small and faint where not identifiable."""
    lr_opt = np.asarray(fit.lr_opt, float)
    ci = np.asarray(fit.lr_opt_ci, float)
    ok = np.isfinite(lr_opt)
    edge = np.asarray(fit.on_edge, bool)
    state = np.asarray(verdict["per_batch"]) if verdict else np.where(edge, "edge", "resolved")
    yerr = np.clip(np.abs(np.vstack([lr_opt - ci[:, 0], ci[:, 1] - lr_opt])), 0, None)
    yerr = np.where(np.isfinite(yerr), yerr, 0)
    shift = 1.04 if marker == "D" else 1.0  # side by side with the main criterion's marker
    styles = (("resolved", dict(mfc=color, ms=7, alpha=1.0), "optimal LR, resolved (95% CI over seeds)"),
              ("edge", dict(mfc="none", ms=7, alpha=1.0), "optimal LR on the grid's edge"),
              ("not identifiable", dict(mfc="white", ms=5, alpha=0.55), "optimal LR, not identifiable"))
    for name, style, label in styles:
        mask = ok & (state == name)
        if mask.any():
            ax.errorbar(b[mask] * shift, lr_opt[mask], yerr=yerr[:, mask], fmt=marker, mec=color, mew=1.6,
                        ecolor=color, elinewidth=1.1, capsize=3, label=prefix + label, zorder=5, **style)


def heatmap_panel(ax, fit: TargetFit, verdict: dict | None = None, overlay: TargetFit | None = None,
                  overlay_verdict: dict | None = None) -> None:
    b, lrs = np.asarray(fit.batch_sizes), np.asarray(fit.lrs)
    log_b, log_lr = _is_geometric(b), _is_geometric(lrs)
    drop = np.asarray(fit.mean_score, float).T  # (LR, B)
    finite = drop[np.isfinite(drop)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if len(finite) else (0, 1))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # grey: no run measured a drop there
    mesh = ax.pcolormesh(_edges(b, log_b), _edges(lrs, log_lr), np.ma.masked_invalid(drop), cmap=cmap,
                         vmin=vmin, vmax=vmax, shading="flat")
    for i, j in zip(*np.where(np.isneginf(drop))):  # a run diverged inside its drop window
        ax.plot(b[j], lrs[i], marker="x", color="tab:red", ms=6, mew=1.5, ls="none")
    label = {"drop": "mean loss drop over K steps", "drop_mean": "mean loss drop per K-step window",
             "steps": "mean speed 1/S to the target"}.get(fit.criterion, fit.criterion)
    ax.figure.colorbar(mesh, ax=ax, label=f"{label} (n = {fit.n_seeds} seeds)")

    _optima(ax, fit, b, verdict, "tab:red", "o", "")
    if overlay is not None:
        _optima(ax, overlay, b, overlay_verdict, "tab:blue", "D", "fewest steps: ")

    x_edges = _edges(b, log_b)
    if fit.b_noise > 0:
        grid_b = np.geomspace(x_edges[0], x_edges[-1], 300) if log_b else np.linspace(
            max(x_edges[0], 1e-3 * x_edges[-1]), x_edges[-1], 300)
        for law, (label, fn) in LAWS.items():
            eps = fit.eps_max[law]
            if math.isfinite(eps):
                ax.plot(grid_b, fn(grid_b, eps, fit.b_noise), label=f"{label}: eps_max = {eps:.3g} (band: 95%)",
                        **LAW_STYLE[law], zorder=4)
            band = fit.law_band.get(law)
            if band:  # the curve's 95% band over seeds, faint so that three of them leave the heatmap readable
                ax.fill_between(band["b"], band["lo"], band["hi"], color=LAW_STYLE[law]["color"],
                                alpha=0.16 if law == "adam" else 0.08, lw=0, zorder=3)
        lo, hi = x_edges[0], x_edges[-1]
        if lo <= fit.b_noise <= hi:
            ax.axvline(fit.b_noise, color="red", ls="--", lw=1.8, label=f"B_noise = {fit.b_noise:.3g}", zorder=4)
        else:
            ax.plot([], [], color="red", ls="--", label=f"B_noise = {fit.b_noise:.3g} (off the axis)")
    ax.set_xscale("log" if log_b else "linear")
    ax.set_yscale("log" if log_lr else "linear")
    ax.set_xlim(x_edges[[0, -1]])
    ax.set_ylim(_edges(lrs, log_lr)[[0, -1]])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def se_panel(ax, fit: TargetFit) -> None:
    s, e = np.asarray(fit.steps_at_opt, float), np.asarray(fit.examples_at_opt, float)
    ok = np.isfinite(s) & np.isfinite(e)
    ax.plot(1 / e[ok], 1 / s[ok], "o", color="tab:blue", label="optimal LR of each B")
    for bi, x, y in zip(np.asarray(fit.batch_sizes)[ok], 1 / e[ok], 1 / s[ok]):
        ax.annotate(f"{bi:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if math.isfinite(fit.b_noise) and math.isfinite(fit.s_min) and ok.sum() >= 2:
        x = np.linspace(0, (1 / e[ok]).max() * 1.05, 100)
        ax.plot(x, 1 / fit.s_min - fit.b_noise * x, color="red", ls="--",
                label=f"Eq 22: slope -B_noise\nB_noise = {_fmt_ci(fit.b_noise, fit.b_noise_ci)}\n"
                      f"S_min = {_fmt_ci(fit.s_min, fit.s_min_ci)}")
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("1 / E   (E = examples to target)")
    ax.set_ylabel("1 / S   (S = steps to target)")
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="best")


def surge_figure(fits: list[TargetFit], title: str, verdicts: list[dict] | None = None,
                 overlay: list[TargetFit] | None = None, overlay_verdicts: list[dict] | None = None) -> Figure:
    """A row of (heatmap, S-E) panels per target; ``verdicts`` (``identify.surge_verdict``) style the optima and
    title each row, ``overlay`` (fits by another criterion) adds their optima."""
    fig, axes = plt.subplots(len(fits), 2, figsize=(13, 5.9 * len(fits)), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1.45, 1]})
    for i, ((left, right), fit) in enumerate(zip(axes, fits)):
        verdict = verdicts[i] if verdicts else None
        heatmap_panel(left, fit, verdict, overlay[i] if overlay else None,
                      overlay_verdicts[i] if overlay_verdicts else None)
        se_panel(right, fit)
        head = f"target loss {fit.target:g}: {fit.n_runs} runs, {len(fit.batch_sizes)} B x {len(fit.lrs)} LR x " \
               f"{fit.n_seeds} seeds"
        if verdict:
            n_res = verdict["per_batch"].count("resolved")
            head += f"\nverdict: {verdict['verdict']} ({n_res} of {len(fit.batch_sizes)} optima resolved)"
        left.set_title(head, fontsize=10)
        right.set_title(f"observed peak of the optimal LR at B = "
                        f"{_fmt_ci(fit.peak_batch_size, fit.peak_batch_size_ci, '.4g')}", fontsize=10)
    fig.suptitle(title, fontsize=12)
    return fig
