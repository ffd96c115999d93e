"""Figures of the paper's kind, drawn from fits (``fit.TargetFit``); functions return matplotlib Figures, no file I/O.

``surge_figure`` draws each target as a row: the paper's two panels and Theorem 5's:

- left: the criterion's mean over (B, LR) as a heatmap (the paper's: the loss drop over K steps), the optimal LR of
  each B (filled: resolved; hollow: on the grid's edge; small and faint: not identifiable; grey-rimmed: too few seeds
  for an interval; bars = bootstrap 95% interval over seeds), the fewest-steps optimum beside it (blue diamonds), a
  red dashed line at the fitted B_noise, the three fitted laws (Adam surge Eq 2, SGD alpha = 1 and alpha = 0.5 of
  Eq 24) with their eps_max, each with its 95% band over seeds. A batch size without an optimum says why in its
  column (no run reached the target, a tie: its tied LRs as hollow squares, no data);
- middle: 1/S against 1/E at the optimal LRs with the Eq 22 line, whose slope is -B_noise;
- right (``theorem5_panel``): Theorem 5 on the same runs: the largest mean loss drop over LR of each B (cross-fitted
  over two halves of the seeds: ``fit.max_drop``) with its 95% interval, Eq 18 (dL_max / (1 + B_noise / B)) at
  Eq 22's B_noise with its band, and Eq 18 fitted alone (dashed), whose B_noise is a second estimate of Eq 22's; the
  title compares the two.

A star (*) marks an estimate that lies on or outside its own bootstrap interval (``TargetFit.off_interval``); the
row's title names them. With too few seeds (``TargetFit.interval``) there are no bars or bands, and the title and the
legend say so.

``surge_figure`` stacks a row per target; with two or more targets it opens with ``b_noise_panel``: B_noise (Eq 22)
and the observed peak of the optimal LR against the target loss, each with its 95% interval, the loss falling to
the right (Fig. 3's claim: the peak moves to larger B as training goes on), the fewest-steps criterion's B_noise beside
it, and Eq 21's line through each criterion's B_noise, B_* / L^(1/alpha_B) with its 95% band (the paper's argument
for that claim).

Axes are linear for a linear lattice (Table 1's grids) and logarithmic for a geometric one. Batch sizes are in the
task's unit (examples, sequences, tokens), named on every axis that shows one; millions of tokens read 1.2M.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from surge_repro.analysis.fit import NO_OPTIMUM, TargetFit  # noqa: E402
from surge_repro.analysis.theory import LAWS  # noqa: E402

DROP_LABEL = {"drop": "loss drop over K steps", "drop_at_target": "drop over K steps from the target",
              "drop_mean": "loss drop per K-step window"}  # what a drop criterion's score is, on an axis
LAW_STYLE = {"adam": dict(color="tab:orange", lw=2.2, ls="-"),
             "sgd_alpha1": dict(color="tab:cyan", lw=1.6, ls="--"),
             "sgd_alpha0.5": dict(color="magenta", lw=1.6, ls=":")}


def is_geometric(values: np.ndarray) -> bool:
    v = np.sort(np.asarray(values, float))
    if len(v) < 3 or v[0] <= 0:
        return False
    lin, log = np.diff(v), np.diff(np.log(v))
    return np.std(log) / np.mean(log) < np.std(lin) / np.mean(lin)


def cell_edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges half-way between grid values (in log space for a log axis); never below 0 on a linear axis."""
    v = np.log(values) if log else np.asarray(values, float)
    if len(v) == 1:
        mid = np.array([v[0] - 0.5, v[0] + 0.5]) if not log else np.array([v[0] - 0.3, v[0] + 0.3])
    else:
        inner = (v[1:] + v[:-1]) / 2
        mid = np.concatenate([[v[0] - (inner[0] - v[0])], inner, [v[-1] + (v[-1] - inner[-1])]])
    return np.exp(mid) if log else np.maximum(mid, 0.0)


def _curve_grid(x_edges: np.ndarray, log: bool) -> np.ndarray:
    """Where a fitted curve is drawn across the panel; B > 0 on a linear axis, where the laws are defined."""
    if log:
        return np.geomspace(x_edges[0], x_edges[-1], 300)
    return np.linspace(max(x_edges[0], 1e-3 * x_edges[-1]), x_edges[-1], 300)


