"""Can the optimum be seen? Verdicts from a fit's bootstrap over seeds, per (target, B) and per figure.

Per batch size (``verdicts``), from the bootstrap distribution of the optimal LR (``TargetFit.lr_opt_dist``):

- ``resolved``: in at least ``confidence`` of the replicates the optimum lies within one grid step of the data's;
- ``edge``: nothing was measured beyond the data's optimum at this B (``edge_side`` top or bottom; both where it is
  the only LR measured): the true one may lie beyond, so only one side of its interval means anything (neither for
  both). This needs no interval: it is said at any number of seeds;
- ``not identifiable``: neither; more seeds would be needed (``budget`` says how many);
- ``too few seeds``: an optimum, not on the edge, but fewer seeds than an interval needs (``fit.MIN_SEEDS``): it can
  be neither resolved nor not identifiable;
- ``tie``: two or more LRs share the best mean score (``TargetFit.tied_lrs``): no optimum;
- ``not reached``: runs exist, but none reached the target (all diverged or were too slow): no optimum;
- ``no data``: no LR measured the criterion at this batch size (``TargetFit.no_optimum`` says which way).

Per figure (``surge_verdict``): the optimal LR rises between two batch sizes when the 95% interval of the smaller
one's optimum lies wholly below the larger one's, and falls when wholly above; only resolved optima and the
meaningful side of edge optima take part (a top edge's interval bounds its optimum from below only, a bottom edge's
from above only). The
surge (a rise, then a fall at larger B) is claimed only when both are supported. With too few seeds there are no
intervals, and the verdict is ``too few seeds``: no rise, fall or surge is claimed.
"""

from __future__ import annotations

import math

import numpy as np

from surge_repro.analysis.fit import MIN_SEEDS, TargetFit

RESOLVED, EDGE, UNRESOLVED, NO_DATA = "resolved", "edge", "not identifiable", "no data"
FEW_SEEDS, TIE, NOT_REACHED = "too few seeds", "tie", "not reached"
STATES = (RESOLVED, EDGE, UNRESOLVED, FEW_SEEDS, TIE, NOT_REACHED, NO_DATA)
CONFIDENCE = 0.95


def within_one_step(fit: TargetFit) -> list[float]:
    """Per batch size, the share of replicates whose optimum is within one grid step of the data's."""
    out = []
    for best_lr, dist in zip(fit.lr_opt, fit.lr_opt_dist):
        if not math.isfinite(best_lr):
            out.append(0.0)
            continue
        j = int(np.argmin(np.abs(np.asarray(fit.lrs) - best_lr)))
        out.append(float(sum(dist[max(0, j - 1):j + 2])))
    return out


def verdicts(fit: TargetFit, confidence: float = CONFIDENCE) -> list[str]:
    """Per batch size, one of ``STATES`` (the module's docstring says when)."""
    near = within_one_step(fit)
    enough = fit.interval["enough_seeds"]
    out = []
    for lr, edge, share, why in zip(fit.lr_opt, fit.on_edge, near, fit.no_optimum):
        if not math.isfinite(lr):
            out.append(TIE if why == "tie" else NOT_REACHED if why == "not reached" else NO_DATA)
        else:
            out.append(EDGE if edge else FEW_SEEDS if not enough else RESOLVED if share >= confidence
                       else UNRESOLVED)
    return out


def _bounds(fit: TargetFit, confidence: float) -> list[tuple[float, float] | None]:
    """Per batch size, the interval of the optimum that may take part in a rise or fall claim (None: none)."""
    out = []
    for v, (lo, hi), lr, side in zip(verdicts(fit, confidence), fit.lr_opt_ci, fit.lr_opt, fit.edge_side):
        if v == RESOLVED:
            out.append((lo, hi))
        elif v == EDGE and side in ("top", "bottom") and math.isfinite(lo):  # the interval's inner side holds
            out.append((lo, math.inf) if side == "top" else (0.0, hi))
        else:
            out.append(None)
    return out


