"""The paper's estimators, as pure functions of the tidy table (``store.load_grid``), with bootstrap intervals.

For one target (paper sections 3.2-3.3):

1. The optimal LR of each batch size: the LR whose mean score over seeds is largest (``optimal_lr``). The score is
   the criterion's (``CRITERIA``): the paper's loss drop over the K extra steps (``drop``), the mean drop per window
   over ``protocol.windows`` consecutive windows (``drop_mean``), or the speed 1/S to the target (``steps``: the LR
   that reaches the target in the fewest steps; a run that never reaches it has speed 0).
   There is none where no run reached the target (every LR diverged or was too slow: a speed of 0 everywhere is no
   optimum), or where two or more LRs share the best mean (a tie, within ``TIE_RTOL``); ``TargetFit.no_optimum``
   says which. It is flagged ``on_edge`` when nothing was measured beyond it at that batch size (no run of a larger
   or of a smaller LR): the true optimum may lie beyond. A run that exists there but diverged or never reached the
   target brackets it, since it is worse; an LR of the grid that was not run at that B (a grid that shifts with B)
   does not make an edge.
2. S and E at that LR (mean over seeds), and Eq 22: 1/S = -B_noise * (1/E) + 1/S_min, a least-squares line of 1/S on
   1/E whose slope is -B_noise and intercept 1/S_min (``fit_b_noise``).
3. eps_max of each law by Eq 23 / Eq 24: the mean over the grid's batch sizes of eps_opt(B) divided by the law's shape
   at the fitted B_noise (``fit_eps_max``). B_noise is shared; only eps_max differs between the three curves.
4. Not in the paper: each law fitted to the optimal LRs alone, B_noise free (``fit_curve``: least squares in log LR).
   Eq 2's B_noise is then the peak the curve's shape implies, Eq 1's the knee: a B_noise that needs no S-E
   trade-off, so it exists where Eq 22 has none (the ground truth, whose runs start at the target: S = 0), and
   a check on Eq 22 where both exist (Theorem 5 says they are the same number).
5. Not in the paper: McCandlish's B_simple, measured during training (``surge_repro.run.noise_scale``) and recorded at
   each crossing: the median over the target's runs, its interval from the same bootstrap over seeds.
6. Theorem 5 on the same runs (``_theorem5``): Eq 18, dL_opt(B) = dL_max / (1 + B_noise / B), with the largest
   mean loss drop over LR of each B as dL_opt(B), cross-fitted over two halves of the seeds to undo the selection's
   upward bias (``max_drop``). Its B_noise is Eq 22's, so Eq 18 is drawn with it (dL_max by least squares,
   ``fit_dl_max``) and also fitted alone (``fit_eq18``): a B_noise from the drops, independent of S and E, with a
   verdict on whether the two agree within their intervals.

Across targets (``eq21``): Eq 21, B_noise = B_* / L^(1/alpha_B) (Kaplan et al.'s critical batch size), fitted by
least squares in log-log to each target's Eq 22 B_noise (``fit_eq21``; a target with B_noise <= 0 is left out, and
the result says why), with intervals from the same bootstrap replicates, paired across targets.

``fit_target`` does all of it on the data, then again on ``n_boot`` bootstrap replicates that resample the seeds (the
paper's rounds) with replacement, the same seeds for every cell, which keeps the pairing of a seed's runs across the
grid. Intervals are the 2.5 and 97.5 percentiles of the replicates. n seeds have only C(2n - 1, n) distinct
resamples (``distinct_resamples``: 10 for 3 seeds), and a 2.5% tail needs 40: below ``MIN_SEEDS`` = 5 seeds (126
resamples) no interval is given (NaN) and ``TargetFit.interval`` says so; ``identify`` then claims nothing that rests
on one. A continuous estimate that lies on or outside its own interval (skewed replicates) is named in
``TargetFit.off_interval`` and the notes. Everything comes back with its n, and with the bootstrap distribution of
each optimum: ``identify`` turns it into verdicts (resolved, on the edge, not identifiable, tie, not reached, too few
seeds) and ``budget`` into the seeds a grid needs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from surge_repro.analysis.theory import LAWS, law_shape

CI = (2.5, 97.5)
WORKLOAD = ["task", "model", "optimizer", "beta1", "beta2", "k"]  # what must be the same across a fitted grid
CRITERIA = {
    "drop": "argmax over LR of the mean loss drop over the K steps after the target (the paper, section 3.1)",
    "drop_at_target": "argmax over LR of the mean drop over K steps of a window that starts exactly at the target's "
                      "level (interpolated between the windows either side of the crossing: protocol.py)",
    "drop_mean": "argmax over LR of the mean drop per K-step window over protocol.windows consecutive windows",
    "steps": "argmax over LR of the mean speed 1/S to the target, 0 for runs that never reach it: the LR that "
             "reaches the target in the fewest steps",
}
TIE_RTOL = 1e-9  # means this close are one value: averaging the same runs in another order moves their last digits
NO_OPTIMUM = {  # why a batch size has no optimal LR (TargetFit.no_optimum)
    "no runs": "no run at this batch size",
    "not reached": "no run reached the target",
    "not measured": "no run that reached the target has a score (it diverged inside the drop window, or stopped "
                    "before the window's end)",
    "tie": "two or more LRs share the best mean score",
}


def distinct_resamples(n_seeds: int) -> int:
    """How many different resamples (multisets) of n seeds drawn with replacement exist: C(2n - 1, n)."""
    return math.comb(2 * n_seeds - 1, n_seeds) if n_seeds > 0 else 0


# an interval needs a 2.5% tail of at least one distinct resample: 40 of them, so 5 seeds (126; 4 seeds give 35)
MIN_SEEDS = next(n for n in range(1, 100) if distinct_resamples(n) >= round(100 / CI[0]))
LATTICE_NOTE = ("the optimal LRs and the observed peak B live on the grid's lattices: their intervals' bounds are "
                "lattice points, so an estimate on its bound shows the grid's resolution, not skewed replicates")


@dataclass
class Grid:
    """One target's runs as arrays over (batch size, LR, seed); NaN where a run is missing or did not measure."""

    target: float
    batch_sizes: np.ndarray
    lrs: np.ndarray
    seeds: np.ndarray
    drop: np.ndarray  # loss drop after K steps; -inf where the run diverged inside the window
    steps: np.ndarray  # S; NaN where the target was not reached
    n_runs: int
    drop_mean: np.ndarray | None = None  # mean drop per window (protocol.windows); as drop for one window
    present: np.ndarray | None = None  # True where the run exists (it may not have reached the target)
    b_simple: np.ndarray | None = None  # McCandlish's B_simple measured at the crossing (NaN: not measured)
    drop_at_target: np.ndarray | None = None  # the drop of the window that starts at the target's level

    def score(self, criterion: str) -> np.ndarray:
        """What the optimal LR maximises, per run (NaN where a run is missing)."""
        if criterion == "drop":
            return self.drop
        if criterion == "drop_at_target":
            if self.drop_at_target is None:
                raise ValueError("criterion drop_at_target needs the table's loss_drop_at_target column (runs from "
                                 "before it was measured do not have it): fit with criterion=drop, or rerun them")
            return self.drop_at_target
        if criterion == "drop_mean":
            return self.drop if self.drop_mean is None else self.drop_mean
        if criterion == "steps":  # a run that exists but never reached the target has speed 0
            with np.errstate(divide="ignore"):  # S = 0, reached before training: infinite speed
                speed = 1 / self.steps
            return np.where(np.isfinite(self.steps), speed, np.where(self.exists(), 0.0, np.nan))
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")

    def exists(self) -> np.ndarray:
        """True where a run exists, whether or not it reached the target."""
        return np.isfinite(self.drop) | np.isfinite(self.steps) if self.present is None else self.present

    def reached(self) -> np.ndarray:
        """True where a run reached the target (a drop, even a diverged -inf one, is measured after it)."""
        return np.isfinite(self.steps) | ~np.isnan(self.drop)

    @classmethod
    def from_table(cls, table: pd.DataFrame, target: float, lrs: np.ndarray | None = None) -> "Grid":
        rows = table[np.isclose(table["target_loss"], target)]
        bs = np.sort(rows["batch_size"].unique()).astype(float)
        lr_axis = np.sort(np.unique(np.round(rows["lr"].to_numpy(float), 12))) if lrs is None else np.asarray(lrs)
        seeds = np.sort(rows["seed"].unique()).astype(int)
        shape = (len(bs), len(lr_axis), len(seeds))
        drop, steps, drop_mean = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
        present = np.zeros(shape, bool)
        b_i = np.searchsorted(bs, rows["batch_size"].to_numpy(float))
        l_i = np.searchsorted(lr_axis, np.round(rows["lr"].to_numpy(float), 12))
        s_i = np.searchsorted(seeds, rows["seed"].to_numpy(int))
        drop[b_i, l_i, s_i] = rows["loss_drop_after_k"].to_numpy(float)
        steps[b_i, l_i, s_i] = rows["steps_to_target"].to_numpy(float)
        present[b_i, l_i, s_i] = True
        mean_col = rows["loss_drop_mean"] if "loss_drop_mean" in rows else rows["loss_drop_after_k"]
        drop_mean[b_i, l_i, s_i] = mean_col.to_numpy(float)
        b_simple = np.full(shape, np.nan)
        if "b_simple" in rows:
            b_simple[b_i, l_i, s_i] = rows["b_simple"].to_numpy(float)
        drop_at = None
        if "loss_drop_at_target" in rows:
            drop_at = np.full(shape, np.nan)
            drop_at[b_i, l_i, s_i] = rows["loss_drop_at_target"].to_numpy(float)
        return cls(float(target), bs, lr_axis, seeds, drop, steps, len(rows), drop_mean, present, b_simple, drop_at)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN, silently
        return np.nanmean(a, axis=axis)