def fmt_b(x: float, digits: int = 3) -> str:
    """A batch size or B_noise: 3 significant digits, with k / M / G from 10^4 up (token batches: 1.39M)."""
    if not math.isfinite(x):
        return "n/a"
    for scale, suffix, start in ((1e9, "G", 1e9), (1e6, "M", 1e6), (1e3, "k", 1e4)):  # 1000 to 9999 stay plain
        if abs(x) >= start:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


def fmt_ci(value: float, ci: list[float], fmt=".3g", star: bool = False) -> str:
    """``value [lo, hi]``; ``fmt`` is a format spec or a function of a float; ``star``: the value lies on or outside
    its interval (marked *)."""
    f = fmt if callable(fmt) else (lambda v: f"{v:{fmt}}")
    if not math.isfinite(value):
        return "n/a"
    lo, hi = ci
    return (f"{f(value)} [{f(lo)}, {f(hi)}]" if math.isfinite(lo) else f(value)) + (" *" if star else "")


def _star(fit: TargetFit, key: str) -> str:
    return " *" if key in fit.off_interval else ""


def _off_interval_line(fit: TargetFit) -> str:
    """The row title's line naming the estimates on or outside their own interval; empty where there are none."""
    names = {"b_noise": "B_noise", "s_min": "S_min", "b_simple": "B_simple",
             **{f"eps_max/{law}": f"eps_max {label.split(' (')[0]}" for law, (label, _) in LAWS.items()},
             **{f"curve/{law}/{k}": f"{name} of {'Eq 2' if law == 'adam' else 'Eq 1'} fit"
                for law in ("adam", "sgd_alpha1") for k, name in (("b_noise", "B_noise"), ("eps_max", "eps_max"))},
             "theorem5/dl_max": "dL_max of Eq 18", "theorem5/b_noise_eq18": "B_noise of Eq 18",
             "theorem5/dl_max_eq18": "dL_max of Eq 18 alone"}
    if not fit.off_interval:
        return ""
    return textwrap.fill("* on or outside its bootstrap interval (skewed or identical replicates: the interval is "
                         "their spread): " + ", ".join(names.get(k, k) for k in fit.off_interval), 95)


def _no_interval_line(fit: TargetFit) -> str:
    rule = fit.interval
    return (f"no intervals: {fit.n_seeds} seeds give {rule['distinct_resamples']} distinct bootstrap resamples, too "
            f"few seeds (>= {rule['min_seeds']} needed); no resolved optimum, rise, fall or surge is claimed")


def _batch_axis(axis, unit: str, label: str = "batch size B") -> None:
    axis.set_label_text(f"{label} ({unit})")
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt_b(v, 4)))


def _optima(ax, fit: TargetFit, b: np.ndarray, verdict: dict | None, color: str, marker: str, prefix: str) -> None:
    """The optimal LR per B with its 95% bootstrap interval: filled where resolved (or where no verdict is given),
    hollow on the grid's edge, small and faint where not identifiable, grey-rimmed without an interval (too few
    seeds)."""
    lr_opt = np.asarray(fit.lr_opt, float)
    ci = np.asarray(fit.lr_opt_ci, float)
    ok = np.isfinite(lr_opt)
    edge = np.asarray(fit.on_edge, bool)
    state = np.asarray(verdict["per_batch"]) if verdict else np.where(edge, "edge", "resolved")
    yerr = np.clip(np.abs(np.vstack([lr_opt - ci[:, 0], ci[:, 1] - lr_opt])), 0, None)
    yerr = np.where(np.isfinite(yerr), yerr, 0)
    styles = (("resolved", dict(mfc=color, ms=7, alpha=1.0), "resolved"),
              ("edge", dict(mfc="none", ms=7, alpha=1.0), "on the grid's edge"),
              ("not identifiable", dict(mfc="white", ms=5, alpha=0.55), "not identifiable"),
              ("too few seeds", dict(mfc=color, ms=6, alpha=0.8), "no interval (too few seeds)"))
    for name, style, label in styles:
        mask = ok & (state == name)
        if mask.any():
            ax.errorbar(b[mask], lr_opt[mask], yerr=yerr[:, mask], fmt=marker, mew=1.6, ecolor=color,
                        mec="0.4" if name == "too few seeds" else color, elinewidth=1.1, capsize=3,
                        label=f"{prefix}, {label}", zorder=5, **style)


