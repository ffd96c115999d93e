"""The paper's measurement protocol for one run: targets, S and E, the loss drop over K extra steps, divergence.

Paper section 3.1 (``../shared/paper.md`` section 2.1): every run trains from scratch at a constant LR until its
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
  So the probe decides crossings, and is evaluated sparsely: the gap between probes doubles from ``probe.min_gap`` to
  ``probe.every`` examples while the next target is far, and shrinks to 3/4 of the steps that the latest rate of
  descent predicts to it as it nears. S overshoots the crossing by at most the last gap, and a few dozen probes per
  run cost a few percent of its steps.
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
    window_losses: list[float] = field(default_factory=list)  # probe loss at S + K, S + 2K, ... (``windows`` of them)
    loss_drop_mean: float | None = None  # mean drop per window over all windows: (loss at S - at S + WK) / W
    # McCandlish's B_simple at S and its parts (``surge_repro.noise_scale``), set by the training loop, which sees
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
    probe_min_gap: int = 8  # examples: the closest probes come while closing in on a target
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
        self._best = (self.initial_loss, 0)  # lowest probe loss so far, and the examples seen when it came
        self.start_events = [self._cross(0, self.initial_loss, t) for t in self.targets if self.initial_loss <= t]

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def needs_probe(self, step: int) -> bool:
        """Whether ``update(step, ...)`` will call its probe (a packed run probes all such points at once)."""
        return step == self._next_probe or any(step == ends[0] for ends in self._windows.values())

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
            for target, ends in list(self._windows.items()):
                if step == ends[0]:
                    rec = self.records[target]
                    rec.window_losses.append(value)
                    if len(rec.window_losses) == 1:  # the paper's measure: the first window
                        rec.probe_loss_after_k, rec.estimate_after_k = value, self.estimate
                        rec.loss_drop = rec.probe_loss - value
                    ends.pop(0)
                    if not ends:
                        rec.loss_drop_mean = (rec.probe_loss - value) / self.windows
                        del self._windows[target]
                    events.append({"event": "after_k", "step": step, "window": len(rec.window_losses), **vars(rec)})
            for target, rec in self.records.items():
                if not rec.reached and value <= target:
                    events.append(self._cross(step, value, target))
            if value < self._best[0] * (1 - 1e-3):
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
        rec.probe_loss, rec.estimate = value, self.estimate if step else None  # no minibatch seen at step 0
        self._windows[target] = [step + w * self.k for w in range(1, self.windows + 1)]
        return {"event": "target", "step": step, **vars(rec)}

    def _schedule(self, step: int, value: float) -> None:
        """Pick the next probe. The gap doubles from ``probe.min_gap`` up to ``probe.every`` while the loss is far
        from the next target, and shrinks to 3/4 of the steps that the latest rate of descent predicts to it."""
        last_step, last_value = self._last
        rate = (last_value - value) / (step - last_step)
        self._last = (step, value)
        gap = min(self._max_gap, 2 * self._gap)
        pending = [t for t, r in self.records.items() if not r.reached]
        if pending and rate > 0:  # pending[0] is the highest target not yet reached
            # loss curves flatten, so a straight line from the last two probes reaches the target early: aiming 3/4
            # of the way there lands short of the crossing and closes in on it; the last jump goes all the way
            steps_to = (value - pending[0]) / rate
            gap = min(gap, math.ceil(steps_to - 1e-6) if steps_to <= 2 * self._min_gap else int(0.75 * steps_to))
        self._gap = max(self._min_gap, gap)
        self._next_probe = step + self._gap

    def _diverge(self, step: int, loss: float, reason: str) -> list[dict]:
        self.status = DIVERGED
        self._windows.clear()
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
        tracker._last, tracker._best = tuple(state["_last"]), tuple(state["_best"])
        return tracker

    def summary(self) -> list[dict]:
        """One dict per target, highest target first, for summary.json."""
        return [{**vars(r), "reached": r.reached, "measured": r.measured} for r in self.records.values()]
