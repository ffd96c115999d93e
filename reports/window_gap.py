"""Where the K-step window starts, and what it costs: two stores of one experiment side by side.

Before issue 14 the probes that decide a crossing were sparse up to it, so a run's window started below the target
by however far the loss fell between two probes; fast LRs fell further, and their drops were measured lower on the
loss curve (``surge_repro/run/protocol.py`` says how probes now close in). This script reads the tidy tables of two
stores of the same experiment and prints, per (target, B, LR): the mean start gap (target - probe loss at S), the
share of crossings whose step before was probed (S the first step at or below the target), the per-run SD of the
paper's drop and, where measured, of the drop from the target's level; then the correlation of gap and drop within
each batch size, the probes and steps per run, and the compute each store took (the sum over packs of their longest
run's wall time: compare it only between stores run on equally loaded machines; the probe count does not depend on
the load).

    python reports/window_gap.py BEFORE_STORE AFTER_STORE [EXPERIMENT]    # EXPERIMENT defaults to quickstart

Writes reports/figures/window_gap_<experiment>.json (reports/examples/ holds the quickstart's, from the README).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from surge_repro.store import load_grid


def per_point(table: pd.DataFrame) -> pd.DataFrame:
    """Per (target, B, LR): runs that measured a drop, mean start gap, exact share, SDs of the two drops."""
    rows = table[table["reached"] & np.isfinite(table["loss_drop_after_k"])]
    exact = rows["exact_crossing"].map({True: 1.0, False: 0.0}).astype(float)
    at = rows["loss_drop_at_target"].where(np.isfinite(rows["loss_drop_at_target"]))
    frame = rows.assign(exact=exact, at=at)
    return frame.groupby(["target_loss", "batch_size", "lr"]).agg(
        runs=("seed", "size"), gap=("start_gap", "mean"), gap_max=("start_gap", "max"), exact=("exact", "mean"),
        drop_sd=("loss_drop_after_k", "std"), drop_at_target_sd=("at", "std"))


def gap_drop_correlation(table: pd.DataFrame, drop: str = "loss_drop_after_k") -> pd.Series:
    """Per (target, B): the correlation across LRs and seeds of the start gap and a drop."""
    rows = table[table["reached"] & np.isfinite(table[drop])]
    if rows.empty:  # a store from before the drop was measured
        return pd.Series(dtype=float)
    return rows.groupby(["target_loss", "batch_size"]).apply(
        lambda g: g["start_gap"].corr(g[drop]) if len(g) > 2 else np.nan, include_groups=False)


def _per_run(table: pd.DataFrame, column: str) -> float:
    return float(table.drop_duplicates("signature")[column].mean())


def compute_s(table: pd.DataFrame) -> float:
    """Seconds of training the store holds: each pack's longest run (a pack trains its points together)."""
    runs = table.drop_duplicates("signature")
    return float(runs.groupby("pack_id")["wall_s"].max().sum())


def compare(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    b, a = per_point(before), per_point(after)
    joined = b.join(a, lsuffix="_before", rsuffix="_after", how="outer").reset_index()
    cb, ca = gap_drop_correlation(before), gap_drop_correlation(after)
    c_at = gap_drop_correlation(after, "loss_drop_at_target")
    corr = pd.DataFrame({"before": cb, "after": ca, "after_from_target": c_at}).reset_index()
    summary = {
        "mean_gap": {"before": float(before["start_gap"].mean()), "after": float(after["start_gap"].mean())},
        "max_gap": {"before": float(before["start_gap"].max()), "after": float(after["start_gap"].max())},
        "exact_share_after": float(after["exact_crossing"].dropna().astype(float).mean()),
        "mean_drop_sd": {"before": float(b["drop_sd"].mean()), "after": float(a["drop_sd"].mean()),
                         "after_from_target": float(a["drop_at_target_sd"].mean())},
        "gap_drop_correlation_range": {
            "before": [float(cb.min()), float(cb.max())], "after": [float(ca.min()), float(ca.max())],
            "after_from_target": [float(c_at.min()), float(c_at.max())]},
        "probes_per_run": {"before": _per_run(before, "probes"), "after": _per_run(after, "probes")},
        "steps_per_run": {"before": _per_run(before, "steps"), "after": _per_run(after, "steps")},
        "compute_s": {"before": compute_s(before), "after": compute_s(after)},
        "runs": {"before": int(before["signature"].nunique()), "after": int(after["signature"].nunique())},
    }
    summary["compute_ratio"] = summary["compute_s"]["after"] / summary["compute_s"]["before"]
    return {"summary": summary, "points": joined.to_dict("records"), "correlation": corr.to_dict("records")}


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: python reports/window_gap.py <store before> <store after> [experiment]\n\n{__doc__.strip()}")
        return 0
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    experiment = argv[2] if len(argv) == 3 else "quickstart"
    before, after = (load_grid(store, experiment) for store in argv[:2])
    for name, table in (("before", before), ("after", after)):
        if table.empty:
            print(f"{argv[0 if name == 'before' else 1]}/{experiment} holds no finished runs: run the experiment "
                  f"into it first", file=sys.stderr)
            return 2
    result = compare(before, after)
    with pd.option_context("display.width", 160, "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        print(pd.DataFrame(result["points"]).to_string(index=False))
        print(pd.DataFrame(result["correlation"]).to_string(index=False))
    print(json.dumps(result["summary"], indent=1))
    out = Path("reports/figures") / f"window_gap_{experiment}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