def _no_optimum(ax, fit: TargetFit, b: np.ndarray, color: str, top: bool, prefix: str) -> None:
    """At each B without an optimum, why, written up its column from its top (``top``) or its bottom; the LRs of a
    tie of a few as hollow squares (a tie of many, as every LR at S = 0 by fewest steps, only in words)."""
    for x, why, tied in zip(b, fit.no_optimum, fit.tied_lrs):
        if why is None:
            continue
        few = len(tied) <= 4
        text = ("tie: no optimum" if few else f"tie of {len(tied)} LRs: no optimum") if why == "tie" else \
            "no run reached\nthe target" if why == "not reached" else textwrap.fill(NO_OPTIMUM[why], 22)
        ax.text(x, 0.98 if top else 0.02, f"{prefix}{text}", rotation=90, ha="center", va="top" if top else "bottom",
                fontsize=7.5, color=color, transform=ax.get_xaxis_transform(), zorder=4.5,  # under the markers
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, alpha=0.85))
        if tied and few:
            ax.plot([x] * len(tied), tied, "s", mfc="none", mec=color, ms=6, mew=1.2, zorder=5,
                    label=f"{prefix}LRs tied for the best (no optimum)")


def heatmap_panel(ax, fit: TargetFit, verdict: dict | None = None, overlay: TargetFit | None = None,
                  overlay_verdict: dict | None = None, unit: str = "examples") -> None:
    b, lrs = np.asarray(fit.batch_sizes), np.asarray(fit.lrs)
    log_b, log_lr = is_geometric(b), is_geometric(lrs)
    drop = np.asarray(fit.mean_score, float).T  # (LR, B)
    finite = drop[np.isfinite(drop)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if len(finite) else (0, 1))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # grey: no run measured a drop there
    mesh = ax.pcolormesh(cell_edges(b, log_b), cell_edges(lrs, log_lr), np.ma.masked_invalid(drop), cmap=cmap,
                         vmin=vmin, vmax=vmax, shading="flat")
    for i, j in zip(*np.where(np.isneginf(drop))):  # a run diverged inside its drop window
        ax.plot(b[j], lrs[i], marker="x", color="tab:red", ms=6, mew=1.5, ls="none")
    label = {**{k: f"mean {v}" for k, v in DROP_LABEL.items()},
             "steps": "mean speed 1/S to the target"}.get(fit.criterion, fit.criterion)
    ax.figure.colorbar(mesh, ax=ax, label=f"{label} (n = {fit.n_seeds} seeds)")

    _optima(ax, fit, b, verdict, "tab:red", "o", "optimal LR")
    _no_optimum(ax, fit, b, "tab:red", True, "")  # high and low in the column: the optima sit in between
    if overlay is not None:  # beside the chosen criterion's markers, not on them, inside the same cell
        edges = cell_edges(b, log_b)
        shifted = b * (edges[1:] / edges[:-1]) ** 0.2 if log_b else b + 0.2 * np.diff(edges)
        _optima(ax, overlay, shifted, overlay_verdict, "tab:blue", "D", "fewest-steps LR")
        _no_optimum(ax, overlay, shifted, "tab:blue", False, "fewest steps: ")

    x_edges = cell_edges(b, log_b)
    grid_b = _curve_grid(x_edges, log_b)
    if fit.b_noise > 0:
        for law, (label, fn) in LAWS.items():
            eps = fit.eps_max[law]
            if math.isfinite(eps):
                ax.plot(grid_b, fn(grid_b, eps, fit.b_noise), **LAW_STYLE[law], zorder=4,
                        label=f"{label}: eps_max = {eps:.3g}{_star(fit, f'eps_max/{law}')}")
            band = fit.law_band.get(law)
            if band:  # the curve's 95% band over seeds, faint so that three of them leave the heatmap readable
                ax.fill_between(band["b"], band["lo"], band["hi"], color=LAW_STYLE[law]["color"],
                                alpha=0.16 if law == "adam" else 0.08, lw=0, zorder=3)
        lo, hi = x_edges[0], x_edges[-1]
        star = _star(fit, "b_noise")
        if lo <= fit.b_noise <= hi:
            ax.axvline(fit.b_noise, color="red", ls="--", lw=1.8, label=f"B_noise = {fmt_b(fit.b_noise)}{star}",
                       zorder=4)
        else:
            ax.plot([], [], color="red", ls="--", label=f"B_noise = {fmt_b(fit.b_noise)}{star} (off the axis)")
    eq2 = fit.curve["adam"]
    if not fit.b_noise > 0 and math.isfinite(eq2["b_noise"]):  # no Eq 22: the law fitted to the optima instead
        ax.plot(grid_b, LAWS["adam"][1](grid_b, eq2["eps_max"], eq2["b_noise"]), **LAW_STYLE["adam"], zorder=4,
                label=f"Eq 2 fitted to the optima: eps_max = {eq2['eps_max']:.3g}{_star(fit, 'curve/adam/eps_max')}, "
                      f"B_noise = {fmt_b(eq2['b_noise'])}{_star(fit, 'curve/adam/b_noise')}")
    if math.isfinite(fit.b_simple):  # the measured noise scale beside the fitted one (McCandlish: B_simple)
        inside = x_edges[0] <= fit.b_simple <= x_edges[-1]
        ax.axvline(fit.b_simple if inside else np.nan, color="tab:blue", ls=":", lw=1.8, zorder=4,
                   label=f"B_simple (measured) = {fmt_b(fit.b_simple)}{_star(fit, 'b_simple')}"
                         + ("" if inside else " (off the axis)"))
    ax.set_xscale("log" if log_b else "linear")
    ax.set_yscale("log" if log_lr else "linear")
    ax.set_xlim(x_edges[[0, -1]])
    ax.set_ylim(cell_edges(lrs, log_lr)[[0, -1]])
    _batch_axis(ax.xaxis, unit)
    ax.set_ylabel("learning rate")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))  # one entry for a tie's squares, however many ties
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
              frameon=False, title_fontsize=8,
              title="bands and bars: 95% bootstrap intervals over seeds" if fit.interval["enough_seeds"] else
              textwrap.fill(_no_interval_line(fit), 110))


