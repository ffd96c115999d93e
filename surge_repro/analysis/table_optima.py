"""Optimal LRs with intervals from a table of (batch size, LR, loss) with one run per cell (Fig. 7), and the laws fitted
to them with bands: pure functions; ``reports/fig7_table.py`` is their I/O and figure.

A published sweep (DeepSeek LLM's heatmaps, which the paper's Fig. 7 reuses) has one loss per (B, LR) cell, so the
seed bootstrap of ``fit.fit_target`` does not apply. Here, per batch size:

1. ``fit.optimal_lr`` gives the argmin of the loss over the LRs measured at that B (a tie within ``fit.TIE_RTOL`` has
   none), and its on-edge flag.
2. A quadratic in log LR through a window of measured LRs around the argmin (``window``); the minimiser of that
   quadratic over the LRs measured at that B is the sub-grid optimum (``constrained_vertex``). No estimate where the
   quadratic is not convex (``no_curvature``: no minimum, none is invented); one clipped to the nearest measured LR
   and flagged ``beyond_range`` where the vertex lies outside them.
3. Its interval, by a parametric bootstrap: the loss noise is one SD pooled over every batch size's residuals
   (``pooled_noise``; one run per cell gives a B alone only 2 degrees of freedom), redrawn per replicate from its
   scaled inverse chi-square (so a few residual df widen the interval as a t quantile would); each replicate adds
   that noise to the window's fitted quadratic, refits, and takes the constrained vertex. The interval is the
   2.5-97.5 percentiles of the replicates' vertices; ``flat`` where it spans more than ``FLAT_SHARE`` of the
   measured log-LR range.
4. The laws, Eq 1 ("SGD", Eq 24 with alpha = 1), Eq 24 with alpha = 0.5 and Eq 2 ("Adam"), fitted to the optima with
   B_noise free (``fit.fit_curve``: least squares in log LR), then refitted on every replicate, one draw per B from
   its own bootstrap (the cells are independent runs): intervals on B_noise and eps_max and a 95% band for each
   law's curve (``fit_laws``). They carry the optima's measurement noise only, not the law's misfit (``rmse_log``).

Measured on tables drawn from Eq 2 with a parabola in log LR plus noise, 8 B x 8 LRs 2.26x apart
(tests/test_table_optima.py): the vertex is off the true optimum by 0.017 in log LR on average where the argmin is off
by 0.23; the intervals cover it in 94.9% and 93.9% of 1200 (loss noise 0.005 and 0.02 against a curvature of 0.05);
Eq 2's B_noise interval covered the truth in 38 of 40 tables, eps_max's in 39. The quadratic assumes the loss is
locally symmetric in log LR: where the curvature doubles across the optimum the vertex is as far off as the argmin
(0.24) and the intervals miss it (0 of 800).

    from surge_repro.analysis.table_optima import fit_laws, fitted_mask, loss_grid, table_optima
    b, lrs, loss = loss_grid(table)      # table: DataFrame with batch_size, lr, loss (lower is better)
    o = table_optima(b, lrs, loss)        # per B: lr_argmin, lr_opt, lr_opt_ci, flags, draws
    use = fitted_mask(o)                  # not a tie, on the edge, clipped or flat
    fits = fit_laws(b[use], o["lr_opt"][use], o["draws"][:, use])
"""

from __future__ import annotations

import math

import numpy as np
import numpy.polynomial.polynomial as poly
import pandas as pd

from surge_repro.analysis.fit import CI, fit_curve, optimal_lr, tied_best
from surge_repro.analysis.theory import LAWS

