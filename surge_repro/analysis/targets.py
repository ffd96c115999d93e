"""Targets from a pilot: training-loss levels that every batch size reaches within the protocol's caps, spread over
the run, proposed from the probe-loss curves of a pilot (a few seeds of the grid) in the store.

    python -m surge_repro.analysis.targets +experiment=quickstart                    # the pilot in the store
    python -m surge_repro.analysis.targets +experiment=fig2c_cnn5_fmnist_large_bs seeds=0,1,2,3 n=5
    python -m surge_repro.analysis.targets +experiment=quickstart pilot=quickstart_deep paths.store=/tmp/store

It prints the proposal as an override (``protocol.targets=[...]``, to paste after run.py's +experiment=), a table of
it, and the same table for the experiment's current targets, naming those that some batch size cannot reach. Per
level, the table gives how many (B, LR) cells reach it and, at each B, the steps to it of the best LR there (median
over seeds; ``*``: no LR crosses it with K steps to spare, only within the last K steps before a cap; ``-``: no LR
crosses it). Arguments: Hydra overrides as run.py's (the caps and K are the composed experiment's ``protocol``), and
``n=`` (levels to propose, default 5), ``pilot=`` (the experiment in the store whose runs are the pilot; default the
experiment's own) and ``seeds=`` (a comma list of the pilot's seeds to read; default all). Exit status 0, or 2 for a
command line, store or pilot it cannot use (the message names the fix).

The curves: a finished run's probe losses at the steps that probed (metrics.jsonl), with the initial loss at step 0
and the probes its summary records around each crossing (before S, at S, at S + K): runs written before metrics.jsonl
held the probe loss have only these. Runs not final (running, failed) are left out.

The rules, and why:

- Reaching. A run reaches a level at its first probe at or below it (the protocol's S). The experiment's caps are laid
  on the pilot's curve, so a pilot run under other caps counts only the probes the experiment's run would see: steps up
  to ``max_steps``, examples before the step below ``max_examples``, and no stall (``patience`` examples without a
  new best probe loss, by 0.1%, as ``protocol.TargetTracker`` rules) before it. A pilot run under tighter caps than
  the experiment's shows less than the experiment would reach: its proposal errs shallow.
- Room for K. The protocol runs a crossing's K steps even past a cap, so it would count a crossing up to the cap. A
  proposal asks for more: S + K steps within ``max_steps`` and B (S + K) within ``max_examples``, a margin so that a
  seed crossing a little later than the pilot's seeds still crosses within the caps.
- Every seed. A (B, LR) cell reaches a level when every pilot seed of it does (a cell some of whose seeds miss the
  target enters the fit with holes), and a level is reachable at a batch size when one LR there (the best one, the
  fewest median steps) reaches it.
- The deepest level. Per run, the lowest probe loss it shows with room for K more steps; per cell, the highest of its
  seeds' (the worst seed); per batch size, the lowest over its LRs (its best LR): the deepest level that batch size
  reaches. The deepest proposed level is the highest of these over the batch sizes, rounded up, so every batch size
  reaches every proposed level. A pilot run that stopped at its own deepest target (status done) shows nothing below
  it: where the batch size that binds stopped so, the proposal cannot go deeper than the pilot's targets, and the
  output says how to run a pilot to the caps (a target below reach: every run trains until a cap or a stall).
- The shallowest level, and the spacing. With L0 the initial loss (the median over runs of the probe loss before the
  first step) and D the deepest level, the levels are L0 - i (L0 - D) / n for i = 1 .. n: evenly spaced in loss, the
  first one step below the initial loss, which it must clear by three SDs of the seeds' initial losses (its noise:
  nearer, a crossing is decided by the initialisation, not by training). Evenly in loss, not in log steps: a target
  is a loss level, one for every batch size, and the paper poses its question in loss (Fig. 3's six targets, 5.213 to
  4.633, are levels, and Eq 22's B_noise is fitted per level to see how it moves as the loss falls). Even log steps
  need a reference curve (whose steps: the best LR's at which B?), cannot be placed on a pilot whose runs recorded
  only the probes around their own targets, and crowd the shallow levels into the first few steps, where the loss
  has hardly moved from its initial value and its noise decides the crossing. Even in loss puts more of the run's
  steps between the deeper levels, where the curve flattens; the table shows the steps at each B.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from surge_repro.store import FINAL, PointDir, point_dirs, read_stream

# protocol.NEW_BEST, the rule a run's stall is judged by; restated, since the analysis side imports nothing of the
# running side (tests/test_layout.py), and a test keeps the two equal
NEW_BEST = 1e-3
NOISE_SDS = 3.0  # the shallowest level clears the initial loss by this many SDs of the seeds' initial losses


@dataclass(frozen=True)
class Caps:
    """What the experiment's runs may spend (``protocol``): a level counts where a run crosses it with room for
    ``k`` more steps within them."""

    k: int
    max_steps: float
    max_examples: float
    patience: float

    @classmethod
    def of(cls, protocol) -> "Caps":
        return cls(int(protocol.k), float(protocol.max_steps), float(protocol.max_examples),
                   float(protocol.patience))


@dataclass
class Curve:
    """One pilot run's probe losses: ``steps`` ascending from 0 (the initial loss) and ``loss`` at them. ``dense``:
    every probe the run made (metrics.jsonl), not only those its summary records around the crossings."""

    batch_size: int
    lr: float
    seed: int
    status: str
    steps: np.ndarray
    loss: np.ndarray
    dense: bool = True


def seen(curve: Curve, caps: Caps) -> np.ndarray:
    """Which of the curve's probes a run under ``caps`` would make (a prefix): at steps up to max_steps, with the
    examples before the step below max_examples, and before a stall of ``patience`` examples without a new best
    (judged on dense curves only: between a sparse curve's probes the run set bests that the curve lacks)."""
    b, best, best_examples = curve.batch_size, math.inf, 0.0
    keep = np.zeros(len(curve.steps), bool)
    for i, (s, v) in enumerate(zip(curve.steps, curve.loss)):
        stalled_before = curve.dense and s > 0 and (s - 1) * b - best_examples >= caps.patience
        if s > caps.max_steps or (s > 0 and (s - 1) * b >= caps.max_examples) or stalled_before:
            break
        keep[i] = True
        if v < best * (1 - NEW_BEST):
            best, best_examples = v, s * b
    return keep


def with_room(curve: Curve, caps: Caps) -> np.ndarray:
    """The probes seen under ``caps`` after which K more steps still fit in them (a prefix)."""
    after = curve.steps + caps.k
    return seen(curve, caps) & (after <= caps.max_steps) & (after * curve.batch_size <= caps.max_examples)


def crossings(curve: Curve, levels: Sequence[float], caps: Caps) -> tuple[np.ndarray, np.ndarray]:
    """Per level: S, the first seen probe at or below it (nan if the run under ``caps`` never crosses it), and
    whether K steps fit after S."""
    view, room = seen(curve, caps), with_room(curve, caps)
    steps, fits = np.full(len(levels), math.nan), np.zeros(len(levels), bool)
    for i, level in enumerate(levels):
        hit = np.flatnonzero(view & (curve.loss <= level))
        if len(hit):
            steps[i], fits[i] = curve.steps[hit[0]], room[hit[0]]
    return steps, fits


def deepest(curve: Curve, caps: Caps) -> float:
    """The lowest probe loss the run shows with room for K more steps: the deepest level it reaches."""
    room = with_room(curve, caps) & np.isfinite(curve.loss)
    return float(curve.loss[room].min()) if room.any() else math.inf


def cells(curves: Sequence[Curve], caps: Caps) -> pd.DataFrame:
    """Per (batch_size, lr): seeds, the deepest level every seed reaches, and whether a run of it stopped at its own
    targets (status done: the curve may go deeper than it shows)."""
    rows = pd.DataFrame([{"batch_size": c.batch_size, "lr": c.lr, "deepest": deepest(c, caps),
                          "stopped": c.status == "done"} for c in curves])
    return rows.groupby(["batch_size", "lr"]).agg(seeds=("deepest", "size"), deepest=("deepest", "max"),
                                                  stopped=("stopped", "any")).reset_index()


def deepest_by_batch(curves: Sequence[Curve], caps: Caps) -> pd.DataFrame:
    """Per batch size: the deepest level its best LR reaches with every seed, that LR, and whether that LR's runs
    stopped at their targets."""
    table = cells(curves, caps)
    best = table.loc[table.groupby("batch_size")["deepest"].idxmin()]
    return best.set_index("batch_size")[["lr", "deepest", "stopped"]]


def initial_loss(curves: Sequence[Curve]) -> tuple[float, float]:
    """(median over runs, SD over seeds) of the probe loss before the first step. A seed's runs share their initial
    weights, so its noise is the seeds' spread (0 with one seed: then unknown)."""
    first = pd.DataFrame([{"seed": c.seed, "loss": c.loss[0]} for c in curves if len(c.steps) and c.steps[0] == 0])
    if first.empty:
        raise ValueError("no pilot run records its initial loss (step 0). Fix: a pilot run by this suite's run.py")
    return float(first["loss"].median()), float(first.groupby("seed")["loss"].median().std(ddof=0))


def quantum(span: float) -> float:
    """The rounding step of the levels: a hundredth of the span's order of magnitude (0.01 for a span of 1-10)."""
    return 10.0 ** (math.floor(math.log10(span)) - 2)


def propose(curves: Sequence[Curve], caps: Caps, n: int = 5) -> list[float]:
    """``n`` levels, evenly spaced in loss from one step below the initial loss down to the deepest level every
    batch size reaches (rounded up), highest first. ValueError when they cannot clear the initial loss's noise."""
    if n < 1:
        raise ValueError(f"n must be a positive number of levels, got {n}. Fix: n=5")
    l0, sd0 = initial_loss(curves)
    by_b = deepest_by_batch(curves, caps)
    floor = float(by_b["deepest"].max())
    if not floor < l0 - NOISE_SDS * sd0:
        stuck = [f"{b:g}" for b, d in by_b["deepest"].items() if not d < l0 - NOISE_SDS * sd0]
        raise ValueError(f"at B = {', '.join(stuck)} no LR of the pilot gets below the initial loss {l0:.4g} (SD "
                         f"{sd0:.2g}) with K = {caps.k} steps to spare within the caps. Fix: widen the LR grid there "
                         f"or raise protocol.max_steps / max_examples / patience")
    q = quantum(l0 - floor)
    deep = math.ceil(floor / q - 1e-9) * q  # up: every batch size still reaches it
    levels = [round(round((l0 - i * (l0 - deep) / n) / q) * q, 12) for i in range(1, n)] + [round(deep, 12)]
    if not levels[0] < l0 - NOISE_SDS * sd0:
        fewer = max(1, int((l0 - deep) / (NOISE_SDS * sd0)) - 1)
        raise ValueError(f"the shallowest of {n} levels, {levels[0]:g}, is within {NOISE_SDS:g} SDs ({sd0:.2g}) of the "
                         f"initial loss {l0:.4g}: its crossings would be decided by the initialisation. Fix: n={fewer}")
    return levels


def reach(curves: Sequence[Curve], levels: Sequence[float], caps: Caps) -> pd.DataFrame:
    """Per (level, batch_size, lr): whether every seed crosses it (``crossed``), does so with room for K steps
    (``room``), and the median S over the seeds that cross."""
    rows = []
    for c in curves:
        for level, s, room in zip(levels, *crossings(c, levels, caps)):
            rows.append({"level": float(level), "batch_size": c.batch_size, "lr": c.lr, "steps": s, "room": room,
                         "crossed": not math.isnan(s)})
    return pd.DataFrame(rows).groupby(["level", "batch_size", "lr"]).agg(
        crossed=("crossed", "all"), room=("room", "all"), steps=("steps", "median")).reset_index()


def best_by_batch(cells_reach: pd.DataFrame) -> pd.DataFrame:
    """Per (level, batch_size): the best LR (fewest median steps among the cells that reach the level with room for
    K, else among those that cross it at all), its steps, and whether it has room (``reachable``) or crossed."""
    out = []
    for (level, b), group in cells_reach.groupby(["level", "batch_size"]):
        pool = group[group.room] if group.room.any() else group[group.crossed]
        best = pool.loc[pool.steps.idxmin()] if len(pool) else None
        out.append({"level": level, "batch_size": b, "lr": math.nan if best is None else best.lr,
                    "steps": math.nan if best is None else best.steps, "reachable": bool(group.room.any()),
                    "crossed": bool(group.crossed.any()), "points": int(group.room.sum()), "cells": len(group)})
    return pd.DataFrame(out)


def unreachable(best: pd.DataFrame) -> dict[float, list[int]]:
    """Level -> the batch sizes at which no LR reaches it with room for K steps (levels every B reaches left out)."""
    missing = best[~best.reachable]
    return {float(level): sorted(int(b) for b in group.batch_size)
            for level, group in missing.sort_values("level", ascending=False).groupby("level", sort=False)}


def table(best: pd.DataFrame) -> pd.DataFrame:
    """The printed table: a row per level (highest first), the cells that reach it, each batch size's best-LR
    steps (``*`` crossed only within K steps of a cap, ``-`` not crossed) and whether K fits everywhere."""
    def cell(r) -> str:
        if not r.crossed:
            return "-"
        return f"{r.steps:.0f}" + ("" if r.reachable else "*")

    wide = best.assign(cell=best.apply(cell, axis=1)).pivot(index="level", columns="batch_size", values="cell")
    wide.columns = [f"B={b:g}" for b in wide.columns]
    totals = best.groupby("level").agg(points=("points", "sum"), cells=("cells", "sum"))
    short = best[best.crossed & ~best.reachable].groupby("level").batch_size.apply(list)
    fits = pd.Series({lv: "yes" if lv not in short.index else "no at B = " + ", ".join(f"{b:g}" for b in short[lv])
                      for lv in wide.index})
    front = pd.DataFrame({"points": totals.points.astype(str) + "/" + totals.cells.astype(str)})
    return pd.concat([front, wide, fits.rename("K fits")], axis=1).sort_index(ascending=False).rename_axis("level")


def read_curve(folder: Path, summary: dict) -> Curve:
    """The probe-loss curve of one finished run: metrics.jsonl's probes, the initial loss and the summary's probes
    around each crossing (all that runs written before metrics.jsonl held the probe loss have)."""
    points: dict[int, float] = {}
    if summary.get("initial_loss") is not None:
        points[0] = float(summary["initial_loss"])
    for rec in summary.get("targets", []):
        if rec.get("steps") is None or rec.get("probe_loss") is None:
            continue
        s, k = int(rec["steps"]), int(summary["point"]["k"])
        points.setdefault(s, float(rec["probe_loss"]))
        if rec.get("previous_probe") is not None and rec.get("previous_probe_loss") is not None:
            points.setdefault(int(rec["previous_probe"]), float(rec["previous_probe_loss"]))
        windows = rec.get("window_losses") or ([rec["probe_loss_after_k"]] if rec.get("probe_loss_after_k") is not
                                               None else [])
        for w, value in enumerate(windows, 1):
            points.setdefault(s + w * k, float(value))
    dense = False
    for rec in read_stream(folder / "metrics.jsonl"):
        if "probe_loss" in rec:
            points[int(rec["step"])], dense = float(rec["probe_loss"]), True
    steps = np.array(sorted(points), float)
    p = summary["point"]
    return Curve(int(p["batch_size"]), float(p["lr"]), int(p["seed"]), summary["status"], steps,
                 np.array([points[int(s)] for s in steps]), dense)


def read_pilot(store: str | Path, experiment: str, seeds: Sequence[int] | None = None) -> list[Curve]:
    """The curves of an experiment's finished runs (done, capped, diverged) in the store, of ``seeds`` if given."""
    curves = []
    for folder in point_dirs(store, experiment):
        summary = PointDir(store, experiment, folder.name).summary()
        if summary is None or summary["status"] not in FINAL:
            continue
        if seeds is None or int(summary["point"]["seed"]) in seeds:
            curves.append(read_curve(folder, summary))
    return curves


USAGE = ("usage: python -m surge_repro.analysis.targets +experiment=<name> [paths.store=<dir>] [pilot=<experiment in "
         "the store>] [seeds=0,1,2] [n=5] [overrides ...]")
OWN = ("n", "pilot", "seeds")  # this tool's own arguments; the rest are Hydra overrides


def report(curves: Sequence[Curve], caps: Caps, current: Sequence[float], n: int, pilot: str,
           experiment: str) -> str:
    """What the command prints: the pilot, the proposal as an override, its table, the current targets' table and
    which of them some batch size cannot reach."""
    l0, sd0 = initial_loss(curves)
    by_b = deepest_by_batch(curves, caps)
    levels = propose(curves, caps, n)
    seeds = sorted({c.seed for c in curves})
    binding = by_b["deepest"].idxmax()
    lines = [f"pilot {pilot}: {len(curves)} runs, {by_b.shape[0]} batch sizes x {len({c.lr for c in curves})} LRs, "
             f"seeds {', '.join(map(str, seeds))}; caps: max_steps {caps.max_steps:g}, max_examples "
             f"{caps.max_examples:g}, patience {caps.patience:g}, K = {caps.k}",
             f"initial loss {l0:.4g} (SD {sd0:.2g} over {len(seeds)} seed{'s' * (len(seeds) > 1)}); deepest level each "
             f"B reaches (best LR, every seed, K to spare): "
             + ", ".join(f"B={b:g}: {d:.4g}" for b, d in by_b["deepest"].items()),
             "", f"protocol.targets=[{','.join(f'{v:g}' for v in levels)}]", ""]
    if by_b.loc[binding, "stopped"]:
        lines.append(f"note: at B = {binding:g}, which sets the deepest level, the pilot's runs stopped at their own "
                     f"deepest target: it may go deeper. To see how deep, train a pilot to the caps, e.g. python "
                     f"run.py -m +experiment={experiment} rounds=1 'protocol.targets=[0.001]' "
                     f"experiment_name={experiment}_deep, then pilot={experiment}_deep\n")
    sparse = sum(not c.dense for c in curves)
    if sparse:
        lines.append(f"note: {sparse} of the runs predate probe losses in metrics.jsonl: their curves hold only the "
                     f"probes around their own targets, so their steps to a level in between are the next such "
                     f"probe's (an upper bound)\n")
    best = best_by_batch(reach(curves, levels, caps))
    lines += ["proposed targets: cells (B, LR) that reach each, and each B's best-LR median steps to it",
              table(best).to_string(), ""]
    best = best_by_batch(reach(curves, sorted(set(map(float, current)), reverse=True), caps))
    lines += [f"current targets {list(current)}:", table(best).to_string()]
    missing = unreachable(best)
    lines.append("unreachable (no LR crosses it with every seed and K steps to spare within the caps): "
                 + "; ".join(f"{lv:g} at B = {', '.join(map(str, bs))}" for lv, bs in missing.items())
                 if missing else "every current target is reachable at every batch size")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from surge_repro.config import CONF_DIR, compose, overrides_help, print_cfg, shell_completion, without_flags

    argv = list(sys.argv[1:] if argv is None else argv)
    if overrides_help(argv, "python -m surge_repro.analysis.targets", __doc__) or shell_completion(argv, __file__):
        return 0
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] in OWN and "=" in a}

    def fail(message: str) -> int:
        print(f"error: {message}\n{USAGE}", file=sys.stderr)
        return 2

    try:
        n = int(own.get("n", 5))
        seeds = [int(s) for s in own["seeds"].split(",")] if "seeds" in own else None
    except ValueError:
        return fail(f"n= takes a whole number and seeds= a comma list of them, got {own}. Fix: n=5 seeds=0,1,2,3")
    try:
        cfg = compose([a for a in without_flags(argv) if a.split("=", 1)[0] not in OWN])
    except (HydraException, OmegaConfBaseException) as err:
        names = ", ".join(sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
        return fail(f"{err}\nFix: +experiment=<one of {names}>; the store is paths.store=<dir>")
    if print_cfg(argv, cfg):
        return 0
    store, pilot = Path(str(cfg.paths.store)), own.get("pilot", cfg.experiment_name)
    if not store.is_dir():
        return fail(f"no store at {store}. Fix: paths.store=<the folder run.py wrote the pilot into>")
    curves = read_pilot(store, pilot, seeds)
    if not curves:
        held = sorted(p.name for p in store.iterdir() if p.is_dir() and p.name[0] not in "._")
        return fail(f"no finished pilot runs of {pilot}{f' with seeds {seeds}' if seeds else ''} in {store} (it "
                    f"holds: {', '.join(held) or 'no experiments'}). Fix: run a pilot, python run.py -m "
                    f"+experiment={cfg.experiment_name} rounds=1 paths.store={store}, or name one: pilot=<experiment>")
    try:
        print(report(curves, Caps.of(cfg.protocol), list(cfg.protocol.targets), n, pilot, cfg.experiment_name))
    except ValueError as err:
        return fail(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
