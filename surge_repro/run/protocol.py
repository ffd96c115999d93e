"""The paper's measurement protocol for one run: targets, S and E, the loss drop over K extra steps, divergence.

Paper section 3.1: every run trains from scratch at a constant LR until its
training loss reaches a target, records S (optimizer steps) and E = B * S (examples) there, trains K more steps and
records how much the training loss fell over them. The LR with the largest fall is the optimal LR of that batch size
(the heatmaps of Fig. 2-5), and S, E at that LR feed Eq 22. One run tracks several targets (Fig. 3 needs six).

The paper gives no estimator of "the training loss" (only that targets hold to +-0.001). The choice made here, set in
``conf/protocol/target_then_k.yaml``:

- The training loss is the mean loss on a fixed probe set of ``probe.size`` training examples, the same set for every
  point (dropout off; BatchNorm with the batch statistics of each probe chunk, as in training, its running averages
  untouched). It is exact for those examples (no minibatch noise), so a crossing is placed where it happened, and
  the drop over the K steps is measured on the same examples before and after. What remains is the noise of the
  training path itself, which is real and why the paper runs many seeds.
- A smoothed minibatch loss would be free but lags: an EMA over N examples crosses a target about N examples after
  the loss did, when a fast run is already well below it, and its K steps would then start lower than a slow run's.
  So the probe decides crossings, and is evaluated sparsely while the next target is far: the gap between probes
  doubles from ``probe.min_gap`` to ``probe.every`` examples, never beyond an eighth of the steps run so far (a
  sudden fall after a plateau is caught early) nor beyond half the steps that the latest rate of descent (and its
  speed-up since the probe before) predicts to the target. Once that prediction is ``probe.reach`` steps or fewer,
  probes come every ``probe.min_gap`` examples (every step from B = min_gap up) until the target is crossed, so S is
  the first step at or below the target, not a probe that happened to come later: a sparse schedule lets fast LRs
  overshoot the target by more than slow ones, and their K steps start lower on the loss curve, where it falls more
  slowly, which biased the optimal LR down at large B. What is left of ``target - probe loss at S`` (the
  ``start_gap`` column of the table) is the last step's own fall; ``previous_probe`` records the probe before S, so
  the table can tell (``exact_crossing``) that S - 1 was probed.
  Below B = min_gap the probes near a target stay min_gap examples apart: a probe of 512 examples costs about nine
  steps at B = 1, where a step's fall (0.001 nats) is far below its noise (SD 0.01-0.07), so probing every step
  would triple a small batch's cost to place S more exactly than the noise lets it mean anything. Where noise made
  the target look near, a straight line through ``2 reach`` close probes says so, and probes go sparse again, judged
  by that line's rate (a pair of noisy probes a few steps apart would call the target near again at once). Within
  ``16 reach`` steps of a target probes stay at most K steps apart, so that the probe before S is within K steps.
- That last step's fall is itself larger for fast LRs and large batches (0.1-0.3 nats in one step at B = 64-256
  early in training), so S alone cannot start every window at the same level. ``loss_drop_at_target`` does: with
  the probe before S at step P (P = S - 1 once the schedule closes in; any P >= S - K works), it also probes P + K
  and interpolates linearly between the windows that start at P (above the target) and at S (at or below it), with
  the weight f = (L(P) - target) / (L(P) - L(S)) that puts the start exactly at the target:
  drop = target - ((1 - f) L(P + K) + f L(S + K)). It is the criterion ``drop_at_target`` of ``fit``; the paper's
  ``loss_drop``, from S, stays the default.
- Once a target is crossed its K steps always run, even past the step cap, so a crossing never lacks its drop.
- A target at or above the initial loss is reached before training, at S = 0 (E = 0), and its K steps are the run's
  first: the one-step theory's own setting (Lemma 1, Theorem 2: one update from a given state), which the
  ground-truth workload uses (``surge_repro.tasks.quadratic``). Eq 22 ignores S = 0 (1/S is infinite there).
- ``windows`` > 1 measures W consecutive K-step windows after each crossing (probes at S + K, ..., S + WK). The
  first window's drop stays the paper's measure; ``loss_drop_mean``, the mean drop per window, is the alternative
  criterion of ``fit`` (``drop_mean``): W windows of signal against the noise of two probes and one path.
- An EMA of the minibatch losses (time constant ``ema_examples`` examples, bias-corrected like Adam's moments) is
  kept for the metrics and the runaway check: a run whose minibatch loss is NaN or inf, or whose EMA exceeds
  ``diverge_factor`` times the initial probe loss, has diverged. It stops; targets it crossed keep their S and E, and
  a drop window it was in gets no drop (the table reads that as the worst possible drop).
- A run that meets the cap (``max_steps`` or ``max_examples``) with targets not crossed records them as not reached;
  so does a run that has stalled, whose probe loss has set no new best (by 0.1%) for ``patience`` examples (an LR
  too large can kill every unit and leave the loss flat at its initial value forever). Status ``capped`` either
  way; no S is ever invented.

``TargetTracker`` does all of this from the sequence of minibatch losses and a probe callable; it never sees a model,
so the tests drive it with scripted loss sequences.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

RUNNING, DONE, DIVERGED, CAPPED = "running", "done", "diverged", "capped"
NEW_BEST = 1e-3  # a probe loss is a new best (resetting the stall clock) when it is below the best by this fraction


@dataclass
class TargetRecord:
    """What one run measured at one target. Fields stay None until measured."""

    target: float
    steps: int | None = None  # S: the first probed step whose probe loss is <= target
    examples: int | None = None  # E = B * S
    probe_loss: float | None = None  # probe loss at S (at or just below the target)
    probe_loss_after_k: float | None = None  # probe loss at S + K
    loss_drop: float | None = None  # probe_loss - probe_loss_after_k: the heatmap's colour
    estimate: float | None = None  # the EMA of minibatch losses at S, and at S + K
    estimate_after_k: float | None = None
    previous_probe: int | None = None  # the step of the probe before S: S - 1 when S is the first step at or below
    previous_probe_loss: float | None = None  # its probe loss (above the target)
    previous_window_loss: float | None = None  # probe loss K steps after ``previous_probe``
    loss_drop_at_target: float | None = None  # the K-step drop of a window that starts exactly at the target's level
    window_losses: list[float] = field(default_factory=list)  # probe loss at S + K, S + 2K, ... (``windows`` of them)
    loss_drop_mean: float | None = None  # mean drop per window over all windows: (loss at S - at S + WK) / W
    # McCandlish's B_simple at S and its parts (``surge_repro.run.noise_scale``), set by the training loop, which sees
    # the gradients: the tracker never does
    b_simple: float | None = None
    noise_trace: float | None = None
    grad_sq: float | None = None
    noise_measurements: int = 0

    @property
    def reached(self) -> bool:
        return self.steps is not None

    @property
    def measured(self) -> bool:
        return self.loss_drop_mean is not None


@dataclass
class TargetTracker:
    """Feeds on one minibatch loss per optimizer step; says when to stop and what the run measured.

    ``update(step, loss, probe)`` is called after optimizer step ``step`` (1-based) with that step's minibatch loss.
    ``probe()`` returns the probe-set loss of the current parameters; ``update`` calls it only when the schedule says
    so, at most once per step. ``update`` returns this step's events as dicts (for events.jsonl).
    """

    targets: list[float]
    k: int
    batch_size: int
    initial_loss: float  # probe loss before the first step
    windows: int = 1  # consecutive K-step windows measured after each target (the paper: 1)
    probe_every: int = 2048  # examples between routine probes
    probe_min_gap: int = 8  # examples: the closest spacing of probes, kept near a target (every step from B = 8 up)
    probe_reach: int = 8  # steps: once the next target is predicted this close, probes come every min_gap until then
    ema_examples: float = 512
    diverge_factor: float = 3.0
    max_steps: int = 10**9
    max_examples: int = 10**12
    patience: int = 10**12  # examples without a new best probe loss after which a run counts as stalled
    records: dict[float, TargetRecord] = field(init=False)
    status: str = field(init=False, default=RUNNING)
    estimate: float = field(init=False, default=math.nan)  # EMA of minibatch losses
    probe_loss: float = field(init=False)  # the latest probe
    probes: int = field(init=False, default=0)  # how many probes so far (their cost is the protocol's overhead)

    def __post_init__(self) -> None:
        self.targets = sorted({float(t) for t in self.targets}, reverse=True)
        self.records = {t: TargetRecord(t) for t in self.targets}
        self._alpha = min(1.0, self.batch_size / self.ema_examples)
        self._ema, self._decay = 0.0, 1.0
        self._max_gap = max(1, round(self.probe_every / self.batch_size))
        self._min_gap = min(self._max_gap, max(1, round(self.probe_min_gap / self.batch_size)))
        self._windows: dict[float, list[int]] = {}  # target -> the steps its drop windows still to come end
        self.probe_loss = self.initial_loss
        self._last = (0, self.initial_loss)  # (step, loss) of the latest scheduled probe
        self._gap = self._min_gap
        self._next_probe = self._min_gap
        self._close: list = []  # (step, probe loss) since close probing began; empty while probes are sparse
        self._fitted = False  # close probing just stopped: the next distance is judged at the rate they fitted
        self._rate = 0.0  # the latest positive rate of descent per step between two scheduled probes
        self._previous_ends: dict[float, int] = {}  # target -> the step P + K still to be probed
        self._probed, self._probed_loss = 0, self.initial_loss  # the latest probe of any kind (a window's end too)
        self._best = (self.initial_loss, 0)  # lowest probe loss so far, and the examples seen when it came
        self.start_events = [self._cross(0, self.initial_loss, t) for t in self.targets if self.initial_loss <= t]

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def needs_probe(self, step: int) -> bool:
        """Whether ``update(step, ...)`` will call its probe (a packed run probes all such points at once)."""
        return (step == self._next_probe or any(step == ends[0] for ends in self._windows.values())
                or step in self._previous_ends.values())

    def update(self, step: int, loss: float, probe: Callable[[], float]) -> list[dict]:
        if self.finished:
            raise RuntimeError(f"update() after the run finished with status {self.status!r}")
        if not math.isfinite(loss):
            return self._diverge(step, loss, f"minibatch loss is {loss}")
        self._ema = (1 - self._alpha) * self._ema + self._alpha * loss
        self._decay *= 1 - self._alpha
        self.estimate = self._ema / (1 - self._decay)  # bias-corrected, as Adam's moments (Eq 25)
        if self.estimate > self.diverge_factor * self.initial_loss:
            return self._diverge(step, loss, f"loss estimate {self.estimate:.4g} exceeds {self.diverge_factor:g} x "
                                             f"the initial loss {self.initial_loss:.4g}")

        events: list[dict] = []
        if self.needs_probe(step):
            self.probe_loss = value = float(probe())
            self.probes += 1
            if not math.isfinite(value):
                return self._diverge(step, loss, f"probe loss is {value}")
            for target, end in list(self._previous_ends.items()):
                if step == end:
                    self.records[target].previous_window_loss = value
                    del self._previous_ends[target]
            for target, ends in list(self._windows.items()):
                if step == ends[0]:
                    rec = self.records[target]
                    rec.window_losses.append(value)
                    if len(rec.window_losses) == 1:  # the paper's measure: the first window
                        rec.probe_loss_after_k, rec.estimate_after_k = value, self.estimate
                        rec.loss_drop = rec.probe_loss - value
                        rec.loss_drop_at_target = self._at_target(rec, value)
                    ends.pop(0)
                    if not ends:
                        rec.loss_drop_mean = (rec.probe_loss - value) / self.windows
                        del self._windows[target]
                    events.append({"event": "after_k", "step": step, "window": len(rec.window_losses), **vars(rec)})
            for target, rec in self.records.items():
                if not rec.reached and value <= target:
                    events.append(self._cross(step, value, target))
                    self._close = []
            self._probed, self._probed_loss = step, value
            if value < self._best[0] * (1 - NEW_BEST):
                self._best = (value, step * self.batch_size)
            if step >= self._next_probe:
                self._schedule(step, value)

        stalled = step * self.batch_size - self._best[1] >= self.patience
        if all(r.measured for r in self.records.values()):
            self.status = DONE
        elif (step >= self.max_steps or step * self.batch_size >= self.max_examples or stalled) and not self._windows:
            self.status = CAPPED
            missing = [t for t, r in self.records.items() if not r.reached]
            reason = f"no new best loss in {self.patience} examples" if stalled else "step or example cap"
            events.append({"event": "capped", "step": step, "reason": reason, "targets_not_reached": missing})
        return events

    def _cross(self, step: int, value: float, target: float) -> dict:
        """Record ``target`` as reached at ``step`` with probe loss ``value`` and open its drop windows."""
        rec = self.records[target]
        rec.steps, rec.examples = step, step * self.batch_size
        if step:
            rec.previous_probe, rec.previous_probe_loss = self._probed, self._probed_loss
            if step - self._probed == self.k:  # P + K is this very step
                rec.previous_window_loss = value
            elif step - self._probed < self.k:
                self._previous_ends[target] = self._probed + self.k
        rec.probe_loss, rec.estimate = value, self.estimate if step else None  # no minibatch seen at step 0
        self._windows[target] = [step + w * self.k for w in range(1, self.windows + 1)]
        return {"event": "target", "step": step, **vars(rec)}

    def _schedule(self, step: int, value: float) -> None:
        """Pick the next probe: sparse while the next target is far, every ``probe_min_gap`` examples (at least every
        step) once it is ``probe_reach`` steps away at the latest rate of descent (the module's docstring says why)."""
        last_step, last_value = self._last
        self._last = (step, value)
        pending = [t for t, r in self.records.items() if not r.reached]  # pending[0]: the highest not reached
        if self._close:
            self._close.append((step, value))
            far = self._far(pending[0]) if len(self._close) > 2 * self.probe_reach else 0.0
            if not far:
                self._gap, self._next_probe = self._min_gap, step + self._min_gap
                return
            # noise made the target look near: a line through the close probes says how far it is; sparse again,
            # and the next probe judges the distance by that line's rate, not by one noisy pair of probes
            self._close, self._fitted = [], True
            steps_to = far
        else:
            measured = (last_value - value) / (step - last_step)
            if self._fitted:  # the first pair after close probes: the fitted rate stands
                rate, self._fitted = self._rate, False
            else:
                # a fall that speeds up (the end of a plateau) is assumed to speed up as much again before the next
                # probe; a rise is noise and says nothing of the trend: the latest fall stands
                rate = measured * max(1.0, measured / self._rate) if self._rate > 0 else measured
                rate = rate if measured > 0 else self._rate
                if measured > 0:
                    self._rate = measured
            steps_to = (value - pending[0]) / rate if pending and rate > 0 else math.inf
            if steps_to <= self.probe_reach:
                self._close = [(step, value)]  # until it is crossed: one noisy probe must not send the next far
                self._gap, self._next_probe = self._min_gap, step + self._min_gap
                return
        # doubling, capped by the run so far (a fall after a plateau) and by half the predicted steps to go (loss
        # curves flatten, so a straight line through the last two probes predicts too few steps)
        gap = min(self._max_gap, 2 * self._gap, max(self._min_gap, step // 8))
        if steps_to < math.inf:
            gap = min(gap, int(0.5 * steps_to))
        if steps_to <= 16 * self.probe_reach:
            # near a target, noise can dip below it early: probes no more than K steps apart make sure that the
            # probe before S is at most K steps before it, as loss_drop_at_target needs
            gap = min(gap, self.k)
        self._gap = max(self._min_gap, gap)
        self._next_probe = step + self._gap

    def _at_target(self, rec: TargetRecord, after_k: float) -> float | None:
        """The drop of the K-step window that starts at the target's level (the module's docstring), or None where
        the probe before S came more than K steps before it."""
        if rec.previous_window_loss is None:
            return None
        f = (rec.previous_probe_loss - rec.target) / (rec.previous_probe_loss - rec.probe_loss)
        return rec.target - ((1 - f) * rec.previous_window_loss + f * after_k)

    def _far(self, target: float) -> float:
        """The steps to ``target`` (inf: never) if the close probes so far, fitted by a straight line, put it
        more than ``probe_reach`` steps away, else 0: a rate measured on many probes, which one noisy pair is not."""
        n = len(self._close)
        mean_s = sum(s for s, _ in self._close) / n
        mean_v = sum(v for _, v in self._close) / n
        slope = (sum((s - mean_s) * (v - mean_v) for s, v in self._close)
                 / sum((s - mean_s) ** 2 for s, _ in self._close))
        at = mean_v + slope * (self._close[-1][0] - mean_s)  # the fitted loss now
        steps_to = math.inf if slope >= 0 else (at - target) / -slope
        if steps_to <= self.probe_reach:
            return 0.0
        self._rate = max(0.0, -slope)
        return steps_to

    def _diverge(self, step: int, loss: float, reason: str) -> list[dict]:
        self.status = DIVERGED
        self._windows.clear()
        self._previous_ends.clear()
        return [{"event": "diverged", "step": step, "loss": loss if math.isfinite(loss) else str(loss),
                 "reason": reason}]

    def state_dict(self) -> dict:
        """Everything the next ``update`` depends on, as numbers, strings, lists and dicts: a checkpoint holds it and
        is read back with ``torch.load(weights_only=True)``, so nothing in a store is ever unpickled."""
        state = copy.deepcopy(vars(self))
        state["records"] = {t: asdict(r) for t, r in self.records.items()}
        return state

    @classmethod
    def from_state(cls, state: dict) -> "TargetTracker":
        """The tracker ``state_dict`` described. Raises (KeyError, TypeError, ValueError) on a state that is not one:
        the caller treats it as a corrupt checkpoint."""
        needed = set(vars(cls(targets=[1.0], k=1, batch_size=1, initial_loss=2.0)))  # what every tracker sets
        known = needed | {f.name for f in fields(cls)}  # and fields that keep their class default until updated
        if not needed <= set(state) <= known:
            raise ValueError(f"not a tracker's state: lacks {sorted(needed - set(state))}, has unknown "
                             f"{sorted(set(state) - known)}")
        tracker = cls.__new__(cls)
        vars(tracker).update(copy.deepcopy(state))
        tracker.records = {float(t): TargetRecord(**r) for t, r in state["records"].items()}
        tracker._windows = {float(t): [int(e) for e in ends] for t, ends in state["_windows"].items()}
        tracker._previous_ends = {float(t): int(e) for t, e in state["_previous_ends"].items()}
        tracker._close = [tuple(p) for p in state["_close"]]
        tracker._last, tracker._best = tuple(state["_last"]), tuple(state["_best"])
        return tracker

    def summary(self) -> list[dict]:
        """One dict per target, highest target first, for summary.json."""
        return [{**vars(r), "reached": r.reached, "measured": r.measured} for r in self.records.values()]