def _power(values: np.ndarray) -> int:
    """The power of ten that brings the largest value into [1, 10), 0 where no scaling is needed."""
    top = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    p = int(np.floor(np.log10(top))) if top > 0 else 0
    return 0 if -1 <= p <= 2 else p


def _spread(b: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float, float]]:
    """The points whose batch-size labels do not pile up (large batches crowd near 1/E = 0): in order of B, a point
    is labelled only when its label, a word to the right of it, clears every label kept so far."""
    sx, sy = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    kept: list[tuple[float, float, float]] = []
    for bi, xi, yi in sorted(zip(b, x, y)):
        if all(abs(xi - xk) / sx >= 0.14 or abs(yi - yk) / sy >= 0.05 for _, xk, yk in kept):
            kept.append((bi, xi, yi))
    return kept


def _times(p: int) -> str:
    return f"  ($\\times 10^{{{p}}}$)" if p else ""


def se_panel(ax, fit: TargetFit, unit: str = "examples") -> None:
    s, e = np.asarray(fit.steps_at_opt, float), np.asarray(fit.examples_at_opt, float)
    ok = np.isfinite(s) & np.isfinite(e) & (s > 0)
    if not ok.any():  # S = 0 (a target the runs start at: the ground truth) or no optimum reached it
        ax.text(0.5, 0.5, "no S > 0 at the optimal LRs: nothing to fit by Eq 22\n(S = 0 means the target is met "
                "before training)", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        ax.set_axis_off()
        return
    # the power of ten goes into the axis label: matplotlib's offset text sits on the end of a long label
    px, py = _power(1 / e[ok]) if ok.any() else 0, _power(1 / s[ok]) if ok.any() else 0
    x_of, y_of = (lambda v: v / 10.0 ** px), (lambda v: v / 10.0 ** py)
    ax.plot(x_of(1 / e[ok]), y_of(1 / s[ok]), "o", color="tab:blue", label="optimal LR of each B")
    for bi, x, y in _spread(np.asarray(fit.batch_sizes)[ok], x_of(1 / e[ok]), y_of(1 / s[ok])):
        ax.annotate(fmt_b(bi, 4), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7.5)
    if math.isfinite(fit.b_noise) and math.isfinite(fit.s_min) and ok.sum() >= 2:
        x = np.linspace(0, (1 / e[ok]).max() * 1.05, 100)
        ax.plot(x_of(x), y_of(1 / fit.s_min - fit.b_noise * x), color="red", ls="--",  # Eq 22
                label=f"Eq 22: slope -B_noise\nB_noise = "
                      f"{fmt_ci(fit.b_noise, fit.b_noise_ci, fmt_b, 'b_noise' in fit.off_interval)} {unit}\n"
                      f"S_min = {fmt_ci(fit.s_min, fit.s_min_ci, star='s_min' in fit.off_interval)}")
    ax.set_xlabel(f"1 / E{_times(px)}   (E = {unit} to target)")
    ax.set_ylabel(f"1 / S{_times(py)}   (S = steps to target)")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="best")