# The window is the argmin and HALF_WIDTH measured LRs either side, widened one LR a side at a time until both of its
# ends lie RISE_SD noise SDs above the lowest loss (or it reaches the measured range). Why not the 3 points of the
# argmin and its neighbours: an interpolation leaves no residual, so no noise estimate and no interval. Why not a
# fixed wide window: the loss is a parabola in log LR only near its minimum (it rises faster on the high-LR side,
# towards divergence), so a wide window biases the vertex towards the gentler side. The rule keeps the window as
# narrow as the curvature allows: on a coarse lattice (DeepSeek's, ~2x apart) the ends of 5 points rise far above the
# noise and it stays at 5; on a fine lattice with noise 5 points span too little to show the curvature, and the
# window widens until it does. Measured on 150 tables of 8 B x 70 LRs over 2.5 decades (loss noise 0.002, curvature
# 0.05): 5 fixed points gave no curvature at 54 of 1200 B and a mean log error of 0.084 (the argmin's: 0.088); the
# widening, none and 0.026.
HALF_WIDTH = 2
RISE_SD = 3.0
FLAT_SHARE = 0.5  # an interval over more than half the measured log-LR range says little about where the optimum is
N_BOOT = 1000
FLAGS = {
    "tie": "two or more LRs share the lowest loss (within fit.TIE_RTOL): no optimum, enters no fit",
    "on_edge": "the argmin is the smallest or largest LR measured at this B: the optimum may lie beyond",
    "few_lrs": "fewer than 3 LRs measured at this B: no quadratic, no estimate",
    "no_curvature": "the quadratic through the argmin's window is not convex: no minimum, no estimate",
    "beyond_range": "the quadratic's vertex lies outside the measured LRs: clipped to the nearest one",
    "flat": f"the 95% interval spans more than {FLAT_SHARE:.0%} of the measured log-LR range: the loss is flat there",
}


