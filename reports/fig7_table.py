"""Fig. 7: the optimal LR per batch size from a user's table of (batch size, LR, loss), e.g. read off DeepSeek LLM's
hyperparameter heatmaps (its Fig. 2, which the paper's Fig. 7 reuses), and the Eq 2 fit.

The table is a CSV with the columns ``batch_size``, ``lr`` and ``loss`` (other columns are ignored; repeated (B, LR)
rows are averaged). ``loss`` is a final or generalisation loss, **lower is better**, as in DeepSeek's heatmaps; it is
not the loss *drop* that the store's grids rank (higher is better there). No such data ships with this suite: the
paper does not say how its authors read DeepSeek's figures.

Per batch size (``surge_repro.analysis.table_optima``, where the numerics and their reasons are): the argmin of the loss
over the LRs measured at that B (``fit.optimal_lr``; "on the edge" when it is the first or last LR measured at that B,
"tie" when two or more LRs share the lowest mean loss within ``fit.TIE_RTOL``: no optimum, no fit); then the sub-grid
optimal LR, the vertex of a quadratic in log LR through the argmin's window (5 LRs, wider where 5 do not rise 3 noise
SDs), with a 95% interval from a parametric bootstrap of the loss noise (one SD pooled over the batch sizes' residuals).
Flagged: no curvature (no minimum: no estimate), a vertex beyond the measured LRs (clipped), a flat optimum (the
interval spans over half the measured log-LR range). A table has no steps-to-target, so B_noise cannot come from Eq 22
as in the store's grids: each law (Eq 1, Eq 24 with alpha = 0.5, Eq 2) is fitted to the optima with B_noise free
(``fit.fit_curve``: least squares in log LR), with its own B_noise and eps_max, and refitted on each bootstrap replicate
of the optima for their 95% intervals and the curve's band. The fit uses the optima that are not on the edge, clipped
or flat when at least 3 are, else all of them; with fewer than 3 optima nothing is fitted, and a note says so.

The quadratic assumes the loss is locally symmetric in log LR: on a 2.3x LR lattice with a loss whose curvature
doubles across the optimum, the vertex is as far off as the argmin (0.24 in log LR) and the intervals miss it.

Panels: (left) the loss over (B, LR) as a heatmap (lower is better) with the optimal LRs and their intervals, the
argmins, the flags, the three fitted laws with their bands, and B_noise with its interval; (right) the same against B.

    python reports/fig7_table.py table.csv                            # reports/figures/fig7_<table>.png and .json
    python reports/fig7_table.py table.csv --title "DeepSeek LLM, 1e17 FLOPs" --unit tokens --out /tmp/fig
    python reports/fig7_table.py table.csv --n-boot 4000 --seed 1        # more replicates, another bootstrap seed
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from surge_repro.analysis.fit import CI, lr_list  # noqa: E402
from surge_repro.analysis.table_optima import (  # noqa: E402
    FLAGS,
    N_BOOT,
    fit_laws,
    fitted_mask,
    loss_grid,
    table_optima,
)
from surge_repro.analysis.theory import LAWS  # noqa: E402
from surge_repro.report.plots import LAW_STYLE, cell_edges, fmt_b, is_geometric  # noqa: E402
from surge_repro.report.render import plain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("batch_size", "lr", "loss")


class TableError(ValueError):
    """A table this script cannot use; the message says what to fix."""


def read_table(path: str | Path) -> pd.DataFrame:
    """The CSV's batch_size, lr, loss columns as floats, checked: present, finite, batch_size and lr > 0, at least
    two batch sizes with two LRs each."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file. Fix: give the path of a CSV with columns {', '.join(COLUMNS)}")
    empty = (f"{path}: the table is empty (no rows). Fix: a header row 'batch_size,lr,loss' and one row per "
             f"(batch size, LR) cell below it")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # zero bytes, or blank lines only: not even a header
        raise TableError(empty) from None
    if table.empty:
        raise TableError(empty)
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing} (found {list(table.columns)}). Fix: a header row "
                         f"'batch_size,lr,loss' and one row per (batch size, LR) cell")
    table = table[list(COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(table.to_numpy(float)).all(axis=1)
    if bad.any():
        raise TableError(f"{path}: {int(bad.sum())} row(s) with a missing or non-numeric value (first: line "
                         f"{int(np.argmax(bad)) + 2}). Fix: numbers in every cell, or delete the row")
    for col in ("batch_size", "lr"):
        if (table[col] <= 0).any():
            rows = (np.flatnonzero(table[col] <= 0) + 2).tolist()[:5]
            raise TableError(f"{path}: column {col} has non-positive values (lines {rows}). Fix: every {col} must "
                             f"be > 0 (write batch sizes in their unit, e.g. tokens, and LRs as e.g. 3e-4)")
    per_b = table.groupby("batch_size")["lr"].nunique()
    if len(per_b) < 2 or (per_b >= 2).sum() < 2:
        raise TableError(f"{path}: {len(per_b)} batch size(s), {int((per_b >= 2).sum())} with two or more LRs. "
                         f"Fix: at least two batch sizes, each with at least two LRs, to locate optima")
    return table


def analyse(table: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The sub-grid optima with intervals (``table_optima``), the laws fitted to them with bands (``fit_laws``), the
    observed peak and a note for everything a reader must know."""
    b, lrs, loss = loss_grid(table)
    o = table_optima(b, lrs, loss, n_boot=n_boot, seed=seed)
    use = fitted_mask(o)
    notes = []
    for flag, text in FLAGS.items():
        at = [fmt_b(x, 4) for x, f in zip(b, o["flags"]) if flag in f]
        if flag == "tie" and at:
            text += ": " + "; ".join(f"B = {fmt_b(x, 4)}: {lr_list(t)}" for x, t in zip(b, o["tied_lrs"]) if t)
        elif at:
            text += f" at B = {at}"
        if at and flag in ("on_edge", "beyond_range", "flat"):
            text += "; " + ("left out of the fits" if not use[[flag in f for f in o["flags"]]].any()
                            else "kept in the fits (fewer than 3 others)")
        if at:
            notes.append(f"{flag}: {text}")
    if not o["noise_df"]:
        notes.append("no residual degrees of freedom (no batch size has 4 or more LRs around its argmin): the loss "
                     "noise is unknown, so there are no intervals")
    fits = {}
    if use.sum() < 3:  # two points fit any law: a B_noise from them would be invented
        notes.append(f"fewer than 3 batch sizes have an optimum ({int(use.sum())} of {len(use)}; ties and "
                     f"no-curvature rows have none): no law is fitted")
    else:
        x_edges = cell_edges(b, is_geometric(b))
        xs = np.geomspace(x_edges[0] if x_edges[0] > 0 else b.min() / 2, x_edges[-1], 200)
        fits = fit_laws(b[use], o["lr_opt"][use], o["draws"][:, use], b_grid=xs)
    for law, f in fits.items():
        if f["at_bound"]:
            notes.append(f"{LAWS[law][0]}: B_noise at the end of the searched range: the table does not determine it")
        elif f["at_bound_share"] >= CI[0] / 100:
            notes.append(f"{LAWS[law][0]}: {f['at_bound_share']:.0%} of replicates put B_noise on the searched "
                         f"range's end, so its interval reaches it: B_noise is bounded on one side only")
    found = np.isfinite(o["lr_opt"])
    peak = float(b[np.nanargmax(o["lr_opt"])]) if found.any() else math.nan
    return {**o, "used_in_fit": use, "fits": fits, "observed_peak_batch_size": peak, "notes": notes}


SHORT = {"no_curvature": "no curvature", "beyond_range": "clipped", "flat": "flat", "few_lrs": "< 3 LRs"}


def _draw_optima(ax, a: dict) -> None:
    """The sub-grid optima with their 95% intervals (filled: fitted; hollow: not), the argmins, and the flags."""
    b, lr, ci, used = a["batch_sizes"], a["lr_opt"], a["lr_opt_ci"], a["used_in_fit"]
    unused = ~used & np.isfinite(lr)
    for mask, face, label in ((used, "tab:red", "sub-grid optimal LR per B, 95% interval (fitted)"),
                              (unused, "none", "sub-grid optimal LR, not fitted (edge, clipped or flat)")):
        if mask.any():
            err = np.abs(np.nan_to_num(ci[mask].T - lr[mask], nan=0.0))  # no interval: a bare point
            ax.errorbar(b[mask], lr[mask], yerr=err, fmt="o", mfc=face, mec="tab:red", ecolor="tab:red", mew=1.5,
                        ms=7, elinewidth=1.8, capsize=4, zorder=6, label=label)
    ok = np.isfinite(a["lr_argmin"])
    ax.plot(b[ok], a["lr_argmin"][ok], "x", color="black", ms=6, mew=1.4, zorder=5,
            label="argmin-loss LR of the table (the lattice point)")
    for x, tied in zip(b, a["tied_lrs"]):  # a tie: no optimum; its LRs as hollow squares, its column says so
        if tied:
            ax.plot([x] * len(tied), tied, "s", mfc="none", mec="tab:red", ms=7, mew=1.3, zorder=5,
                    label="LRs tied for the lowest loss (no optimum, not fitted)")
    for x, y, flags, tied in zip(b, a["lr_argmin"], a["flags"], a["tied_lrs"]):
        words = ["tie: no optimum"] * bool(tied) + ["edge"] * ("on_edge" in flags) + [SHORT[f] for f in flags
                                                                                        if f in SHORT]
        if words:  # beside the column, off its markers, in a box that the heatmap does not swallow
            ax.annotate(", ".join(words), (x, 0.5 if tied or not np.isfinite(y) else y),
                        xycoords=ax.get_xaxis_transform() if tied or not np.isfinite(y) else "data",
                        xytext=(7, 0), textcoords="offset points", rotation=90, ha="left", va="center", fontsize=8,
                        color="tab:red", zorder=7,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="tab:red", alpha=0.85))


def figure(a: dict, title: str, unit: str) -> plt.Figure:
    b, lrs = a["batch_sizes"], a["lrs"]
    log_b, log_lr = is_geometric(b), is_geometric(lrs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 7.2), layout="constrained",
                                      gridspec_kw={"width_ratios": [1.3, 1]})
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.85")  # reversed: bright = low loss = good
    finite = a["loss"][np.isfinite(a["loss"])]
    vmin, vmax = np.percentile(finite, [2, 98])
    mesh = left.pcolormesh(cell_edges(b, log_b), cell_edges(lrs, log_lr), np.ma.masked_invalid(a["loss"].T), cmap=cmap,
                           vmin=vmin, vmax=vmax, shading="flat")
    fig.colorbar(mesh, ax=left, label="loss (lower is better; grey: not in the table)")
    for ax in (left, right):
        for law, f in a["fits"].items():
            label, fn = LAWS[law]
            band = f["band"]
            ci = f"[{fmt_b(f['b_noise_ci'][0])}, {fmt_b(f['b_noise_ci'][1])}]" if band else "(no interval)"
            ax.plot(band["b"] if band else b, fn(np.asarray(band["b"] if band else b), f["eps_max"], f["b_noise"]),
                    **LAW_STYLE[law], zorder=4, label=f"{label}: eps_max = {f['eps_max']:.3g}, B_noise = "
                                                      f"{fmt_b(f['b_noise'])} {ci}, rms log error {f['rmse_log']:.2f}")
            if band:  # the curve's 95% band over the optima's bootstrap; faint, so three leave the heatmap readable
                ax.fill_between(band["b"], band["lo"], band["hi"], color=LAW_STYLE[law]["color"],
                                alpha=0.22 if law == "adam" else 0.1, lw=0, zorder=3)
        if a["fits"]:
            bn = a["fits"]["adam"]["b_noise"]
            ax.axvline(bn, color="red", ls="--", lw=1.6, label=f"B_noise of the Eq 2 fit = {fmt_b(bn)}")
            lo, hi = a["fits"]["adam"]["b_noise_ci"]
            if math.isfinite(lo):
                ax.axvspan(lo, hi, color="red", alpha=0.07, lw=0, zorder=1, label="its 95% interval")
        _draw_optima(ax, a)
        ax.set_xscale("log" if log_b or ax is right else "linear")
        ax.set_yscale("log" if log_lr or ax is right else "linear")
        ax.set_xlabel(f"batch size B ({unit})")
        ax.set_ylabel("learning rate")
    left.set_xlim(cell_edges(b, log_b)[[0, -1]])
    left.set_ylim(cell_edges(lrs, log_lr)[[0, -1]])
    unfit = "" if a["fits"] else "\nno law fitted: fewer than 3 batch sizes have an optimum"
    noise = (f"95% intervals from a loss noise SD of {a['noise_sd']:.2g} ({a['noise_df']} df)" if a["noise_df"]
             else "loss noise unknown: no intervals")
    left.set_title("loss over (B, LR), optimal LR per B, fitted laws with 95% bands" + unfit, fontsize=10,
                   color="tab:red" if unfit else "black")
    right.set_title("optimal LR against B: vertex of a quadratic in log LR\n" + noise + unfit,
                    fontsize=10, color="tab:red" if unfit else "black")
    handles, names = left.get_legend_handles_labels()
    unique = dict(zip(names, handles))  # one entry for the tied squares, however many ties
    fig.legend(unique.values(), unique.keys(), fontsize=8.5, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="CSV with columns batch_size, lr, loss (loss: lower is better)")
    ap.add_argument("--title", default=None, help="figure title (default: Fig. 7 and the table's name)")
    ap.add_argument("--unit", default="tokens", help="what a batch counts, for the axis labels (default tokens)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "figures"), help="output folder")
    ap.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap replicates (default {N_BOOT})")
    ap.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed (default 0)")
    args = ap.parse_args(argv)
    if args.n_boot < 100:
        ap.error(f"--n-boot {args.n_boot}: a 2.5% tail needs at least 40 replicates beyond it; fix: --n-boot 1000")
    try:
        table = read_table(args.table)
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    a = analyse(table, n_boot=args.n_boot, seed=args.seed)
    name = Path(args.table).stem
    title = args.title or f"Fig. 7: optimal LR against batch size from {Path(args.table).name}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"fig7_{name}.png"
    fig = figure(a, title, args.unit)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    payload = {
        "figure": png.name, "title": title, "table": str(Path(args.table).resolve()), "rows": int(len(table)),
        "command": " ".join(["python reports/fig7_table.py", *(sys.argv[1:] if argv is None else argv)]),
        "batch_unit": args.unit,
        "loss_means": "a final/generalisation loss, lower is better (not the store grids' loss drop)",
        "lr_argmin_means": "argmin over the table's LRs of the mean loss at each batch size (fit.optimal_lr)",
        "optimal_lr_means": "the vertex of a quadratic in log LR through the argmin's window of measured LRs, clipped "
                            "to the LRs measured at that B (table_optima); lr_opt_ci: its 95% interval from a "
                            "parametric bootstrap of the loss noise pooled over batch sizes (noise_sd, noise_df)",
        "b_noise_means": "per law, the (B_noise, eps_max) that minimise the squared log-LR error (fit.fit_curve) "
                         "(no Eq 22: a table has no steps to target); *_ci and band: refitted on each bootstrap "
                         "replicate of the optima",
        "flags_mean": FLAGS, "n_boot": args.n_boot, "seed": args.seed, "noise_sd": a["noise_sd"],
        "noise_df": a["noise_df"], "batch_sizes": a["batch_sizes"], "lrs": a["lrs"], "lr_argmin": a["lr_argmin"],
        "loss_at_argmin": a["loss_at_argmin"], "lr_opt": a["lr_opt"], "lr_opt_ci": a["lr_opt_ci"],
        "window_lrs": a["window_lrs"], "curvature": a["curvature"], "flags": a["flags"], "on_edge": a["on_edge"],
        "tie": a["tie"], "tied_lrs": a["tied_lrs"], "used_in_fit": a["used_in_fit"],
        "observed_peak_batch_size": a["observed_peak_batch_size"],
        "fits": {law: {"label": LAWS[law][0], **f} for law, f in a["fits"].items()}, "notes": a["notes"],
    }
    png.with_suffix(".json").write_text(json.dumps(plain(payload), indent=1))
    print(title)
    print(f"{'B':>10s}  argmin LR   optimal LR [95% interval]        flags")
    for bi, arg, lr, (lo, hi), flags, tied in zip(a["batch_sizes"], a["lr_argmin"], a["lr_opt"], a["lr_opt_ci"],
                                                  a["flags"], a["tied_lrs"]):
        shown = f"none: tie of {lr_list(tied)}" if tied else f"{lr:<10.3g} [{lo:.3g}, {hi:.3g}]"
        print(f"{fmt_b(bi, 4):>10s}  {arg:<10.3g}  {shown:32s} {', '.join(f for f in flags if f != 'tie')}")
    for law, f in a["fits"].items():
        print(f"{LAWS[law][0]:24s} eps_max = {f['eps_max']:.4g} [{f['eps_max_ci'][0]:.3g}, {f['eps_max_ci'][1]:.3g}]"
              f"  B_noise = {fmt_b(f['b_noise'], 4)} [{fmt_b(f['b_noise_ci'][0])}, {fmt_b(f['b_noise_ci'][1])}]  "
              f"rms log error {f['rmse_log']:.3f} over {f['n']} B")
    for note in a["notes"]:
        print(f"note: {note}")
    print(f"figure: {png}\nnumbers: {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