def _b_noise_line(ax, b_noise: float, x_range, label: str, **style) -> None:
    """A vertical line at ``b_noise`` where it lies on the axis, else only its legend entry, saying so."""
    if not math.isfinite(b_noise):
        return
    inside = x_range[0] <= b_noise <= x_range[1]
    ax.axvline(b_noise if inside else np.nan, **style, label=label + ("" if inside else " (off the axis)"))


def theorem5_panel(ax, fit: TargetFit, unit: str = "examples") -> None:
    """Theorem 5 (Eq 18) on the fit's runs (``TargetFit.theorem5``): the largest mean drop over LR of each B
    (cross-fitted: ``fit.max_drop``) with its 95% interval, Eq 18 at Eq 22's B_noise (solid, with its band over
    seeds), Eq 18 fitted alone (dashed), and a vertical line at each B_noise; the title gives the two B_noise and
    whether their intervals overlap."""
    t5 = fit.theorem5
    b, top = np.asarray(t5["batch_sizes"], float), np.asarray(t5["max_drop"], float)
    log_b = is_geometric(b)
    x_edges = cell_edges(b, log_b)
    grid_b = _curve_grid(x_edges, log_b)
    ci = np.asarray(t5["max_drop_ci"], float).reshape(-1, 2)
    ok = np.isfinite(top)
    yerr = np.where(np.isfinite(ci.T), np.abs(np.vstack([top - ci[:, 0], ci[:, 1] - top])), 0)
    ax.errorbar(b[ok], top[ok], yerr=yerr[:, ok], fmt="o", color="0.15", ms=6, elinewidth=1.1, capsize=3, zorder=5,
                label="largest mean drop over LR, cross-fitted over two halves of the seeds"
                      + (" (95% CI)" if fit.interval["enough_seeds"] else ""))
    b22, b18 = t5["b_noise_eq22"], t5["b_noise_eq18"]
    if math.isfinite(t5["dl_max"]):  # Eq 18 with Eq 22's B_noise: the paper's claim that they are one number
        ax.plot(grid_b, t5["dl_max"] / (1 + b22 / grid_b), color="red", lw=2, zorder=4,
                label=f"Eq 18 at Eq 22's B_noise: dL_max = {t5['dl_max']:.3g}{_star(fit, 'theorem5/dl_max')}")
        if t5["band"]:
            ax.fill_between(t5["band"]["b"], t5["band"]["lo"], t5["band"]["hi"], color="red", alpha=0.15, lw=0,
                            zorder=3)
    if math.isfinite(t5["dl_max_eq18"]):
        ax.plot(grid_b, t5["dl_max_eq18"] / (1 + b18 / grid_b), color="tab:purple", lw=1.8, ls="--", zorder=4,
                label=f"Eq 18 fitted alone: dL_max = {t5['dl_max_eq18']:.3g}"
                      f"{_star(fit, 'theorem5/dl_max_eq18')}")
    _b_noise_line(ax, b22 if b22 > 0 else math.nan, x_edges[[0, -1]], f"B_noise (Eq 22) = {fmt_b(b22)}",
                  color="red", ls=":", lw=1.5, zorder=4)
    _b_noise_line(ax, b18, x_edges[[0, -1]], f"B_noise (Eq 18 alone) = {fmt_b(b18)}", color="tab:purple",
                  ls=":", lw=1.5, zorder=4)
    ax.set_xscale("log" if log_b else "linear")
    ax.set_xlim(x_edges[[0, -1]])
    _batch_axis(ax.xaxis, unit)
    ax.set_ylabel(f"largest mean {DROP_LABEL.get(t5['criterion'], t5['criterion'])}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False,
              title_fontsize=8, title=textwrap.fill(t5["note"], 70))
    star18 = "theorem5/b_noise_eq18" in fit.off_interval
    from_drops = fmt_ci(b18, t5["b_noise_eq18_ci"], fmt_b, star18) if math.isfinite(b18) else "unresolved"
    ax.set_title(f"Theorem 5 (Eq 18): the largest drop of each B\n"
                 f"B_noise from the drops {from_drops}\n"
                 f"Eq 22's {fmt_ci(b22, t5['b_noise_eq22_ci'], fmt_b, 'b_noise' in fit.off_interval)}: "
                 f"{t5['verdict']}", fontsize=10)