def loss_grid(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch sizes, the LRs (both sorted) and the mean loss over (B, LR), NaN where the table has no cell."""
    grid = table.groupby(["batch_size", "lr"])["loss"].mean().unstack("lr").sort_index().sort_index(axis=1)
    return grid.index.to_numpy(float), grid.columns.to_numpy(float), grid.to_numpy(float)


def constrained_vertex(coef: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Where c0 + c1 x + c2 x^2 is lowest on [lo, hi], for coef (3, ...) as ``poly.polyfit`` returns it, and whether
    it has a minimum at all (c2 > 0). Without one (a line or a cap) the lower end of [lo, hi] is where it is lowest:
    that is what a bootstrap replicate reports, so such replicates push the interval to the range's end."""
    c0, c1, c2 = coef
    convex = c2 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(convex, -c1 / (2 * np.where(convex, c2, 1.0)), np.nan)
    ends = np.where(c1 * (hi - lo) + c2 * (hi ** 2 - lo ** 2) < 0, hi, lo)  # the lower of the two ends
    return np.where(convex, np.clip(x, lo, hi), ends), convex


def window(x: np.ndarray, y: np.ndarray, j: int, sd: float, half_width: int = HALF_WIDTH,
           rise_sd: float = RISE_SD) -> slice:
    """The measured LRs (indices into the row's x, y) that the quadratic goes through: see ``HALF_WIDTH``."""
    n, h = len(x), half_width
    while True:
        lo, hi = max(j - h, 0), min(j + h, n - 1)
        rose = [y[k] - y[j] >= rise_sd * sd for k in (lo, hi) if k != j]  # an end at the argmin cannot rise
        if not math.isfinite(sd) or all(rose) or (lo == 0 and hi == n - 1):
            return slice(lo, hi + 1)
        h += 1


def pooled_noise(rows: list[tuple[np.ndarray, np.ndarray, int]], half_width: int = HALF_WIDTH) -> tuple[float, int]:
    """The loss noise SD pooled over batch sizes and its degrees of freedom, from the residuals of the quadratic
    through each argmin's HALF_WIDTH window (the narrowest, so the least misfit). NaN and 0 without residual df."""
    ss, df = 0.0, 0
    for x, y, j in rows:
        w = slice(max(j - half_width, 0), j + half_width + 1)
        if len(x[w]) > 3:
            coef = poly.polyfit(x[w], y[w], 2)
            ss += float(np.sum((y[w] - poly.polyval(x[w], coef)) ** 2))
            df += len(x[w]) - 3
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def table_optima(batch_sizes, lrs, loss, n_boot: int = N_BOOT, seed: int = 0, half_width: int = HALF_WIDTH,
                 rise_sd: float = RISE_SD) -> dict:
    """Per batch size (the rows of ``loss``, (n_B, n_LR), NaN where unmeasured; lower is better): the argmin LR and its
    tie and edge flags, the sub-grid optimum (``lr_opt``, NaN where there is none), its 95% interval (``lr_opt_ci``,
    (n_B, 2)), the window's LR span, the fitted curvature of the loss in (natural) log LR, the flags (``FLAGS``) and
    the replicates' optima (``draws``, (n_boot, n_B), NaN where a B has no estimate). Also the pooled noise SD
    (``noise_sd``, in loss units) and its degrees of freedom; with none, no interval (NaN) and no draws."""
    b, lrs, loss = np.asarray(batch_sizes, float), np.asarray(lrs, float), np.asarray(loss, float)
    present = np.isfinite(loss)
    best, on_edge, tie = optimal_lr(-loss, present)  # the store's argmax on minus the loss: lower is better here
    n_b = len(b)
    rows = []  # per B: the measured log LRs, their losses, and the argmin's index among them (-1: a tie)
    for i in range(n_b):
        x, y = np.log(lrs[present[i]]), loss[i, present[i]]
        rows.append((x, y, int(np.searchsorted(x, np.log(lrs[best[i]]))) if best[i] >= 0 else -1))
    sd, df = pooled_noise([r for r in rows if r[2] >= 0 and len(r[0]) >= 3], half_width)
    rng = np.random.default_rng(seed)
    # one noise SD per replicate, shared by every B (they share the estimate): sd^2 * df / chi2(df)
    sd_draws = sd * np.sqrt(df / rng.chisquare(df, n_boot)) if df else np.full(n_boot, np.nan)
    out = {"lr_opt": np.full(n_b, np.nan), "lr_opt_ci": np.full((n_b, 2), np.nan),
           "window_lrs": np.full((n_b, 2), np.nan), "curvature": np.full(n_b, np.nan),
           "draws": np.full((n_boot, n_b), np.nan), "flags": [[] for _ in range(n_b)]}
    for i, (x, y, j) in enumerate(rows):
        flags = out["flags"][i]
        flags += ["tie"] * bool(tie[i]) + ["on_edge"] * bool(on_edge[i])
        if j < 0:
            continue
        if len(x) < 3:
            flags.append("few_lrs")
            continue
        w = window(x, y, j, sd, half_width, rise_sd)
        xw = x[w] - x[j]  # centred on the argmin: better conditioned
        coef = poly.polyfit(xw, y[w], 2)
        out["window_lrs"][i] = np.exp(x[w][[0, -1]])
        out["curvature"][i] = coef[2]
        lo, hi = x[0] - x[j], x[-1] - x[j]
        v, convex = constrained_vertex(coef, lo, hi)
        if not convex:
            flags.append("no_curvature")
            continue
        if not lo <= -coef[1] / (2 * coef[2]) <= hi:  # the vertex was clipped to the measured range
            flags.append("beyond_range")
        out["lr_opt"][i] = np.exp(x[j] + v)
        if not df:
            continue
        fitted = poly.polyval(xw, coef)
        noisy = fitted[None, :] + sd_draws[:, None] * rng.standard_normal((n_boot, len(xw)))
        draws = constrained_vertex(poly.polyfit(xw, noisy.T, 2), lo, hi)[0] + x[j]
        out["draws"][:, i] = np.exp(draws)
        out["lr_opt_ci"][i] = np.exp(np.percentile(draws, CI))
        if np.diff(np.percentile(draws, CI))[0] > FLAT_SHARE * (x[-1] - x[0]):
            flags.append("flat")
    tied = [lrs[t].tolist() if flag else [] for t, flag in zip(tied_best(-loss), tie)]
    lr_argmin = np.where(best >= 0, lrs[np.clip(best, 0, None)], np.nan)
    loss_at = np.where(best >= 0, loss[np.arange(n_b), np.clip(best, 0, None)], np.nan)
    return {"batch_sizes": b, "lrs": lrs, "loss": loss, "lr_argmin": lr_argmin, "loss_at_argmin": loss_at,
            "on_edge": on_edge, "tie": tie, "tied_lrs": tied, **out, "noise_sd": sd, "noise_df": df}


def fitted_mask(o: dict) -> np.ndarray:
    """Which optima the laws are fitted to: those with an estimate that is not on the edge, clipped or flat, when at
    least 3 are; else every estimate (a bound then counts as the best guess of its optimum). A flat one is left out
    because the point fit weighs every optimum alike, and a flat optimum's vertex is set by the noise."""
    found = np.isfinite(o["lr_opt"])
    clean = found & ~np.array([bool({"on_edge", "beyond_range", "flat"} & set(f)) for f in o["flags"]])
    return clean if clean.sum() >= 3 else found


def fit_law(batch_sizes, lr_opt, law: str, n_grid: int = 8001) -> dict:
    """B_noise and eps_max of one law from optimal LRs alone (``fit.fit_curve``: least squares in log LR, B_noise
    searched from 1/100 of the smallest B to 100 times the largest). rmse_log is the fit's root mean square error in
    natural log (0.1 is about 10%). ``at_bound``: B_noise sits at the end of the searched range (not determined by
    the data: for Eq 1 this means the optima do not saturate within the table)."""
    b, lr = np.asarray(batch_sizes, float), np.asarray(lr_opt, float)
    eps, b_noise, edge = (float(v[0]) for v in fit_curve(b, lr, law, n_grid=n_grid, keep_edge=True))
    err = float(np.sum(np.log(lr / LAWS[law][1](b, eps, b_noise)) ** 2))
    return {"b_noise": b_noise, "eps_max": eps, "rmse_log": math.sqrt(err / len(b)), "n": int(len(b)),
            "at_bound": bool(edge)}


def fit_laws(batch_sizes, lr_opt, draws, b_grid=None, laws=tuple(LAWS), chunk: int = 200,
             n_grid: int = 2001) -> dict[str, dict]:
    """Each law of ``laws`` (keys of ``LAWS``) fitted to the optima (``fit_law``) and refitted to each row of
    ``draws`` (replicates x B, the optima's bootstrap): 95% intervals on B_noise and eps_max, the share of replicates
    whose B_noise is on the search bound (kept at the bound: the interval then reaches it and bounds B_noise on one
    side only), and the curve's 95% band over ``b_grid`` (default: 80 points over the batch sizes). No intervals
    (NaN) and no band without draws (no residual df)."""
    b, lr, draws = np.asarray(batch_sizes, float), np.asarray(lr_opt, float), np.asarray(draws, float)
    xs = np.geomspace(b.min(), b.max(), 80) if b_grid is None else np.asarray(b_grid, float)
    ok = np.isfinite(draws).all(axis=1)
    fits = {}
    for law in laws:
        f, fn = fit_law(b, lr, law), LAWS[law][1]
        parts = [fit_curve(b, draws[ok][s:s + chunk], law, n_grid=n_grid, keep_edge=True)
                 for s in range(0, int(ok.sum()), chunk)]  # chunks: fit_curve holds (rep, grid, B) at once
        eps, b_noise, edge = (np.concatenate(p) for p in zip(*parts)) if parts else (np.array([]),) * 3
        nan2 = [math.nan, math.nan]
        f["b_noise_ci"] = np.percentile(b_noise, CI).tolist() if len(b_noise) else nan2
        f["eps_max_ci"] = np.percentile(eps, CI).tolist() if len(eps) else nan2
        f["at_bound_share"] = float(np.mean(edge)) if len(edge) else math.nan
        f["n_boot"] = int(len(eps))
        if len(eps):
            lo, hi = np.percentile(fn(xs[None, :], eps[:, None], b_noise[:, None]), CI, axis=0)
            f["band"] = {"b": xs.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
        else:
            f["band"] = {}
        fits[law] = f
    return fits
