"""Ground truth: a noisy quadratic whose per-example gradients are Gaussian with known mu, sigma and H, whose
theory has closed forms (paper section 1: Eq 1, 9, 14, 16; they are in ``surge_repro.analysis.ground_truth``).

The loss, with theta the model's ``dim`` parameters (the optimum is at 0) and H = (1 - rho) I + rho 11^T:

    loss of example i = 0.5 theta^T H theta + sigma (z_i . theta),   z_i ~ N(0, I_dim)   (z_i: the example)

* Per-example gradient g_i = H theta + sigma z_i: Theorem 2's model exactly (Gaussian, independent coordinates,
  mean mu = H theta). sigma = ``noise`` * |mean_k (H theta)_k| is a function of the state held fixed within a step
  (``detach``: a noise oracle), so on the all-ones ray mu_k / sigma_k = 1 / noise for every k.
* H is dense: Eq 14's B_noise comes only from H's off-diagonal terms (a diagonal H has none, and no surge). With
  every coordinate alike, Eq 14 reads B_noise = pi noise^2 / (2 rho (dim - 1)) and Eq 9 has a scalar closed form
  (``analysis.ground_truth.ray_truth``; ``tests/test_ground_truth.py`` checks both against
  ``surge_repro.analysis.theory`` on a dense H).
* Examples are generated, not stored: example i's noise row is drawn from a generator seeded by (``data_seed``,
  i), so it is the same row whenever and wherever it is taken, in ``size`` rows that epochs permute like any
  dataset's. Only the rows a step takes are made (``dim`` floats each): dim can be large.
* The probe is one zero-noise row: the protocol's "training loss" is the exact 0.5 theta^T H theta.

How the ground truth is measured (``conf/experiment/ground_truth_sign.yaml``, ``ground_truth_sgd.yaml``): every run
starts at theta = 1 (the model's ``init``), and the target sits at or above that initial loss, so the protocol
reaches it at S = 0 and its K = 1 step is one update from that known state: Lemma 1's setting, where Eq 9 is exact
for sign descent and Eq 1 for SGD (the loss is exactly quadratic). Why not train to a lower target first: sign
descent random-walks along the dim - 1 low-curvature directions, and at the crossing one step can drop half the
ray's loss, so each run's state at the target differs with its LR (and the crossing overshoot biases larger LRs).
A simulation of that protocol (dim 64, rho 0.5) found optima at 0.25-0.5 of Eq 9's LR and Eq 22's B_noise = 26 for a
true 16: the protocol then measures the path, not the theory. Starting at the state the truth is known at
removes the path and keeps every other part of the pipeline.

How big it must be. The optimum per batch size is the ratio of two seed means, and its relative noise is about
sqrt(rho B_noise / (B n)) for n seeds: dim does not enter, rho does. Eq 14's erf linearisation needs rho (dim - 1)
>> 1 (the exact Eq 9 peak sits 1 + O(1 / (rho dim)) above Eq 14's), so a small rho needs a large dim: rho (dim - 1)
= 49 with dim 131072 puts the error of the fitted B_noise at a few % with 16 seeds (a simulation of the argmax on
the experiment's LR lattice: bias +4%, sd 3%).

Run: ``python run.py -m +experiment=ground_truth_sign``, then ``python reports/ground_truth.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from surge_repro.tasks import TensorTask

_SEED_STRIDE = 1_000_003  # example i of data_seed d is drawn from generator seed d * stride + i (size < stride)


@dataclass
class QuadraticTask(TensorTask):
    """``labels`` are the example indices (``inputs`` too: nothing is stored); ``take`` makes the noise rows."""

    dim: int = 64
    rho: float = 0.5
    noise: float = 1.0
    data_seed: int = 0

    def to(self, device):
        return replace(self, inputs=self.inputs.to(device), labels=self.labels.to(device))

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # a packed run takes the same rows for every LR of a seed: make each distinct row once
        rows, inverse = torch.unique(index, return_inverse=True)
        gen = torch.Generator()
        noise = torch.empty(len(rows), self.dim)
        for k, i in enumerate(rows.tolist()):
            gen.manual_seed(self.data_seed * _SEED_STRIDE + i)
            torch.randn(self.dim, generator=gen, out=noise[k])
        return noise.to(index.device)[inverse], index

    def probe(self, size: int, seed: int):
        # One zero-noise row: the probe loss is the exact loss, for every point alike (size and seed are moot).
        return (torch.zeros(1, self.dim, device=self.labels.device),
                torch.zeros(1, dtype=torch.long, device=self.labels.device))

    def loss(self, model, batch) -> torch.Tensor:
        z, _ = batch
        projection, theta = model(z)  # z_i . theta per example, and theta
        total = theta.sum()
        quad = 0.5 * ((1 - self.rho) * theta.square().sum() + self.rho * total.square())
        mu_mean = (1 - self.rho) * theta.mean() + self.rho * total  # mean_k (H theta)_k
        sigma = (self.noise * mu_mean.abs()).detach()
        return quad + sigma * projection.mean()


def noisy_quadratic(*, name: str = "noisy_quadratic", dim: int = 64, rho: float = 0.5, noise: float = 17.9,
                    size: int = 65536, data_seed: int = 0, batch_unit: str = "examples") -> QuadraticTask:
    if not 0 <= rho < 1:
        raise ValueError(f"task {name}: rho={rho} must be in [0, 1) for H = (1-rho) I + rho 11^T to be positive "
                         f"definite. Fix: task.rho=0.5")
    if not 0 < size < _SEED_STRIDE or dim < 2 or noise <= 0:
        raise ValueError(f"task {name}: need 0 < size < {_SEED_STRIDE}, dim >= 2 and noise > 0 (got size={size}, "
                         f"dim={dim}, noise={noise}). Fix: task.size=65536 task.dim=64 task.noise=17.9")
    index = torch.arange(size)
    return QuadraticTask(name, index, index, batch_unit=batch_unit, dim=dim, rho=rho, noise=noise,
                         data_seed=data_seed)