def eq21_label(line: dict, ci: bool = True) -> str:
    """Eq 21's fit (``fit.eq21``) in a few words: B_* and alpha_B ([95%] with ``ci``), or why there is no fit."""
    if not math.isfinite(line["b_star"]):
        return f"no fit (B_noise <= 0 or missing at {len(line['excluded'])} of {len(line['targets'])} targets)" \
            if ci else "no fit (see the table)"
    if not ci:
        return f"B_* = {fmt_b(line['b_star'])}, alpha_B = {line['alpha_b']:.3g}"
    return (f"B_* = {fmt_ci(line['b_star'], line['b_star_ci'], fmt_b)}, "
            f"alpha_B = {fmt_ci(line['alpha_b'], line['alpha_b_ci'])}")


def _eq21_curve(ax, line: dict, color: str) -> None:
    """Eq 21's line B_* / L^(1/alpha_B) over the targets it was fitted on, with its 95% band over seeds; where it has
    no fit, only its legend entry (the summary's table says why, and gives the intervals)."""
    name = f"Eq 21 by {line['criterion']}: {eq21_label(line, ci=False)}" + (" (95% band)" if line["band"] else "")
    if not math.isfinite(line["b_star"]):
        ax.plot([], [], color=color, ls="--", lw=2, label=name)
        return
    used = np.asarray(line["targets"], float)[np.asarray(line["used"], bool)]
    loss = np.geomspace(used.min(), used.max(), 100)
    ax.plot(loss, line["b_star"] * loss ** -line["inv_alpha_b"], color=color, ls="--", lw=2, zorder=4, label=name)
    if line["band"]:
        ax.fill_between(line["band"]["target"], line["band"]["lo"], line["band"]["hi"], color=color, alpha=0.12,
                        lw=0, zorder=3)


