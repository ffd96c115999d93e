"""Fig. 7: the optimal LR per batch size from a user's table of (batch size, LR, loss), e.g. read off DeepSeek LLM's
hyperparameter heatmaps (its Fig. 2, which the paper's Fig. 7 reuses), and the Eq 2 fit.

The table is a CSV with the columns ``batch_size``, ``lr`` and ``loss`` (other columns are ignored; repeated (B, LR)
rows are averaged). ``loss`` is a final or generalisation loss, **lower is better**, as in DeepSeek's heatmaps; it is
not the loss *drop* that the store's grids rank (higher is better there). No such data ships with this suite: the
paper does not say how its authors read DeepSeek's figures.

The pipeline is the store grids' (``surge_repro.analysis.fit``): the optimal LR of each B is the argmin of the loss over
the LRs (``fit.optimal_lr`` on minus the loss), flagged "on the edge" when it sits on the first or last LR measured at
that B (the optimum may lie beyond; an LR the table has only at other batch sizes does not make an edge). Where two or
more LRs share the lowest mean loss (within a relative ``fit.TIE_RTOL``: float noise from averaging) that B has no
optimum: it is flagged "tie" with its tied LRs and enters no fit. A table has no steps-to-target, so B_noise cannot come
from Eq 22 as in the store's grids: each law is fitted to the optima with B_noise free (``fit.fit_curve``, as every
report also does: least squares in log LR); each law gets its own B_noise and eps_max. The fit uses the optima that are
not on the edge when at least 3 are, else all of them; with fewer than 3 optima nothing is fitted, and a note says so.

Panels: (left) the loss over (B, LR) as a heatmap (lower is better) with the optimal LR per B, the three fitted laws
and B_noise; (right) the optimal LR against B with the same fits, and their residuals.

    python reports/fig7_table.py table.csv                            # reports/figures/fig7_<table>.png and .json
    python reports/fig7_table.py table.csv --title "DeepSeek LLM, 1e17 FLOPs" --unit tokens --out /tmp/fig
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

from surge_repro.analysis.fit import TIE_RTOL, fit_curve, lr_list, optimal_lr, tied_best  # noqa: E402
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


def optima(table: pd.DataFrame) -> dict:
    """The loss grid (B x LR, NaN where the table has no cell) and, per B, the argmin-loss LR (NaN for a tie), its
    edge flag, the tie flag and the tied LRs."""
    grid = table.groupby(["batch_size", "lr"])["loss"].mean().unstack("lr").sort_index().sort_index(axis=1)
    loss = grid.to_numpy(float)
    present = np.isfinite(loss)  # a cell of the table brackets an optimum; an LR of other batch sizes only does not
    best, on_edge, tie = optimal_lr(-loss, present)  # the store's argmax, on minus the loss: lower is better here
    lrs = grid.columns.to_numpy(float)
    lr_opt = np.where(best >= 0, lrs[np.clip(best, 0, None)], np.nan)
    tied = [lrs[t].tolist() if flag else [] for t, flag in zip(tied_best(-loss), tie)]
    return {"batch_sizes": grid.index.to_numpy(float), "lrs": lrs, "loss": loss, "lr_opt": lr_opt,
            "on_edge": on_edge, "tie": tie, "tied_lrs": tied,
            "loss_at_opt": np.where(best >= 0, loss[np.arange(len(best)), np.clip(best, 0, None)], np.nan)}


def fit_law(batch_sizes, lr_opt, law: str) -> dict:
    """B_noise and eps_max of one law from optimal LRs alone (``fit.fit_curve``: least squares in log LR, B_noise
    searched from 1/100 of the smallest B to 100 times the largest). rmse_log is the fit's root mean square error in
    natural log (0.1 is about 10%). ``at_bound``: B_noise sits at the end of the searched range (not determined by
    the data: for Eq 1 this means the optima do not saturate within the table)."""
    b, lr = np.asarray(batch_sizes, float), np.asarray(lr_opt, float)
    ok = np.isfinite(lr)
    b, lr = b[ok], lr[ok]
    eps, b_noise, edge = (float(v[0]) for v in fit_curve(b, lr, law, n_grid=8001, keep_edge=True))
    err = float(np.sum(np.log(lr / LAWS[law][1](b, eps, b_noise)) ** 2))
    return {"b_noise": b_noise, "eps_max": eps, "rmse_log": math.sqrt(err / len(b)), "n": int(len(b)),
            "at_bound": bool(edge)}


def analyse(table: pd.DataFrame) -> dict:
    o = optima(table)
    found = np.isfinite(o["lr_opt"])  # not a tie
    interior = found & ~o["on_edge"]
    use = interior if interior.sum() >= 3 else found
    notes = []
    if o["on_edge"].any():
        edge = [fmt_b(x, 4) for x in o["batch_sizes"][o["on_edge"]]]
        notes.append(f"optimal LR on the edge of the measured LRs at B = {edge}: the optimum may lie beyond; "
                     + ("left out of the fits" if use is interior else "kept in the fits (fewer than 3 interior)"))
    if o["tie"].any():
        ties = "; ".join(f"B = {fmt_b(b, 4)}: {lr_list(lrs)}"
                         for b, lrs in zip(o["batch_sizes"], o["tied_lrs"]) if lrs)
        notes.append(f"tie for the lowest mean loss (equal within a relative {TIE_RTOL:g}) at {ties}: no optimum "
                     f"there, so it enters no fit")
    fits = {}
    if use.sum() < 3:  # two points fit any law: a B_noise from them would be invented
        notes.append(f"fewer than 3 batch sizes have an optimum ({int(use.sum())} of {len(use)}; ties have none): "
                     f"no law is fitted")
    else:
        fits = {law: fit_law(o["batch_sizes"][use], o["lr_opt"][use], law) for law in LAWS}
    for law, f in fits.items():
        if f["at_bound"]:
            notes.append(f"{LAWS[law][0]}: B_noise at the end of the searched range: the table does not determine it")
    peak = float(o["batch_sizes"][np.nanargmax(o["lr_opt"])]) if found.any() else math.nan
    return {**o, "used_in_fit": use, "fits": fits, "observed_peak_batch_size": peak, "notes": notes}


def figure(a: dict, title: str, unit: str) -> plt.Figure:
    b, lrs = a["batch_sizes"], a["lrs"]
    log_b, log_lr = is_geometric(b), is_geometric(lrs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.4), layout="constrained",
                                      gridspec_kw={"width_ratios": [1.3, 1]})
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.85")  # reversed: bright = low loss = good
    finite = a["loss"][np.isfinite(a["loss"])]
    vmin, vmax = np.percentile(finite, [2, 98])
    mesh = left.pcolormesh(cell_edges(b, log_b), cell_edges(lrs, log_lr), np.ma.masked_invalid(a["loss"].T), cmap=cmap,
                           vmin=vmin, vmax=vmax, shading="flat")
    fig.colorbar(mesh, ax=left, label="loss (lower is better; grey: not in the table)")
    b_edges = cell_edges(b, log_b)
    xs = np.geomspace(b_edges[0] if log_b else max(b_edges[0], b.min() / 2), b_edges[-1],
                      300)
    for ax in (left, right):
        for law, f in a["fits"].items():
            label, fn = LAWS[law]
            ax.plot(xs, fn(xs, f["eps_max"], f["b_noise"]), **LAW_STYLE[law], zorder=4,
                    label=f"{label}: eps_max = {f['eps_max']:.3g}, B_noise = {fmt_b(f['b_noise'])}, "
                          f"rms log error {f['rmse_log']:.2f}")
        if a["fits"]:
            bn = a["fits"]["adam"]["b_noise"]
            ax.axvline(bn, color="red", ls="--", lw=1.6, label=f"B_noise of the Eq 2 fit = {fmt_b(bn)}")
        for x, tied in zip(b, a["tied_lrs"]):  # a tie: no optimum; its LRs as hollow squares, its column says so
            if tied:
                ax.plot([x] * len(tied), tied, "s", mfc="none", mec="tab:red", ms=7, mew=1.3, zorder=5,
                        label="LRs tied for the lowest loss (no optimum, not fitted)")
                ax.annotate("tie: no optimum", (x, 0.5), xycoords=ax.get_xaxis_transform(), xytext=(6, 0),
                            textcoords="offset points", rotation=90, ha="left", va="center", fontsize=8,
                            color="tab:red", zorder=6,  # beside the column, off its squares
                            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="tab:red", alpha=0.85))
        used, edge = a["used_in_fit"], a["on_edge"]
        if (used & ~edge).any():
            ax.plot(b[used & ~edge], a["lr_opt"][used & ~edge], "o", color="tab:red", mec="white", ms=8, zorder=5,
                    label="argmin-loss LR per B (fitted)")
        if (edge & np.isfinite(a["lr_opt"])).any():
            ax.plot(b[edge], a["lr_opt"][edge], "o", mfc="none", mec="tab:red", mew=1.6, ms=8, zorder=5,
                    label="argmin-loss LR on the edge of the table" + ("" if (used & edge).any() else " (not fitted)"))
        ax.set_xscale("log" if log_b or ax is right else "linear")
        ax.set_yscale("log" if log_lr or ax is right else "linear")
        ax.set_xlabel(f"batch size B ({unit})")
        ax.set_ylabel("learning rate")
    left.set_xlim(cell_edges(b, log_b)[[0, -1]])
    left.set_ylim(cell_edges(lrs, log_lr)[[0, -1]])
    unfit = "" if a["fits"] else "\nno law fitted: fewer than 3 batch sizes have an optimum"
    left.set_title("loss over (B, LR), argmin per B, fitted laws" + unfit, fontsize=10,
                   color="tab:red" if unfit else "black")
    right.set_title("optimal LR against batch size" + unfit, fontsize=10, color="tab:red" if unfit else "black")
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
    args = ap.parse_args(argv)
    try:
        table = read_table(args.table)
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    a = analyse(table)
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
        "optimal_lr_means": "argmin over the table's LRs of the mean loss at each batch size (fit.optimal_lr)",
        "b_noise_means": "per law, the (B_noise, eps_max) that minimise the squared log-LR error (fit.fit_curve) "
                         "(no Eq 22: a table has no steps to target)",
        "batch_sizes": a["batch_sizes"], "lrs": a["lrs"], "lr_opt": a["lr_opt"], "on_edge": a["on_edge"],
        "tie": a["tie"], "tied_lrs": a["tied_lrs"], "used_in_fit": a["used_in_fit"], "loss_at_opt": a["loss_at_opt"],
        "observed_peak_batch_size": a["observed_peak_batch_size"],
        "fits": {law: {"label": LAWS[law][0], **f} for law, f in a["fits"].items()}, "notes": a["notes"],
    }
    png.with_suffix(".json").write_text(json.dumps(plain(payload), indent=1))
    print(title)
    print(f"{'B':>10s}  optimal LR  loss there")
    for bi, lr, l_, e, tied in zip(a["batch_sizes"], a["lr_opt"], a["loss_at_opt"], a["on_edge"], a["tied_lrs"]):
        print(f"{fmt_b(bi, 4):>10s}  " + (f"none: tie of {lr_list(tied)}" if tied else
                                          f"{lr:<10.3g}  {l_:.4g}" + ("  (on the edge)" if e else "")))
    for law, f in a["fits"].items():
        print(f"{LAWS[law][0]:24s} eps_max = {f['eps_max']:.4g}  B_noise = {fmt_b(f['b_noise'], 4)}  "
              f"rms log error {f['rmse_log']:.3f} over {f['n']} B")
    for note in a["notes"]:
        print(f"note: {note}")
    print(f"figure: {png}\nnumbers: {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
