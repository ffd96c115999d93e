"""McCandlish's simple noise scale B_simple = tr(Sigma) / |G|^2, measured during training at almost no cost.

McCandlish et al. 2018 (App. A.1) estimate it from gradient norms at two batch sizes: with G_b the mean gradient of
b examples, E|G_b|^2 = |G|^2 + tr(Sigma) / b. Here the two sizes are the two halves of each measured minibatch and
the whole of it: the step computes the gradients G_1, G_2 of its halves (b_1 + b_2 = B examples) and takes their
weighted mean (b_1 G_1 + b_2 G_2) / B, which is the minibatch gradient itself (every task's loss is a mean over
examples), so the training is the same up to float rounding and the measurement costs two half-size passes
instead of one. From them, unbiased per measurement:

    tr(Sigma) = |G_1 - G_2|^2 / (1/b_1 + 1/b_2),      |G|^2 = |G_B|^2 - tr(Sigma) / B

and, as McCandlish does, each is smoothed by its own moving average (bias-corrected like Adam's moments, Eq 25)
before the ratio is taken: one measurement's |G|^2 is noisy and often negative at B << B_simple.

Where: ``engines.train_step`` and ``engines.Pack.train_step`` split the batch (``measured_step_gradients``) when
``NoiseScale.due``; ``PointRun``
keeps one ``NoiseScale`` per point, logs B_simple in metrics.jsonl and records it at each target crossing, so
``store.load_grid`` has a ``b_simple`` column and every report shows it beside Eq 22's B_noise and the observed peak.

Not measured: at B = 1 (no halves) and for models with BatchNorm (halves would change the batch statistics of the
step, so training would not be the same). Config: ``noise_scale.every`` (steps between measurements; 0 turns it
off) and ``noise_scale.ema`` (the moving averages' time constant, in measurements). Why not every step: on a GPU,
small-batch steps are bound by kernel launches, which halves double; every 8th step costs at most 1/8 there, and
nothing measurable on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class NoiseScale:
    """The moving averages of one point's tr(Sigma) and |G|^2 estimates."""

    batch_size: int
    every: int = 8
    ema: float = 16.0  # time constant in measurements
    measurements: int = 0
    _trace: float = field(default=0.0, repr=False)
    _grad_sq: float = field(default=0.0, repr=False)
    _decay: float = field(default=1.0, repr=False)

    @property
    def active(self) -> bool:
        return self.every > 0 and self.batch_size >= 2

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) measures."""
        return self.active and step % self.every == 0

    def add(self, diff_sq: float, full_sq: float, halves: tuple[int, int]) -> None:
        """One measurement: |G_1 - G_2|^2, |G_B|^2 and the halves' sizes (b_1, b_2)."""
        b1, b2 = halves
        trace = diff_sq / (1 / b1 + 1 / b2)
        grad_sq = full_sq - trace / (b1 + b2)
        alpha = min(1.0, 1 / self.ema)
        self._trace = (1 - alpha) * self._trace + alpha * trace
        self._grad_sq = (1 - alpha) * self._grad_sq + alpha * grad_sq
        self._decay *= 1 - alpha
        self.measurements += 1

    @property
    def trace(self) -> float:
        """tr(Sigma), per example (the moving average, bias-corrected); NaN before the first measurement."""
        return self._trace / (1 - self._decay) if self.measurements else math.nan

    @property
    def grad_sq(self) -> float:
        return self._grad_sq / (1 - self._decay) if self.measurements else math.nan

    @property
    def value(self) -> float:
        """B_simple in the task's batch units; NaN until measured or while |G|^2's average is not > 0."""
        g = self.grad_sq
        return self.trace / g if g > 0 else math.nan

    def state_dict(self) -> dict:
        """Its numbers, for a checkpoint (plain floats and ints: loaded with ``weights_only=True``)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "NoiseScale":
        return cls(**state)

    def record(self) -> dict:
        """What a target crossing keeps (JSON-ready: NaN becomes None)."""
        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"b_simple": clean(self.value), "noise_trace": clean(self.trace), "grad_sq": clean(self.grad_sq),
                "noise_measurements": self.measurements}


def measured_step_gradients(loss_fn, params: list[torch.Tensor], batch: tuple, dim: int = 0, points: bool = False):
    """The gradient of a minibatch taken as the weighted mean of its two halves' gradients, with the measurement.

    ``loss_fn(part)`` is the loss of a part of ``batch`` (split along ``dim``): a scalar, or one per point when
    ``points`` (a packed run: each point's gradient is that of its own loss). Returns (the minibatch loss, the
    gradients in the order of ``params``, |G_1 - G_2|^2, |G_B|^2, the halves' sizes); see ``combine``."""
    losses, grads = [], []
    first, second, sizes = halves(batch, dim)
    for part in (first, second):
        loss = loss_fn(part)
        found = torch.autograd.grad(loss.sum(), params, allow_unused=True)
        grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, found)])
        losses.append(loss.detach())
    full, diff_sq, full_sq = combine(*grads, sizes, points)
    return (sizes[0] * losses[0] + sizes[1] * losses[1]) / sum(sizes), full, diff_sq, full_sq, sizes


def halves(batch: tuple, dim: int = 0) -> tuple[tuple, tuple, tuple[int, int]]:
    """The batch's two halves along ``dim`` (the examples: 0 for one point, 1 for a packed points x B batch)."""
    size = batch[0].shape[dim]
    b1 = size // 2
    first = tuple(t.narrow(dim, 0, b1) for t in batch)
    second = tuple(t.narrow(dim, b1, size - b1) for t in batch)
    return first, second, (b1, size - b1)


def combine(g1: list[torch.Tensor], g2: list[torch.Tensor], sizes: tuple[int, int], points: bool = False):
    """The minibatch gradient (b_1 G_1 + b_2 G_2) / B per tensor, and |G_1 - G_2|^2 and |G_B|^2 in float64: scalars,
    or per point (the leading axis) when ``points``."""
    b1, b2 = sizes
    w1, w2 = b1 / (b1 + b2), b2 / (b1 + b2)
    # contiguous: autograd.grad can hand back a transposed layout (a vmapped linear layer's weight does), and torch's
    # fused Adam on the CPU then updates the wrong elements (a gradient must have its parameter's strides)
    full = [(w1 * a + w2 * b).contiguous() for a, b in zip(g1, g2)]

    def sq(ts):
        if points:
            return sum(t.double().flatten(1).square().sum(1) for t in ts)
        return sum(t.double().square().sum() for t in ts)

    return full, sq([a - b for a, b in zip(g1, g2)]), sq(full)