def b_noise_panel(ax, fits: list[TargetFit], trend: dict, unit: str = "examples",
                  labels: list[str] | None = None, legend_ax=None, overlay: list[TargetFit] | None = None,
                  eq21: dict[str, dict] | None = None) -> None:
    """B_noise (Eq 22), the observed peak of the optimal LR, Eq 2's B_noise fitted to the optima and the B_simple
    measured in training (where it was) against the target loss, with 95% intervals; ``overlay`` (fits by another
    criterion) adds its B_noise, and ``eq21`` (``fit.eq21`` per criterion) draws Eq 21's line through each
    criterion's B_noise, with its band. The
    target axis is reversed so that training goes on to the right. The measured batch sizes are shaded: an estimate
    outside them is an extrapolation. The legend goes on ``legend_ax`` when given (off the data)."""
    t = np.array([f.target for f in fits])
    b_all = np.concatenate([f.batch_sizes for f in fits])
    log = is_geometric(np.unique(b_all))
    step = 0.012 * (np.ptp(t) or 1.0)  # the peak's markers beside B_noise's, not on top of them
    series = [(np.array([f.b_noise for f in fits]), [f.b_noise_ci for f in fits], 0.0, "o", "red",
               "B_noise (Eq 22, slope of 1/S on 1/E)"),
              (np.array([f.peak_batch_size for f in fits]), [f.peak_batch_size_ci for f in fits], step, "D",
               "0.25", "observed peak of the optimal LR"),
              (np.array([f.curve["adam"]["b_noise"] for f in fits]), [f.curve["adam"]["b_noise_ci"] for f in fits],
               -step, "^", "tab:orange", "B_noise of Eq 2 fitted to the optima")]
    if any(f.b_simple_n for f in fits):
        series.append((np.array([f.b_simple for f in fits]), [f.b_simple_ci for f in fits], 2 * step, "s",
                       "tab:blue", "B_simple measured in training (McCandlish)"))
    if overlay:
        series[0] = series[0][:-1] + (f"B_noise (Eq 22, slope of 1/S on 1/E) by {fits[0].criterion}",)
        series.append((np.array([f.b_noise for f in overlay]), [f.b_noise_ci for f in overlay], -2 * step, "v",
                       "tab:purple", f"B_noise (Eq 22) by {overlay[0].criterion}"))
    ax.axhspan(b_all.min(), b_all.max(), color="tab:green", alpha=0.09, lw=0, label="measured batch sizes")
    floor = b_all.min() / 4 if log else -np.inf
    for y, ci, dx, marker, color, label in series:
        ci = np.asarray(ci, float).reshape(-1, 2)
        ok = np.isfinite(y) & (y > floor)
        lo, hi = np.maximum(ci[:, 0], floor), ci[:, 1]
        yerr = np.where(np.isfinite(ci.T), np.abs(np.vstack([y - lo, hi - y])), 0)
        ax.errorbar(t[ok] - dx, y[ok], yerr=yerr[:, ok], fmt=marker + "-", color=color, mfc=color, ms=7, lw=1,
                    elinewidth=1.2, capsize=3, label=label + " (95% CI)", zorder=5)
    for group, color in ((fits, "red"), (overlay, "tab:purple")):
        if group and (eq21 or {}).get(group[0].criterion):
            _eq21_curve(ax, eq21[group[0].criterion], color)
    for ti, y, lab in zip(t, [f.b_noise for f in fits], labels or [None] * len(fits)):
        if lab and math.isfinite(y) and y > floor:
            ax.annotate(lab, (ti, y), textcoords="offset points", xytext=(-14, 6), fontsize=9, color="red")
    ax.set_yscale("log" if log else "linear")
    if not log:  # up to the estimates and Eq 21's band, not to the widest interval, which would flatten the rest
        shown = [y for y, *_ in series] + [np.ravel((eq21 or {}).get(c, {}).get("band", {}).get("hi", []))
                                           for c in (eq21 or {})]
        top = np.nanmax(np.concatenate([np.ravel(y) for y in shown] + [[b_all.max()]]))
        main = np.concatenate([np.abs(np.ravel(y)) for y, *_, label in series if "fitted to the optima" not in label
                               and "peak" not in label])
        if np.nanmax(main, initial=0) * 10 < top:  # Eq 2's B_noise far above the rest: a linear axis would flatten
            # B_noise and B_simple to its floor; symlog keeps Eq 22's negative values (no trade-off) on the axis
            ax.set_yscale("symlog", linthresh=max(1.0, b_all.min() / 2))
            ax.set_ylim(min(0, np.nanmin(np.concatenate([np.ravel(y) for y in shown])) * 1.3), 1.5 * top)
        else:
            ax.set_ylim(0, min(ax.get_ylim()[1], 1.15 * top))
    ax.set_xlim(t.max() + 0.08 * (np.ptp(t) or 1), t.min() - 0.08 * (np.ptp(t) or 1))  # falling loss to the right
    ax.set_xlabel("target training loss (training goes on to the right)")
    _batch_axis(ax.yaxis, unit, "B")
    if legend_ax is None:
        ax.legend(fontsize=8, loc="best")
    else:
        legend_ax.legend(*ax.get_legend_handles_labels(), fontsize=8.5, loc="upper right", frameon=False)
    ax.set_title(f"B_noise against the target loss: {trend['verdict']}", fontsize=10)