def tied_best(mean_score: np.ndarray) -> np.ndarray:
    """True at every LR whose mean score is the best of its batch size, within ``TIE_RTOL`` (..., n_batch, n_lr).
    NaN (no score) and -inf (every run diverged) are never the best; +inf (S = 0: reached before training) is."""
    score = np.asarray(mean_score, float)
    candidate = score > -np.inf  # False for NaN too
    top = np.max(np.where(candidate, score, -np.inf), axis=-1, keepdims=True)
    return candidate & np.isclose(score, top, rtol=TIE_RTOL, atol=0.0)


def measured_beyond(best: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether anything was measured at a smaller and at a larger LR than ``best`` (..., n_batch)."""
    lr_index = np.arange(measured.shape[-1])
    below = (measured & (lr_index < best[..., None])).any(axis=-1)
    above = (measured & (lr_index > best[..., None])).any(axis=-1)
    return below, above


def optimal_lr(mean_score: np.ndarray, measured: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the best LR per batch size, the on-edge flag and the tie flag; ``mean_score``: (..., n_batch, n_lr).

    The best LR is -1 where no LR has a score (NaN, or -inf: all diverged) or where two or more share the best mean
    (``tied_best``; the tie flag says so). On edge: nothing was measured beyond it on one side at that batch size.
    ``measured`` (same shape): True where a run exists, scored or not (diverged, never reached the target), so a
    worse run beyond the optimum brackets it; by default, where the mean is finite (for callers with means only).
    """
    score = np.asarray(mean_score, float)
    measured = np.isfinite(score) if measured is None else np.asarray(measured, bool)
    top = tied_best(score)
    n_top = top.sum(axis=-1)
    best = np.where(n_top == 1, np.argmax(top, axis=-1), -1)
    below, above = measured_beyond(best, measured)
    return best, (best >= 0) & ~(below & above), n_top > 1


def optima(grid: Grid, criterion: str, seed_idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The optimal LR of each batch size for each row of ``seed_idx`` (replicates x seeds, indices into grid.seeds;
    by default one row of every seed): the criterion's mean over those seeds (``mean``, (rep, B, LR)), ``optimal_lr``'s
    ``best``, ``on_edge`` and ``tie``, and the masks behind them, ``reached`` and ``measured`` (rep, B, LR).

    Only an LR where one of the seeds' runs reached the target can be the optimum: with the ``steps`` criterion a
    speed of 0 at every LR is no optimum. An LR where one of them exists at all brackets an optimum.
    """
    seed_idx = np.arange(len(grid.seeds))[None, :] if seed_idx is None else np.asarray(seed_idx)

    def per_rep(a: np.ndarray) -> np.ndarray:  # (B, LR, seeds) -> (rep, B, LR, the row's seeds)
        return a[:, :, seed_idx].transpose(2, 0, 1, 3)

    mean = _nanmean(per_rep(grid.score(criterion)), axis=-1)
    reached, measured = per_rep(grid.reached()).any(axis=-1), per_rep(grid.exists()).any(axis=-1)
    best, on_edge, tie = optimal_lr(np.where(reached, mean, np.nan), measured)
    return {"mean": mean, "best": best, "on_edge": on_edge, "tie": tie, "reached": reached, "measured": measured}


def lr_list(lrs, most: int = 4) -> str:
    """LRs in words: all of them up to ``most``, else how many and their range (a tie of a whole grid at S = 0)."""
    lrs = [float(x) for x in lrs]
    if len(lrs) > most:
        return f"{len(lrs)} LRs from {lrs[0]:.3g} to {lrs[-1]:.3g}"
    return "LRs " + ", ".join(f"{x:.3g}" for x in lrs)


def interval_position(value: float, ci) -> str | None:
    """Where an estimate lies against its own interval: "inside", "on" a bound (within ``TIE_RTOL``), "outside";
    None where either is not a number."""
    lo, hi = (float(x) for x in ci)
    if not all(math.isfinite(x) for x in (value, lo, hi)):
        return None
    if any(math.isclose(value, x, rel_tol=TIE_RTOL) for x in (lo, hi)):
        return "on"
    return "inside" if lo < value < hi else "outside"


def fit_b_noise(steps, examples) -> tuple[float, float]:
    """Eq 22 by least squares: 1/S = -B_noise / E + 1/S_min. Returns (B_noise, S_min); NaN with < 2 finite points."""
    s, e = np.asarray(steps, float), np.asarray(examples, float)
    ok = np.isfinite(s) & np.isfinite(e) & (s > 0) & (e > 0)
    if ok.sum() < 2 or np.ptp(1 / e[ok]) == 0:
        return math.nan, math.nan
    slope, intercept = np.polyfit(1 / e[ok], 1 / s[ok], 1)
    return float(-slope), float(1 / intercept) if intercept > 0 else math.nan


def fit_eps_max(batch_sizes, lr_opt, b_noise: float, law: str) -> float:
    """Eq 23 (law ``adam``) or Eq 24 (``sgd_alpha1``, ``sgd_alpha0.5``): mean over B of eps_opt(B) / shape(B)."""
    b, lr = np.asarray(batch_sizes, float), np.asarray(lr_opt, float)
    ok = np.isfinite(lr)
    if not (b_noise > 0) or not ok.any():
        return math.nan
    return float(np.mean(lr[ok] / law_shape(law, b[ok], b_noise)))


CURVE_LAWS = ("adam", "sgd_alpha1")  # the laws ``fit_curve`` fits with B_noise free: Eq 2 and Eq 1
_CURVE_SPAN = 100.0  # B_noise is searched from B_min / span to B_max * span; a best value on that edge is no fit


def fit_curve(batch_sizes, lr_opt, law: str, n_grid: int = 2001,
              keep_edge: bool = False) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The law's (eps_max, B_noise) that fit the optimal LRs best in log LR, B_noise free; ``lr_opt`` may be one
    curve (n_B,) or replicates (n_rep, n_B), NaN where a batch size has no optimum. For each B_noise the best
    eps_max is closed-form (the geometric mean of eps_opt / shape), so B_noise is a 1-D search on a log grid
    (1% apart at the default size) over B_min / 100 .. B_max * 100. NaN where fewer than 3 batch sizes have an
    optimum, or where the best B_noise is the search's edge: the curve has no peak (Eq 2) or knee (Eq 1) there.
    ``keep_edge``: keep the edge's values and return a third array, True where B_noise sits on the edge."""
    b = np.asarray(batch_sizes, float)
    lr = np.atleast_2d(np.asarray(lr_opt, float))
    grid = np.geomspace(b.min() / _CURVE_SPAN, b.max() * _CURVE_SPAN, n_grid)
    log_shape = np.log(np.stack([law_shape(law, b, g) for g in grid]))  # (grid, B)
    ok = np.isfinite(lr) & (lr > 0)
    y = np.where(ok, np.log(np.where(ok, lr, 1.0)), 0.0)  # (rep, B)
    n = ok.sum(axis=1)
    resid = y[:, None, :] - log_shape[None]  # (rep, grid, B)
    log_eps = (resid * ok[:, None, :]).sum(-1) / np.maximum(n, 1)[:, None]
    sse = (((resid - log_eps[..., None]) * ok[:, None, :]) ** 2).sum(-1)
    best = sse.argmin(axis=1)
    rows = np.arange(len(lr))
    eps_max, b_noise = np.exp(log_eps[rows, best]), grid[best]
    edge = (best == 0) | (best == n_grid - 1)
    bad = (n < 3) | (edge & ~keep_edge)
    eps_max, b_noise = np.where(bad, np.nan, eps_max), np.where(bad, np.nan, b_noise)
    return (eps_max, b_noise, edge) if keep_edge else (eps_max, b_noise)


# Theorem 5 (Eq 18): the largest loss drop per batch size, dL_opt(B) = dL_max / (1 + B_noise / B), with the B_noise
# of Eq 14 / Eq 22. The drops are measured on the same runs as Eq 22's S and E, so B_noise fitted to them is a second,
# independent estimate of the same number.
DROP_CRITERIA = ("drop", "drop_at_target", "drop_mean")  # the criteria whose score is a loss drop (Eq 18's dL)
VERDICTS_EQ18 = {
    "consistent": "the 95% intervals of B_noise from the drops (Eq 18) and from S and E (Eq 22) overlap",
    "inconsistent": "the 95% intervals of B_noise from the drops (Eq 18) and from S and E (Eq 22) do not overlap",
    "unresolved": "one of the two B_noise, or its interval, is missing: nothing to compare",
}


def drop_criterion(criterion: str) -> str:
    """The loss drop Theorem 5 reads: the fit's criterion where it is one (``DROP_CRITERIA``), else the paper's."""
    return criterion if criterion in DROP_CRITERIA else "drop"


MIN_HALF = 2  # cross-fitting (``max_drop``) needs this many seeds in each half: 2 * MIN_HALF seeds in all


def max_drop(drop: np.ndarray, seed_idx: np.ndarray | None = None) -> np.ndarray:
    """Eq 18's measured side, dL_opt(B): per batch size, the mean drop at the best LR, cross-fitted over seeds.
    ``drop``: per run, (B, LR, seeds); ``seed_idx``: (rep, n) indices into the seed axis, by default one row of every
    seed (as ``optima``). Returns (rep, B).

    The plain estimate, the largest mean over LR, is biased upward by the selection: the LR whose mean is largest is
    also the one whose noise is largest, so it sits above the true top by about the noise of one mean times the
    expected maximum of that many near-equal LRs. That is most where the drops are small against their noise (small
    B), so it flattens Eq 18 and pulls the B_noise fitted to the drops low: on synthetic grids drawn with B_noise 20
    (``tests/synthetic.py``, 5 seeds, 20 grids per setting) the plain maxima sat above the true top by +19% / +61% /
    +147% at B = 1 and +7% / +22% / +53% at B = 2-5 with drop noise 0.002 / 0.005 / 0.01 per run (tops 0.005 at B = 1
    to 0.095 at B = 400), the drops' B_noise came out at a median 19.3 / 17.7 / 15.6, and with 1000 replicates its
    interval missed Eq 22's (true 20 too) in 12 / 10 / 8 of 20 grids (9 of 20 with 10 seeds at 0.005).
    Cross-fitting removes the selection's bias: each row's seeds are split by position into two halves (even and
    odd positions of the row: for the data the even and odd seeds of the seed axis, for a bootstrap replicate the
    even and odd draws of its resampled list, so its interval is of this same estimator), the best LR is picked on
    one half (the largest finite mean) and its mean is read on the other, then the halves swap and the two readings
    are averaged. The reading is unbiased for the true drop at the picked LR, so it is slightly conservative: the
    picked LR may not be the truly best one, whose true drop is at least as large. It is so most where the top is
    small against the noise of a half's mean, and there not slightly: on the same grids -16% / -54% / -74% at B = 1
    (the picked LR is near random there), -3% / -8% / -11% at B = 2-5. Those are the smallest drops, which weigh
    least in the fit (``fit_eq18``, least squares on the drops), so the drops' B_noise came out at a median 20.2 /
    20.4 / 20.6 (a slight steepening), within 15% of 20 in every grid at 0.002 and 0.005, and the verdict said
    consistent in 20 of 20 grids at every noise and with 10 seeds.

    Only an LR where both halves have a finite mean can be picked: a mean of -inf (a run diverged inside its window)
    is never the largest, as in the plain estimate, and an LR a half did not run cannot be read there. A batch size
    with no such LR has none (NaN), as has every batch size when a half has fewer than ``MIN_HALF`` seeds (a row of
    fewer than 4): one seed per half reads single runs and gives no cross-fitted mean, so there is no estimate."""
    drop = np.asarray(drop, float)
    seed_idx = np.arange(drop.shape[-1])[None, :] if seed_idx is None else np.atleast_2d(seed_idx)
    halves = seed_idx[:, 0::2], seed_idx[:, 1::2]
    if min(h.shape[1] for h in halves) < MIN_HALF:
        return np.full((len(seed_idx), drop.shape[0]), np.nan)
    means = [_nanmean(drop[:, :, h].transpose(2, 0, 1, 3), axis=-1) for h in halves]  # (rep, B, LR) each
    both = np.isfinite(means[0]) & np.isfinite(means[1])
    reads = []
    for pick, read in ((0, 1), (1, 0)):
        best = np.argmax(np.where(both, means[pick], -np.inf), axis=-1)
        reads.append(np.take_along_axis(means[read], best[..., None], axis=-1)[..., 0])
    return np.where(both.any(axis=-1), (reads[0] + reads[1]) / 2, np.nan)


def fit_dl_max(batch_sizes, drops, b_noise) -> np.ndarray:
    """Eq 18's dL_max with B_noise fixed (one per replicate, or one for all): with x = 1 / (1 + B_noise / B), the
    least-squares closed form sum x y / sum x^2 over the batch sizes with a measured maximum. ``drops``: (rep, B).
    NaN with fewer than 2 of them, or where B_noise is not > 0."""
    y = np.atleast_2d(np.asarray(drops, float))
    bn = np.broadcast_to(np.asarray(b_noise, float), (len(y),))
    good = np.isfinite(bn) & (bn > 0)
    x = law_shape("sgd_alpha1", np.asarray(batch_sizes, float), np.where(good, bn, 1.0)[:, None])  # Eq 1's shape
    ok = np.isfinite(y)
    sxy, sxx = np.where(ok, x * y, 0.0).sum(-1), np.where(ok, x * x, 0.0).sum(-1)
    return np.where(good & (ok.sum(-1) >= 2), sxy / np.where(sxx > 0, sxx, np.nan), np.nan)


def fit_eq18(batch_sizes, drops, n_grid: int = 2001) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq 18 fitted alone to the maxima ``drops`` (rep, B): (dL_max, B_noise, on_bound) by least squares. For each
    B_noise the best dL_max is closed-form, so B_noise is a 1-D search on a log grid over B_min / 100 .. B_max * 100
    (as ``fit_curve``). ``on_bound``: the best B_noise is the search's bound, where the drops show no knee (flat
    drops run to the lower bound, ever-rising ones to the upper); its values are kept, the caller decides. NaN with
    fewer than 3 batch sizes with a maximum, or a best dL_max <= 0 (the loss rose: no drop to fit)."""
    b = np.asarray(batch_sizes, float)
    y = np.atleast_2d(np.asarray(drops, float))
    grid = np.geomspace(b.min() / _CURVE_SPAN, b.max() * _CURVE_SPAN, n_grid)
    x = np.stack([law_shape("sgd_alpha1", b, g) for g in grid])  # (grid, B): Eq 18 has Eq 1's shape
    ok = np.isfinite(y)
    y0 = np.where(ok, y, 0.0)
    sxy, sxx = x @ y0.T, (x * x) @ ok.T  # (grid, rep)
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate without a maximum: NaN, dropped below
        sse = (y0 * y0).sum(-1) - sxy ** 2 / sxx  # the residual at each B_noise's best dL_max
        best = np.where(np.isfinite(sse), sse, np.inf).argmin(axis=0)
        rows = np.arange(len(y))
        dl_max, b_noise = sxy[best, rows] / sxx[best, rows], grid[best]
    bad = (ok.sum(-1) < 3) | ~(dl_max > 0)
    on_bound = ((best == 0) | (best == n_grid - 1)) & ~bad
    return np.where(bad, np.nan, dl_max), np.where(bad, np.nan, b_noise), on_bound


@dataclass
class TargetFit:
    """The fitted numbers of one target, with bootstrap intervals (lists [lo, hi]) and the n behind them."""

    target: float
    criterion: str  # a key of CRITERIA: what the optimal LR maximises
    n_runs: int
    n_seeds: int
    n_boot: int
    batch_sizes: list[float]
    lrs: list[float]
    lr_opt: list[float]  # per batch size; NaN where it has none (no_optimum says why)
    lr_opt_ci: list[list[float]]
    lr_opt_agreement: list[float]  # share of replicates whose optimum is the same LR as the data's
    lr_opt_dist: list[list[float]]  # per batch size, the share of replicates whose optimum is each LR (the rest: none)
    on_edge: list[bool]
    # where on_edge: "top" (the optimum may be larger), "bottom" (smaller), "both" (the only LR measured there)
    edge_side: list[str | None]
    no_optimum: list[str | None]  # per batch size, why it has no optimum (a key of NO_OPTIMUM); None where it has one
    tied_lrs: list[list[float]]  # per batch size, the LRs that share the best mean score where no_optimum is "tie"
    score_at_opt: list[float]
    seeds_at_opt: list[int]
    steps_at_opt: list[float]  # S (mean over seeds) at the optimal LR
    examples_at_opt: list[float]
    b_noise: float
    b_noise_ci: list[float]
    s_min: float
    s_min_ci: list[float]
    eps_max: dict[str, float]
    eps_max_ci: dict[str, list[float]]
    law_band: dict[str, dict[str, list[float]]]  # per law: B, and the 2.5/97.5 percentiles of its curve there
    peak_batch_size: float  # the B whose optimal LR is largest (first of ties)
    peak_batch_size_ci: list[float]
    # per CURVE_LAWS law: fit_curve's eps_max, b_noise, their CIs (over the replicates that fit) and unfit_share,
    # the share of replicates whose optima show no peak (Eq 2) or knee (Eq 1) within the search
    curve: dict[str, dict[str, float | list[float]]]
    b_simple: float  # McCandlish's B_simple measured in training (noise_scale): median over the runs at the target
    b_simple_ci: list[float]
    b_simple_n: int  # runs that measured it (B >= 2, no BatchNorm, at least one measurement before the crossing)
    # Theorem 5 (Eq 18) on the same runs (``_theorem5``): the largest mean drop per B with its interval, Eq 18 at
    # Eq 22's B_noise (dl_max, its band) and Eq 18 fitted alone (b_noise_eq18: a second estimate of B_noise), verdict
    theorem5: dict
    # the seed rule (MIN_SEEDS): enough_seeds, n_seeds, distinct_resamples, min_seeds, and in words: note (what the
    # intervals rest on, or why there are none), lattice (what a lattice estimate on its bound means)
    interval: dict[str, bool | int | str]
    off_interval: list[str]  # the continuous estimates on or outside their own interval ("b_noise", "eps_max/adam", ..)
    mean_score: list[list[float]] = field(repr=False)  # (batch size, LR): the criterion's mean, for the heatmap
    notes: list[str] = field(default_factory=list)
    # B_noise (Eq 22) of each bootstrap replicate, and what the replicates resampled (the rng seed, n_boot, the seeds):
    # where two targets' ``resample`` are equal, replicate r is the same resample of seeds at both, so a fit across
    # targets (Eq 21: ``eq21``) can be bootstrapped on the same replicates. Not in ``to_dict``: n_boot numbers
    b_noise_boot: list[float] = field(default_factory=list, repr=False)
    resample: tuple = field(default=(), repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["b_noise_boot"], out["resample"]
        return out


def _estimates(grid: Grid, seed_idx: np.ndarray, criterion: str) -> dict:
    """Every estimate for each row of ``seed_idx`` (replicates x seeds, indices into grid.seeds)."""
    opt = optima(grid, criterion, seed_idx)
    best = opt["best"]
    lr_opt = np.where(best >= 0, grid.lrs[np.clip(best, 0, None)], np.nan)  # (rep, B)
    steps = grid.steps[:, :, seed_idx].transpose(2, 0, 1, 3)  # (rep, B, LR, seeds)
    at_opt = np.take_along_axis(steps, np.clip(best, 0, None)[..., None, None], axis=2)[:, :, 0, :]
    s_opt = np.where(best >= 0, _nanmean(at_opt, axis=-1), np.nan)
    e_opt = s_opt * grid.batch_sizes
    out = {"mean_score": opt["mean"], "best": best, "on_edge": opt["on_edge"], "tie": opt["tie"],
           "reached": opt["reached"], "measured": opt["measured"], "lr_opt": lr_opt, "s_opt": s_opt,
           "e_opt": e_opt, "b_noise": [], "s_min": [], **{f"eps_max/{law}": [] for law in LAWS}}
    for r in range(len(seed_idx)):
        b_noise, s_min = fit_b_noise(s_opt[r], e_opt[r])
        out["b_noise"].append(b_noise)
        out["s_min"].append(s_min)
        for law in LAWS:
            out[f"eps_max/{law}"].append(fit_eps_max(grid.batch_sizes, lr_opt[r], b_noise, law))
    peak = np.where(np.isfinite(lr_opt).any(axis=1),
                    grid.batch_sizes[np.argmax(np.where(np.isfinite(lr_opt), lr_opt, -np.inf), axis=1)], np.nan)
    out["peak"] = peak
    drop = drop_criterion(criterion)  # Theorem 5 reads a drop, whatever picked the optimal LR
    out["max_drop"] = max_drop(grid.score(drop), seed_idx)  # cross-fitted: the same halves in every replicate
    for law in CURVE_LAWS:
        out[f"curve/{law}/eps_max"], out[f"curve/{law}/b_noise"] = fit_curve(grid.batch_sizes, lr_opt, law)
    measured = np.full(grid.drop.shape, np.nan) if grid.b_simple is None else grid.b_simple
    per_rep = measured[:, :, seed_idx].transpose(2, 0, 1, 3).reshape(len(seed_idx), -1)  # (rep, runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no run measured it: NaN
        out["b_simple"] = np.nanmedian(per_rep, axis=1)
    return out


def _ci(values) -> list[float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return [float(x) for x in np.percentile(v, CI)] if len(v) else [math.nan, math.nan]


def _no_ci(values) -> list[float]:
    return [math.nan, math.nan]


def seed_rule(n_seeds: int) -> dict[str, bool | int | str]:
    """``TargetFit.interval``: whether n seeds are enough for an interval (``MIN_SEEDS``), with the numbers and why."""
    k, enough = distinct_resamples(n_seeds), n_seeds >= MIN_SEEDS
    note = (f"{n_seeds} seeds: {k} distinct bootstrap resamples behind each 95% interval" if enough else
            f"too few seeds for an interval: {n_seeds} seed(s) give only {k} distinct bootstrap resample(s) "
            f"(C(2n - 1, n)); an interval needs at least {MIN_SEEDS} seeds ({distinct_resamples(MIN_SEEDS)} resamples; "
            f"a 2.5% tail needs 40), so none is given, and nothing that rests on one is claimed: no optimum is "
            f"called resolved, no rise, fall or surge of the optimal LR, no trend of B_noise across targets. "
            f"Fix: run rounds={MIN_SEEDS} or more")
    return {"enough_seeds": enough, "n_seeds": n_seeds, "distinct_resamples": k, "min_seeds": MIN_SEEDS,
            "note": note, "lattice": LATTICE_NOTE}


def _continuous(fit_numbers: dict) -> dict[str, tuple[str, float, list[float]]]:
    """The continuous estimates of a fit by key: (name in words, value, interval)."""
    out = {"b_noise": ("B_noise (Eq 22)", fit_numbers["b_noise"], fit_numbers["b_noise_ci"]),
           "s_min": ("S_min (Eq 22)", fit_numbers["s_min"], fit_numbers["s_min_ci"])}
    for law, (label, _) in LAWS.items():
        out[f"eps_max/{law}"] = (f"eps_max of {label}", fit_numbers["eps_max"][law], fit_numbers["eps_max_ci"][law])
    for law in CURVE_LAWS:
        c = fit_numbers["curve"][law]
        for k, name in (("b_noise", "B_noise"), ("eps_max", "eps_max")):
            out[f"curve/{law}/{k}"] = (f"{name} of {LAWS[law][0]} fitted to the optima", c[k], c[f"{k}_ci"])
    out["b_simple"] = ("B_simple (measured)", fit_numbers["b_simple"], fit_numbers["b_simple_ci"])
    t5 = fit_numbers["theorem5"]
    out["theorem5/dl_max"] = ("dL_max of Eq 18 at Eq 22's B_noise", t5["dl_max"], t5["dl_max_ci"])
    out["theorem5/b_noise_eq18"] = ("B_noise of Eq 18 fitted to the largest drops", t5["b_noise_eq18"],
                                    t5["b_noise_eq18_ci"])
    out["theorem5/dl_max_eq18"] = ("dL_max of Eq 18 fitted alone", t5["dl_max_eq18"], t5["dl_max_eq18_ci"])
    return out


def _off_interval(fit_numbers: dict) -> tuple[list[str], list[str]]:
    """The keys of the continuous estimates that lie on or outside their own interval, and a note for each."""
    keys, notes = [], []
    for key, (name, value, (lo, hi)) in _continuous(fit_numbers).items():
        where = interval_position(value, (lo, hi))
        if where in ("on", "outside"):
            keys.append(key)
            shown = f"{name} = {value:.4g} lies {'on a bound of' if where == 'on' else 'outside'} its bootstrap " \
                    f"interval [{lo:.4g}, {hi:.4g}]"
            notes.append(f"{shown}: every replicate gives the same value, so the interval (zero width) is the "
                         f"replicates' spread, not the estimate's error" if lo == hi else
                         f"{shown}: the replicates' distribution is skewed; read the interval as the replicates' "
                         f"spread, not as a 95% interval around the estimate")
    return keys, notes


def _why_none(point: dict) -> list[str | None]:
    """Per batch size of the data, the key of NO_OPTIMUM that says why it has no optimum; None where it has one."""
    best, tie = point["best"][0], point["tie"][0]
    measured, reached = point["measured"][0].any(axis=-1), point["reached"][0].any(axis=-1)
    return [None if j >= 0 else "tie" if t else "no runs" if not m else "not reached" if not r else "not measured"
            for j, t, m, r in zip(best, tie, measured, reached)]


def _batches(grid: Grid, mask) -> list[int | float]:
    """The batch sizes where ``mask`` holds, as the notes print them."""
    return [int(b) if float(b).is_integer() else float(b) for b, m in zip(grid.batch_sizes, mask) if m]


def _b_grid(batch_sizes: np.ndarray, n: int = 60) -> np.ndarray:
    """Where a band is drawn: n points across the measured batch sizes, geometric where they are all > 0."""
    lo, hi = batch_sizes.min(), batch_sizes.max()
    return np.geomspace(lo, hi, n) if lo > 0 else np.linspace(lo, hi, n)


def _law_bands(grid: Grid, boot: dict) -> dict[str, dict[str, list[float]]]:
    """Each law's curve over B for every replicate's (eps_max, B_noise), summarised by its 95% percentile band."""
    b = _b_grid(grid.batch_sizes)
    b_noise = np.asarray(boot["b_noise"], float)
    bands = {}
    for law, (_, fn) in LAWS.items():
        eps = np.asarray(boot[f"eps_max/{law}"], float)
        ok = np.isfinite(eps) & (b_noise > 0)
        if ok.sum() < 10:
            continue
        curves = np.stack([fn(b, e, n) for e, n in zip(eps[ok], b_noise[ok])])
        lo, hi = np.percentile(curves, CI, axis=0)
        bands[law] = {"b": b.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
    return bands


def _eq18_verdict(b18: float, b18_ci: list[float], b22: float, b22_ci: list[float]) -> str:
    """A key of ``VERDICTS_EQ18``: do the two B_noise agree within their 95% intervals?"""
    if not all(math.isfinite(v) for v in (b18, *b18_ci, b22, *b22_ci)) or not b22 > 0:
        return "unresolved"
    return "consistent" if b18_ci[0] <= b22_ci[1] and b22_ci[0] <= b18_ci[1] else "inconsistent"


def _theorem5(grid: Grid, point: dict, boot: dict, enough: bool, criterion: str) -> dict:
    """Theorem 5 (Eq 18: dL_opt(B) = dL_max / (1 + B_noise / B)) on the fit's runs, ``TargetFit.theorem5``.

    Measured: the largest mean drop over LR per B, cross-fitted over two halves of the seeds (``max_drop``), its
    interval from the same replicates as the rest, each cross-fitted over its own halves; none below
    2 * ``MIN_HALF`` seeds.
    Prediction 1: Eq 18 with Eq 22's B_noise, dL_max by least squares (``fit_dl_max``); each replicate uses its own
    Eq 22 B_noise where it has one > 0, else the data's. Prediction 2: Eq 18 fitted alone (``fit_eq18``), whose
    B_noise is a second estimate of Eq 22's, from other numbers of the same runs (drops, not S and E). It is no
    estimate (NaN, and the note says why) where the best fit is on the search bound, or where 2.5% or more of the
    replicates are: their bound values are kept, so the interval then reaches the bound and bounds B_noise on one
    side only."""
    ci = _ci if enough else _no_ci
    b = grid.batch_sizes
    measured, boot_max = point["max_drop"][0], boot["max_drop"]
    b22, b22_boot = float(point["b_noise"][0]), np.asarray(boot["b_noise"], float)
    b22_boot = np.where(np.isfinite(b22_boot) & (b22_boot > 0), b22_boot, b22)
    dl, dl_boot = float(fit_dl_max(b, measured, b22)[0]), fit_dl_max(b, boot_max, b22_boot)
    dl18, b18, bound = (v[0] for v in fit_eq18(b, measured))
    dl18_boot, b18_boot, bound_boot = fit_eq18(b, boot_max)
    b18_ci, b22_ci = ci(b18_boot), ci(boot["b_noise"])
    share = float(np.mean(bound_boot)) if enough else 0.0
    resolved = math.isfinite(b18) and not bound and share < CI[0] / 100
    crit = drop_criterion(criterion)
    notes = [] if crit == criterion else [f"drops by the {crit} criterion (the optimal LR is by {criterion})"]
    n_max = int(np.isfinite(measured).sum())
    if len(grid.seeds) < 2 * MIN_HALF:
        notes.append(f"no largest drop: it is cross-fitted over two halves of the seeds (max_drop), which needs "
                     f"{MIN_HALF} seeds per half, {2 * MIN_HALF} in all; {len(grid.seeds)} were run")
    elif n_max < 3:
        notes.append(f"only {n_max} batch size(s) with a measured drop: Eq 18 alone needs 3")
    elif not resolved:
        notes.append(_eq18_unresolved(b, float(b18), bool(bound), b18_boot, bound_boot, b18_ci, b22_ci))
    elif share:
        notes.append(f"{share:.1%} of replicates put B_noise on the search bound")
    if resolved and not b.min() <= b18 <= b.max():  # the knee itself was not measured
        notes.append(f"B_noise from the drops ({b18:.3g}) lies {'below' if b18 < b.min() else 'above'} the measured "
                     f"batch sizes: an extrapolation of Eq 18's knee")
    if not b22 > 0:
        notes.append(f"Eq 22 gave no B_noise > 0 ({b22:.3g}): no prediction from it")
    if not enough:
        notes.append("no intervals (too few seeds), so no verdict")
    b18, dl18 = (float(b18), float(dl18)) if resolved else (math.nan, math.nan)
    verdict = _eq18_verdict(b18, b18_ci, b22, b22_ci)
    return {"criterion": crit, "batch_sizes": b.tolist(), "max_drop": measured.tolist(),
            "max_drop_ci": [ci(boot_max[:, i]) for i in range(len(b))],
            "predicted": (dl * law_shape("sgd_alpha1", b, b22)).tolist() if b22 > 0 else [math.nan] * len(b),
            "dl_max": dl, "dl_max_ci": ci(dl_boot), "band": _eq18_band(b, dl_boot, b22_boot) if enough else {},
            "b_noise_eq22": b22, "b_noise_eq22_ci": b22_ci,
            "b_noise_eq18": b18, "b_noise_eq18_ci": b18_ci, "b_noise_eq18_bound_share": share,
            "dl_max_eq18": dl18, "dl_max_eq18_ci": ci(dl18_boot),
            "verdict": verdict, "note": "; ".join(notes + ([VERDICTS_EQ18[verdict]] if enough else []))}


def _eq18_unresolved(b: np.ndarray, b18: float, bound: bool, b18_boot: np.ndarray, bound_boot: np.ndarray,
                     b18_ci, b22_ci) -> str:
    """Why Eq 18 alone gives no B_noise: its best fit, or 2.5% or more of its replicates, on the search bound; what
    the drops still say (a one-sided limit), and whether Eq 22's interval lies beyond it."""
    flat = "below the smallest batch size: the drops are flat, no knee"
    rising = "above the largest batch size: the drops still rise"
    if bound:
        low = b18 < b.min()
        text = f"B_noise from the drops unresolved: the best fit is on the search bound ({b18:.3g}, " \
               f"{flat if low else rising})"
    else:
        low = np.mean(b18_boot[bound_boot] < b.min()) >= 0.5  # most replicates on the bound are on its lower end
        text = f"B_noise from the drops unresolved: {np.mean(bound_boot):.0%} of replicates put it on the search " \
               f"bound"
    limit = b18_ci[1] if low else b18_ci[0]
    if not math.isfinite(limit):  # no interval (too few seeds): no limit either
        return text
    text += f", so the drops only say B_noise {'<' if low else '>'} {limit:.3g}"
    if math.isfinite(b22_ci[0]) and (b22_ci[0] > limit if low else b22_ci[1] < limit):
        text += f", and Eq 22's interval lies wholly {'above' if low else 'below'} that"
    return text


def _eq18_band(b: np.ndarray, dl_boot: np.ndarray, b22_boot: np.ndarray) -> dict[str, list[float]]:
    """Eq 18 at Eq 22's B_noise over B for every replicate, summarised by its 95% band (as ``_law_bands``)."""
    ok = np.isfinite(dl_boot)
    if ok.sum() < 10:
        return {}
    bb = _b_grid(b)
    curves = dl_boot[ok, None] * law_shape("sgd_alpha1", bb[None, :], b22_boot[ok, None])
    lo, hi = np.percentile(curves, CI, axis=0)
    return {"b": bb.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def fit_target(grid: Grid, n_boot: int = 1000, seed: int = 0, criterion: str = "drop") -> TargetFit:
    """Every estimate of one target, with its bootstrap interval over seeds (none below ``MIN_SEEDS`` seeds) and a
    note for each thing a reader must know: no optimum and why, an edge, an estimate on or outside its interval."""
    n_seeds = len(grid.seeds)
    point = _estimates(grid, np.arange(n_seeds)[None, :], criterion)
    rng = np.random.default_rng(seed)
    boot = _estimates(grid, rng.integers(0, n_seeds, size=(n_boot, n_seeds)), criterion)
    interval = seed_rule(n_seeds)
    ci = _ci if interval["enough_seeds"] else _no_ci  # a degenerate interval would read as a precise one
    best, lr_opt = point["best"][0], point["lr_opt"][0]
    agreement = (boot["best"] == best[None, :]).mean(axis=0)
    n_lr = len(grid.lrs)
    dist = np.stack([(boot["best"] == j).mean(axis=0) for j in range(n_lr)], axis=1)  # (B, LR)
    score_at_opt = np.where(best >= 0, np.take_along_axis(point["mean_score"][0], np.clip(best, 0, None)[:, None],
                                                          axis=1)[:, 0], np.nan)
    below, above = measured_beyond(best, point["measured"][0])
    side = [None if not edge else "both" if not (low or high) else "top" if not high else "bottom"
            for edge, low, high in zip(point["on_edge"][0], below, above)]
    why = _why_none(point)
    tied = tied_best(np.where(point["reached"][0], point["mean_score"][0], np.nan))
    tied_lrs = [grid.lrs[t].tolist() if w == "tie" else [] for t, w in zip(tied, why)]
    seeds_at_opt = [int(np.isfinite(grid.drop[b, j]).sum()) if j >= 0 else 0 for b, j in enumerate(best)]
    notes = []
    b_noise = point["b_noise"][0]
    if not b_noise > 0:
        notes.append(f"Eq 22 gave B_noise = {b_noise:.3g}: the S-E points show no speed/data trade-off, so no law "
                     f"is fitted")
    if not interval["enough_seeds"]:
        notes.append(interval["note"])
    if point["on_edge"][0].any():
        notes.append(f"optimal LR on the edge of the measured LR range at B = {_batches(grid, point['on_edge'][0])}: "
                     f"the optimum may lie beyond")
    for reason in NO_OPTIMUM:
        at = [w == reason for w in why]
        if reason == "tie" and any(at):
            lrs = "; ".join(f"{lr_list(grid.lrs[t])} at B = {b:g}"
                            for b, t, a in zip(grid.batch_sizes, tied, at) if a)
            notes.append(f"tie at B = {_batches(grid, at)}: two or more LRs share the best mean {criterion} score "
                         f"({lrs}), so there is no optimum there, and it enters no fit")
        elif any(at):
            notes.append(f"{NO_OPTIMUM[reason]} at B = {_batches(grid, at)}: no optimum there")
    numbers = dict(
        target=grid.target, criterion=criterion, n_runs=grid.n_runs, n_seeds=n_seeds, n_boot=n_boot,
        batch_sizes=grid.batch_sizes.tolist(), lrs=grid.lrs.tolist(), lr_opt=lr_opt.tolist(),
        lr_opt_ci=[ci(boot["lr_opt"][:, i]) for i in range(len(grid.batch_sizes))],
        lr_opt_agreement=agreement.tolist(), lr_opt_dist=dist.tolist(), on_edge=point["on_edge"][0].tolist(),
        edge_side=side, no_optimum=why, tied_lrs=tied_lrs, score_at_opt=score_at_opt.tolist(),
        seeds_at_opt=seeds_at_opt,
        steps_at_opt=point["s_opt"][0].tolist(), examples_at_opt=point["e_opt"][0].tolist(),
        b_noise=b_noise, b_noise_ci=ci(boot["b_noise"]), s_min=point["s_min"][0], s_min_ci=ci(boot["s_min"]),
        eps_max={law: point[f"eps_max/{law}"][0] for law in LAWS},
        eps_max_ci={law: ci(boot[f"eps_max/{law}"]) for law in LAWS},
        law_band=_law_bands(grid, boot) if interval["enough_seeds"] else {},
        peak_batch_size=float(point["peak"][0]), peak_batch_size_ci=ci(boot["peak"]),
        b_simple=float(point["b_simple"][0]), b_simple_ci=ci(boot["b_simple"]),
        b_simple_n=int(np.isfinite(grid.b_simple).sum()) if grid.b_simple is not None else 0,
        curve={law: {k: float(point[f"curve/{law}/{k}"][0]) for k in ("eps_max", "b_noise")}
               | {f"{k}_ci": ci(boot[f"curve/{law}/{k}"]) for k in ("eps_max", "b_noise")}
               | {"unfit_share": float(np.mean(~np.isfinite(boot[f"curve/{law}/b_noise"])))} for law in CURVE_LAWS},
        theorem5=_theorem5(grid, point, boot, interval["enough_seeds"], criterion),
        interval=interval, mean_score=point["mean_score"][0].tolist(),
    )
    off, off_notes = _off_interval(numbers)
    return TargetFit(**numbers, off_interval=off, notes=notes + off_notes, b_noise_boot=list(boot["b_noise"]),
                     resample=(seed, n_boot, tuple(grid.seeds.tolist())))


def fit_experiment(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, criterion: str = "drop") -> list[TargetFit]:
    """One ``TargetFit`` per target in the table, highest target first, on the LR axis of the whole table."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    workloads = table[WORKLOAD].drop_duplicates()
    if len(workloads) > 1:
        raise ValueError(f"the table mixes {len(workloads)} workloads ({workloads.to_dict('records')}); a fit needs "
                         f"one: give each its own experiment_name, or filter the table first")
    lrs = np.sort(np.unique(np.round(table["lr"].to_numpy(float), 12)))
    targets = sorted(table["target_loss"].unique(), reverse=True)
    return [fit_target(Grid.from_table(table, t, lrs), n_boot=n_boot, seed=seed, criterion=criterion)
            for t in targets]


# Eq 21 (Kaplan et al.'s critical batch size law, McCandlish's B_crit): B_noise ~ B_crit = B_* / L^(1 / alpha_B).
# The paper's shortcut to the peak without a grid (section 3.2) and its argument that the peak moves to larger B as
# the loss L falls (section 2.3), fitted here to the B_noise that Eq 22 gives each target.
EQ21_MIN_TARGETS = 2


def _eq21_line(log_l: np.ndarray, log_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of log B_noise on log L for each row of ``log_b`` ((T,) or (rep, T)): (log B_*, 1 / alpha_B),
    the intercept and minus the slope."""
    slope, intercept = np.polyfit(log_l, np.asarray(log_b, float).T, 1)
    return intercept, -slope


def _alpha(inv_alpha):
    with np.errstate(divide="ignore"):  # a flat line (1/alpha_B = 0): alpha_B is infinite
        return np.divide(1.0, inv_alpha)


def fit_eq21(targets, b_noise) -> tuple[float, float, dict[float, str]]:
    """Eq 21 by least squares in log-log, log B_noise = log B_* - (1 / alpha_B) log L, over the target losses L.

    Returns (B_*, alpha_B, excluded): ``excluded`` maps each target left out to why; a logarithm needs B_noise > 0
    (Eq 22 gives B_noise <= 0 where the S-E points show no speed/data trade-off) and L > 0, and NaN is no estimate.
    (NaN, NaN) where fewer than ``EQ21_MIN_TARGETS`` targets with distinct losses remain. alpha_B is 1 / (minus the
    slope): unbounded as B_noise stops changing with L, negative where it falls as L falls (against Eq 21's claim).
    B_* is B_noise at L = 1, in B_noise's unit."""
    t, b = np.asarray(targets, float), np.asarray(b_noise, float)
    if t.shape != b.shape or t.ndim != 1:
        raise ValueError(f"fit_eq21 needs one B_noise per target: got {t.shape} targets and {b.shape} B_noise. "
                         f"Fix: pass two 1-D sequences of the same length")
    excluded = {}
    for ti, bi in zip(t, b):
        if not (math.isfinite(ti) and ti > 0):
            excluded[float(ti)] = f"target loss {ti:g} is not > 0: no log"
        elif math.isnan(bi) or math.isinf(bi):
            excluded[float(ti)] = f"B_noise is {bi}: no estimate"
        elif bi <= 0:
            excluded[float(ti)] = f"B_noise = {bi:.3g} <= 0 (Eq 22 found no speed/data trade-off): no log"
    ok = np.array([float(ti) not in excluded for ti in t], bool)
    if len(np.unique(t[ok])) < EQ21_MIN_TARGETS:
        return math.nan, math.nan, excluded
    log_b_star, inv_alpha = _eq21_line(np.log(t[ok]), np.log(b[ok]))
    return float(np.exp(log_b_star)), float(_alpha(inv_alpha)), excluded


def _eq21_interval(inv_ci: list[float]) -> list[float]:
    """alpha_B's interval from 1/alpha_B's: the map 1/x is monotone on either side of 0, so its bounds map over;
    none (NaN) where 1/alpha_B's interval holds 0 (B_noise may not change with L: alpha_B is unbounded)."""
    lo, hi = inv_ci
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
        return [math.nan, math.nan]
    return sorted([1 / hi, 1 / lo])


def eq21(fits: list[TargetFit], n_band: int = 60) -> dict | None:
    """Eq 21 across the targets of one criterion's fits (``fit_experiment``): B_* and alpha_B from each target's
    B_noise (Eq 22), with 95% intervals and a band for the line from the fits' own bootstrap replicates; None for
    fewer than 2 targets.

    ``fit_target`` draws every target's replicates from the same rng seed, so where the targets have the same seeds
    (``TargetFit.resample``) replicate r is the same resample of seeds at every target: Eq 21 fitted to replicate r
    keeps the pairing of a seed's runs across targets, as each target's bootstrap keeps it across batch sizes. Each
    replicate is fitted on the targets the data's fit used; one where any of them has B_noise <= 0 has no fit
    (``unfit_share``). No interval (NaN, and the note says why) with too few seeds (``MIN_SEEDS``), with targets
    resampled differently, or where 2.5% or more of the replicates have no fit: the interval would miss that tail.
    """
    if len(fits) < 2:
        return None
    order = sorted(fits, key=lambda f: -f.target)  # training order, as ``identify.b_noise_trend``
    t, b = np.array([f.target for f in order]), np.array([f.b_noise for f in order])
    b_star, alpha, excluded = fit_eq21(t, b)
    used = np.array([float(x) not in excluded for x in t], bool)
    notes = [f"target {x:g} left out: {why}" for x, why in excluded.items()]
    inv = 1 / alpha if math.isfinite(b_star) else math.nan
    out = {"criterion": order[0].criterion, "equation": "B_noise = B_* / L^(1/alpha_B) (Eq 21), least squares in "
           "log-log over the targets' Eq 22 B_noise", "targets": t.tolist(), "b_noise": b.tolist(),
           "used": used.tolist(), "excluded": [{"target": x, "reason": why} for x, why in excluded.items()],
           "n_targets": int(used.sum()), "b_star": b_star, "alpha_b": alpha, "inv_alpha_b": inv,
           "b_star_ci": [math.nan] * 2, "alpha_b_ci": [math.nan] * 2, "inv_alpha_b_ci": [math.nan] * 2,
           "n_boot": order[0].n_boot, "unfit_share": math.nan, "band": {}}
    if not math.isfinite(b_star):
        notes.append(f"fewer than {EQ21_MIN_TARGETS} targets with B_noise > 0: no fit")
        return out | {"note": "; ".join(notes)}
    if used.sum() == 2:
        notes.append("2 targets: the line passes through both, so it tests nothing of the power law")
    if not t[used].min() <= 1 <= t[used].max():
        notes.append("B_* is B_noise at L = 1, outside the targets: an extrapolation of the line")
    few = sorted({f.n_seeds for f in order if not f.interval["enough_seeds"]})
    paired = len({f.resample for f in order}) == 1 and all(len(f.b_noise_boot) for f in order)
    boot = np.array([order[i].b_noise_boot for i in np.flatnonzero(used)], float).T if paired else None
    fit_ok = np.all(np.isfinite(boot) & (boot > 0), axis=1) if paired else None
    if paired:
        out["unfit_share"] = float(1 - fit_ok.mean())
    if few:
        notes.append(f"no interval: too few seeds ({', '.join(map(str, few))}; an interval needs {MIN_SEEDS})")
    elif not paired:
        notes.append("no interval: the targets' bootstrap replicates are not the same resamples of seeds (other "
                     "seeds, n_boot or rng seed), so no replicate of the line exists. Fix: fit every target with "
                     "fit_experiment on one table")
    elif out["unfit_share"] >= CI[0] / 100:
        notes.append(f"no interval: {out['unfit_share']:.1%} of replicates have B_noise <= 0 at a fitted target, "
                     f"so no line; an interval without them would miss that tail")
    else:
        log_b_star, inv_boot = _eq21_line(np.log(t[used]), np.log(boot[fit_ok]))
        out["b_star_ci"] = _ci(np.exp(log_b_star))
        out["inv_alpha_b_ci"] = _ci(inv_boot)
        out["alpha_b_ci"] = _eq21_interval(out["inv_alpha_b_ci"])
        if not math.isfinite(out["alpha_b_ci"][0]):
            notes.append("1/alpha_B's interval holds 0: B_noise may not change with the loss, so alpha_B has no "
                         "interval")
        if out["unfit_share"]:
            notes.append(f"{out['unfit_share']:.1%} of replicates have B_noise <= 0 at a fitted target, so no line: "
                         f"the intervals are over the rest")
        for name, value, key in (("B_*", b_star, "b_star_ci"), ("1/alpha_B", inv, "inv_alpha_b_ci")):
            if interval_position(value, out[key]) in ("on", "outside"):
                notes.append(f"{name} = {value:.4g} lies on or outside its interval [{out[key][0]:.4g}, "
                             f"{out[key][1]:.4g}]: the replicates are skewed; read it as their spread")
        grid = np.geomspace(t[used].min(), t[used].max(), n_band)
        lines = np.exp(log_b_star[:, None] - inv_boot[:, None] * np.log(grid)[None, :])
        lo, hi = np.percentile(lines, CI, axis=0)
        out["band"] = {"target": grid.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
    if alpha < 0:
        notes.append("alpha_B < 0: B_noise falls as the loss falls, against Eq 21's claim")
    return out | {"note": "; ".join(notes)}
