"""A seed budget: from a pilot (a few seeds of a grid), how many seeds each batch size needs to resolve its optimum.

    python -m surge_repro.analysis.budget +experiment=quickstart              # the pilot in the store, its plan
    python -m surge_repro.analysis.budget +experiment=fig2b_cnn5_fmnist_small_bs report.confidence=0.9 \
        report.criterion=steps
    python -m surge_repro.analysis.budget +experiment=X budget_for=fig2b_cnn5_fmnist_small_bs   # price another grid

Method (``seeds_needed``): the pilot's runs are taken as the distribution of a run's outcome at each (B, LR). For a
candidate number of seeds n, ``n_sim`` follow-ups are drawn by resampling n of the pilot's seeds with replacement
(the same seeds across a batch size's LRs, as the fit's bootstrap pairs them), each follow-up's optimum is found, and
the share within one grid step of the pilot's optimum is the chance that n seeds resolve it. The budget of a batch
size is the smallest n (doubling from 2) whose chance reaches ``confidence``. The pilot's means stand in for the
truth: a pilot too small to rank the LRs at all gives a budget that is itself noisy, and the plan says how many
seeds it rests on. A batch size whose pilot optimum sits on the LR grid's edge is flagged: there more seeds only
resolve the edge, and the grid needs widening. Cost: the device time of the pilot's points at each B, times points,
on the pilot's device (a packed point costs its share of its pack's time, so the pilot's packing carries over).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import pandas as pd

from surge_repro.analysis.fit import CRITERIA, Grid, optima

CANDIDATES = tuple(2 ** k for k in range(1, 13))  # 2 .. 4096 seeds


def resolve_chance(grid: Grid, criterion: str, n: int, n_sim: int = 400, seed: int = 0) -> np.ndarray:
    """Per batch size, the chance that n seeds put the optimum within one grid step of the pilot's."""
    pilot_best = optima(grid, criterion)["best"][0]
    rng = np.random.default_rng(seed)
    best = optima(grid, criterion, rng.integers(0, len(grid.seeds), size=(n_sim, n)))["best"]  # (sim, B)
    near = (np.abs(best - pilot_best[None, :]) <= 1) & (best >= 0)
    return np.where(pilot_best >= 0, near.mean(axis=0), np.nan)


def seeds_needed(grid: Grid, criterion: str = "drop", confidence: float = 0.95, n_sim: int = 400,
                 candidates: Sequence[int] = CANDIDATES) -> list[int | None]:
    """Per batch size, the smallest candidate n whose chance to resolve the optimum reaches ``confidence``
    (None: more than the largest candidate, or no pilot optimum: no LR measured, none reached the target, a
    tie)."""
    needed: list[int | None] = [None] * len(grid.batch_sizes)
    for n in candidates:
        chance = resolve_chance(grid, criterion, n, n_sim)
        for i, c in enumerate(chance):
            if needed[i] is None and np.isfinite(c) and c >= confidence:
                needed[i] = n
        if all(v is not None or not np.isfinite(c) for v, c in zip(needed, chance)):
            break
    return needed


def point_seconds(table: pd.DataFrame) -> pd.Series:
    """Per batch size, the device time one point cost: a pack's time (its last point's wall time) shared by its
    points; a point trained alone, its own wall time."""
    runs = table.drop_duplicates("signature")
    packs = runs.groupby(["batch_size", "pack_id"]).agg(seconds=("wall_s", "max"), points=("signature", "size"))
    totals = packs.groupby("batch_size").sum()
    return totals.seconds / totals.points


def plan(table: pd.DataFrame, criterion: str = "drop", confidence: float = 0.95, target: float | None = None,
         grid_batch_sizes: Sequence[float] | None = None, n_lrs: int | None = None) -> pd.DataFrame:
    """The plan for one target (the lowest unless given): per batch size, the pilot's seeds, the seeds needed, the
    points that makes (times ``n_lrs``, the pilot's LR count by default) and their cost in core-hours from the
    pilot's wall times. ``grid_batch_sizes`` prices another grid's batch sizes by the nearest pilot B's budget."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    target = float(table["target_loss"].min()) if target is None else float(target)
    grid = Grid.from_table(table, target)
    needed = seeds_needed(grid, criterion, confidence)
    on_edge = optima(grid, criterion)["on_edge"][0]
    wall = point_seconds(table)
    n_lr = n_lrs or len(grid.lrs)
    rows = []
    sizes = grid.batch_sizes if grid_batch_sizes is None else np.asarray(grid_batch_sizes, float)
    for b in sizes:
        i = int(np.argmin(np.abs(np.log(grid.batch_sizes) - np.log(b))))  # the pilot's nearest batch size
        n = needed[i]
        seconds = float(wall.iloc[int(np.argmin(np.abs(np.log(wall.index.to_numpy(float)) - np.log(b))))])
        rows.append({"batch_size": float(b), "pilot_batch_size": float(grid.batch_sizes[i]),
                     "pilot_seeds": len(grid.seeds), "seeds_needed": n,
                     "points": None if n is None else n * n_lr,
                     "core_hours": None if n is None else n * n_lr * seconds / 3600,
                     "note": "optimum on the LR grid's edge: widen the grid" if on_edge[i] else ""})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from surge_repro.config import compose, overrides_help, print_cfg, shell_completion, without_flags
    from surge_repro.store import load_grid

    argv = list(sys.argv[1:] if argv is None else argv)
    if overrides_help(argv, "python -m surge_repro.analysis.budget", __doc__) or shell_completion(argv, __file__):
        return 0
    other = [a.split("=", 1)[1] for a in argv if a.startswith("budget_for=")]
    cfg = compose([a for a in without_flags(argv) if not a.startswith("budget_for=")])
    if print_cfg(argv, cfg):
        return 0
    table = load_grid(cfg.paths.store, cfg.experiment_name)
    if table.empty:
        print(f"no finished pilot runs of {cfg.experiment_name} in {cfg.paths.store}. Run a pilot first: "
              f"python run.py -m +experiment={cfg.experiment_name} rounds=4")
        return 1
    criterion, confidence = str(cfg.report.criterion), float(cfg.report.confidence)
    sizes, n_lrs, name = None, None, cfg.experiment_name
    if other:
        target_cfg = compose([f"+experiment={other[0]}"], hydra_node=True)
        params = target_cfg.hydra.sweeper.params
        sizes = [float(b) for b in str(params["batch"]).split(",")]
        n_lrs, name = len(str(params["optimizer.lr"]).split(",")), other[0]
    for target in sorted(table["target_loss"].unique(), reverse=True):
        frame = plan(table, criterion, confidence, target, sizes, n_lrs)
        print(f"\nseed budget for {name} at target {target:g} from the pilot {cfg.experiment_name} "
              f"({frame.pilot_seeds.iloc[0]} seeds): seeds for the optimum within one grid step with "
              f"{confidence:.0%} confidence, criterion {criterion}")
        shown = frame.astype(object).where(frame.notna(), "-")
        shown.loc[frame.seeds_needed.isna(), "seeds_needed"] = "> 4096"
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        known = frame.dropna(subset=["points"])
        beyond = len(frame) - len(known)
        print(f"total: {int(known.points.sum())} points, {known.core_hours.sum():.3g} core-hours on the pilot's "
              f"device, packed as the pilot was"
              + (f"; {beyond} batch size(s) need more than {CANDIDATES[-1]} seeds" if beyond else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