def _trend_text(ax, fits: list[TargetFit], trend: dict, unit: str, labels: list[str] | None,
                eq21: dict[str, dict] | None = None) -> None:
    """The summary panel's numbers as a table, Eq 21's fit of each criterion, and the trend's verdict in words."""
    ax.axis("off")
    rows = []
    for f, lab in zip(fits, labels or [""] * len(fits)):
        head = f"{lab}{' ' if lab else ''}{f.target:g}"
        eq2 = fmt_ci(f.curve["adam"]["b_noise"], f.curve["adam"]["b_noise_ci"], fmt_b,
                      "curve/adam/b_noise" in f.off_interval)
        rows += [f"{head:<8s} Eq 22 {fmt_ci(f.b_noise, f.b_noise_ci, fmt_b, 'b_noise' in f.off_interval):<20s}"
                 f"peak     {fmt_ci(f.peak_batch_size, f.peak_batch_size_ci, fmt_b)}",
                 f"{'':<8s} Eq 2  {eq2:<20s}"
                 f"B_simple {fmt_ci(f.b_simple, f.b_simple_ci, fmt_b, 'b_simple' in f.off_interval)}"]
    n = f"{int(np.isfinite(fits[0].steps_at_opt).sum())} B x {fits[0].n_seeds} seeds" if fits else ""
    star = "; * on or outside its own interval" if any(f.off_interval for f in fits) else ""
    for c, line in (eq21 or {}).items():
        rows.append(f"Eq 21 by {c}: {eq21_label(line)}")
        if math.isfinite(line["inv_alpha_b_ci"][0]) and not math.isfinite(line["alpha_b_ci"][0]):
            rows.append(f"{'':<8s} 1/alpha_B = {fmt_ci(line['inv_alpha_b'], line['inv_alpha_b_ci'])}: holds 0, "
                        f"alpha_B unbounded")
    ax.text(0, 1, f"target: B_noise [95% CI], in {unit}; {n}{star}\n" + "\n".join(rows) + "\n\n"
            + textwrap.fill(trend["text"], 72), family="monospace", fontsize=8, va="top", transform=ax.transAxes)


def surge_figure(fits: list[TargetFit], title: str, verdicts: list[dict] | None = None,
                 overlay: list[TargetFit] | None = None, overlay_verdicts: list[dict] | None = None,
                 unit: str = "examples", labels: list[str] | None = None, trend: dict | None = None,
                 eq21: dict[str, dict] | None = None) -> Figure:
    """A row of (heatmap, S-E, Theorem 5) panels per target, opened by the B_noise summary when ``trend``
    (``report.b_noise_trend``) is given; ``verdicts`` (``identify.surge_verdict``) style the optima and title each
    row, ``overlay`` (fits by another criterion) adds their optima, ``labels`` name the rows (the paper's panels),
    ``unit`` is what a batch counts, ``eq21`` (``fit.eq21`` per criterion) Eq 21's lines on the summary."""
    heights = ([4.2] if trend else []) + [5.9] * len(fits)
    fig = plt.figure(figsize=(18, sum(heights) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(heights), 3, width_ratios=[1.45, 1, 1], height_ratios=heights)
    if trend:
        text_ax = fig.add_subplot(grid[0, 1:])
        b_noise_panel(fig.add_subplot(grid[0, 0]), fits, trend, unit, labels, legend_ax=text_ax, overlay=overlay,
                      eq21=eq21)
        _trend_text(text_ax, fits, trend, unit, labels, eq21)
    for i, fit in enumerate(fits):
        row = i + bool(trend)
        left, right = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        verdict = verdicts[i] if verdicts else None
        heatmap_panel(left, fit, verdict, overlay[i] if overlay else None,
                      overlay_verdicts[i] if overlay_verdicts else None, unit)
        se_panel(right, fit, unit)
        theorem5_panel(fig.add_subplot(grid[row, 2]), fit, unit)
        name = f"{labels[i]} " if labels and labels[i] else ""
        head = f"{name}target loss {fit.target:g}: {fit.n_runs} runs, {len(fit.batch_sizes)} B x {len(fit.lrs)} " \
               f"LR x {fit.n_seeds} seeds"
        if verdict:
            n_res = verdict["per_batch"].count("resolved")
            head += f"\nverdict: {verdict['verdict']}" + (f" ({n_res} of {len(fit.batch_sizes)} optima resolved)"
                                                          if fit.interval["enough_seeds"] else "")
        if not fit.interval["enough_seeds"]:
            head += "\n" + textwrap.fill(_no_interval_line(fit), 95)
        if fit.off_interval:
            head += "\n" + _off_interval_line(fit)
        left.set_title(head, fontsize=10)
        right.set_title(f"peak of the optimal LR: B = "
                        f"{fmt_ci(fit.peak_batch_size, fit.peak_batch_size_ci, fmt_b)} {unit}", fontsize=10)
    fig.suptitle(title, fontsize=12)
    return fig
