"""Synthetic grids drawn from the paper's laws with known parameters, as tidy tables and as stores on disk.

The loss drop of a run is D * (2r - r^2) + noise with r = lr / eps_opt(B): a parabola in the LR whose top is the law's
eps_opt(B). Its height D is ``drop_scale`` at every B, or, with ``drop_b_noise``, Theorem 5's
D(B) = drop_scale / (1 + drop_b_noise / B) (Eq 18). Steps to target are S_min * (1 + B_noise / B) at the optimum
(Eq 20 with E = B * S) and grow away from it, with multiplicative noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from surge_repro.analysis.theory import LAWS
from surge_repro.store import COLUMNS


def table(*, law="adam", eps_max=1e-3, b_noise=20.0, s_min=100.0, batch_sizes=None, lrs=None, seeds=4,
          drop_scale=0.1, drop_noise=0.01, steps_noise=0.03, target=1.0, rng=0, drop_b_noise=None) -> pd.DataFrame:
    rng = np.random.default_rng(rng)
    batch_sizes = np.geomspace(1, 400, 12).round() if batch_sizes is None else np.asarray(batch_sizes, float)
    lrs = np.geomspace(1e-5, 1e-2, 61) if lrs is None else np.asarray(lrs, float)
    rows = []
    for b in batch_sizes:
        eps = float(LAWS[law][1](b, eps_max, b_noise))
        top = drop_scale if drop_b_noise is None else drop_scale / (1 + drop_b_noise / b)  # Eq 18
        for lr in lrs:
            r = lr / eps
            for seed in range(seeds):
                s = s_min * (1 + b_noise / b) * (1 + 0.5 * np.log(r) ** 2) * np.exp(steps_noise * rng.normal())
                rows.append({
                    "experiment": "synthetic", "signature": f"b{b:g}-lr{lr:.6g}-s{seed}", "status": "done",
                    "task": "synthetic", "model": "law", "optimizer": law, "batch_size": int(b),
                    "batch_unit": "examples", "lr": float(lr), "beta1": 0.9, "beta2": 0.999, "seed": seed, "k": 10,
                    "target_loss": target, "reached": True, "steps_to_target": s, "examples_to_target": s * b,
                    "loss_at_target": target,
                    "loss_drop_after_k": top * (2 * r - r * r) + drop_noise * rng.normal(),
                })
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    frame["loss_after_k"] = frame["loss_at_target"] - frame["loss_drop_after_k"]
    frame["windows"], frame["loss_drop_mean"] = 1, frame["loss_drop_after_k"]
    return frame


def write_store(store: Path, experiment: str, frame: pd.DataFrame) -> None:
    """Write the table as the store would hold it: one point directory with a summary.json per run."""
    for (sig, b, lr, seed), rows in frame.groupby(["signature", "batch_size", "lr", "seed"]):
        d = Path(store) / experiment / sig
        d.mkdir(parents=True, exist_ok=True)
        targets = [{"target": r.target_loss, "steps": r.steps_to_target, "examples": r.examples_to_target,
                    "probe_loss": r.loss_at_target, "probe_loss_after_k": r.loss_after_k,
                    "loss_drop": r.loss_drop_after_k, "estimate": r.loss_at_target,
                    "estimate_after_k": r.loss_after_k, "reached": True, "measured": True}
                   for r in rows.itertuples()]
        summary = {"status": "done", "experiment": experiment, "signature": sig,
                   "point": {"task": "synthetic", "model": "law", "optimizer": "adam", "batch_size": int(b),
                             "batch_unit": "examples", "lr": float(lr), "beta1": 0.9, "beta2": 0.999,
                             "seed": int(seed), "k": 10},
                   "targets": targets, "steps": int(max(t["steps"] for t in targets)) + 10,
                   "examples_seen": 0, "wall_s": 0.1, "provenance": {"git_sha": "0" * 40, "git_dirty": False}}
        (d / "summary.json").write_text(json.dumps(summary))