def surge_verdict(fit: TargetFit, confidence: float = CONFIDENCE) -> dict:
    """The figure's verdict: which rises and falls of the optimal LR with B the data support, in words."""
    v = verdicts(fit, confidence)
    bounds = _bounds(fit, confidence)
    b = fit.batch_sizes
    rises, falls = [], []
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            if bounds[i] is None or bounds[j] is None:
                continue
            if bounds[i][1] < bounds[j][0]:
                rises.append((b[i], b[j]))
            if bounds[i][0] > bounds[j][1]:
                falls.append((b[i], b[j]))
    # a surge: a rise into some B, then a fall out of it or of a larger B. Eq 2 has one peak: a resolved fall
    # followed by a resolved rise (out of the fall's end or a larger B) is a valley, which no Eq 2 curve makes, so a
    # rise-fall pair beside a valley is a wiggle of the optima, not the surge
    surge = any(rj <= fi for (_, rj) in rises for (fi, _) in falls)
    valleys = [(f, r) for f in falls for r in rises if f[1] <= r[0]]
    counts = {k: v.count(k) for k in STATES}
    head = (f"{counts[RESOLVED]} of {len(b)} batch sizes resolved (optimum within one grid step in >= "
            f"{confidence:.0%} of replicates), {counts[EDGE]} on the grid's edge, {counts[UNRESOLVED]} not "
            f"identifiable at {fit.n_seeds} seeds")
    head += "".join(f", {counts[k]} {k}" for k in (FEW_SEEDS, TIE, NOT_REACHED, NO_DATA) if counts[k])
    if not fit.interval["enough_seeds"]:
        label = FEW_SEEDS
        text = (f"no rise, fall or surge of the optimal LR is claimed: {fit.n_seeds} seed(s) give "
                f"{fit.interval['distinct_resamples']} distinct bootstrap resamples, and an interval needs at least "
                f"{fit.interval['min_seeds']} seeds")
    elif valleys:
        label = "not single-peaked"
        (f, r), more = valleys[0], len(valleys) - 1
        text = (f"the optimal LR falls (B {f[0]:g} -> {f[1]:g}) and then rises again (B {r[0]:g} -> {r[1]:g})"
                + (f", and {more} more such pair(s)" if more else "") + ": a valley, which no Eq 2 curve has, so no "
                f"surge is claimed (rises: {_pairs(rises)}; falls: {_pairs(falls)})")
    elif surge:
        label = "surge supported"
        text = f"rise and fall supported: the optimal LR rises ({_pairs(rises)}) and then falls ({_pairs(falls)})"
    elif rises:
        label = "rise only"
        text = f"rise supported ({_pairs(rises)}); no fall resolved within the grid"
    elif falls:
        label = "fall only"
        text = f"fall supported ({_pairs(falls)}); no rise resolved within the grid"
    elif sum(counts[k] for k in (RESOLVED, EDGE, UNRESOLVED)) < 2:  # nothing to compare: more seeds would not help
        label = "no trend resolved"
        text = "fewer than two batch sizes have an optimal LR, so no rise or fall of it can be seen"
    else:
        label = "no trend resolved"
        text = "no rise or fall of the optimal LR is resolved: the data cannot show a surge at this number of seeds"
    return {"verdict": label, "text": f"{text}. {head}.", "rises": rises, "falls": falls, "per_batch": v,
            "within_one_step": within_one_step(fit), "confidence": confidence}


def _pairs(pairs: list[tuple[float, float]], most: int = 3) -> str:
    shown = ", ".join(f"B {a:g} -> {c:g}" for a, c in pairs[:most])
    return shown + (f" and {len(pairs) - most} more" if len(pairs) > most else "")


def b_noise_trend(fits: list[TargetFit]) -> dict | None:
    """Does B_noise grow as training goes on (the target loss falls), as Fig. 3 claims? None for one target.

    Claimed as the optimal LR's rises are (``identify``): B_noise rises when a lower target's 95% interval lies wholly
    above a higher target's, falls when wholly below; with too few seeds for an interval (``fit.MIN_SEEDS``) neither
    is claimed. The Spearman rank correlation of B_noise with training progress (minus the target) comes beside it,
    as does the observed peak of the optimal LR that B_noise should predict.
    """
    if len(fits) < 2:
        return None
    order = sorted(fits, key=lambda f: -f.target)  # training order: the highest loss is reached first
    few = sorted({f.n_seeds for f in fits if not f.interval["enough_seeds"]})
    rises, falls = [], []
    for i, a in enumerate(order if not few else []):  # too few seeds: no intervals to compare
        for b in order[i + 1:]:
            (a_lo, a_hi), (b_lo, b_hi) = a.b_noise_ci, b.b_noise_ci
            if all(math.isfinite(x) for x in (a_lo, a_hi, b_lo, b_hi)):
                if b_lo > a_hi:
                    rises.append((a.target, b.target))
                if b_hi < a_lo:
                    falls.append((a.target, b.target))
    est = np.array([f.b_noise for f in order])
    ok = np.isfinite(est)
    rank = float(np.corrcoef(np.argsort(np.argsort(-np.array([f.target for f in order])[ok])),
                             np.argsort(np.argsort(est[ok])))[0, 1]) if ok.sum() >= 3 else math.nan

    def pairs(ps: list[tuple[float, float]]) -> str:
        return ", ".join(f"{a:g} -> {b:g}" for a, b in ps[:3]) + (f" and {len(ps) - 3} more" if len(ps) > 3 else "")

    if few:
        verdict, text = FEW_SEEDS, (f"too few seeds: B_noise has no interval at fewer than {MIN_SEEDS} seeds (here "
                                    f"{', '.join(map(str, few))}), so no rise or fall of it across targets is claimed")
    elif rises and not falls:
        verdict, text = "rises as the loss falls", f"B_noise rises as the loss falls (targets {pairs(rises)})"
    elif falls and not rises:
        verdict, text = "falls as the loss falls", f"B_noise falls as the loss falls (targets {pairs(falls)})"
    elif rises:
        verdict, text = "mixed", f"B_noise both rises ({pairs(rises)}) and falls ({pairs(falls)}) as the loss falls"
    else:
        verdict, text = "no trend resolved", "no change of B_noise between targets is resolved (95% intervals overlap)"
    text += f"; Spearman rank correlation with training progress {rank:.2f} over {int(ok.sum())} targets" \
        if math.isfinite(rank) else ""
    return {"verdict": verdict, "text": text + ".", "rises": rises, "falls": falls, "spearman": rank,
            "targets": [f.target for f in order], "b_noise": est.tolist(), "b_noise_ci": [f.b_noise_ci for f in order],
            "peak_batch_size": [f.peak_batch_size for f in order],
            "peak_batch_size_ci": [f.peak_batch_size_ci for f in order]}
