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

Run: ``python run.py -m +experiment=ground_truth_sign`` (or ``ground_truth_sgd``, ``ground_truth_eq22``), then
``python reports/ground_truth.py``.

Eq 22's ground truth (``IsotropicQuadraticTask``, ``conf/experiment/ground_truth_eq22.yaml``): runs that train to a
target, whose speed/data trade-off S(B, lr) is known in closed form. The loss, with H = I (dim coordinates):

    loss of example i = 0.5 |theta|^2 + sigma (z_i . theta),   sigma = noise * |theta| / sqrt(dim)   (detached)

* G = theta, per-example covariance Sigma = sigma^2 I, so McCandlish's B_noise = tr(H Sigma) / G^T H G = noise^2 at
  every state: G, H and Sigma keep their shape along the whole path (all scale with |theta|^2).
* One SGD step at x = lr (lr times the curvature 1): theta' = (1 - x) theta - x sigma zbar, zbar ~ N(0, I / B), so
  E[|theta'|^2 | theta] = r |theta|^2 with r(x, B) = (1 - x)^2 + x^2 noise^2 / B, exactly, in any dim. The loss is
  0.5 |theta|^2: E[L_t] = L_0 r^t, and the protocol's S (the first step at or below a target L_0 / R) is
  ceil(log R / -log r). r is smallest at x* = B / (B + noise^2), where 1 - r = 1 / (1 + B_noise / B): McCandlish's
  per-step Eq 18 with Delta L_max = L, exact at every step; the best constant LR is that same x* at every step.
* Realised, not expected: |theta'|^2 / |theta|^2 has a law that does not depend on theta's direction (z is
  isotropic), so log L_t is a random walk with i.i.d. steps of mean log r - O(1 / dim) and SD O(1 / sqrt(dim)):
  S is the closed form to within a step or two at dim = 1024 (the mean over 5 seeds within one step, measured;
  ``analysis.ground_truth.eq22_truth``).
What this says about Eq 22: McCandlish's S = S_min (1 + B_noise / B) needs many small steps (each step's fraction
1 / (1 + B_noise / B) of the loss small). Here one step can take all of it (Delta L_max = L), and the exact trade-off
is S = log R / log(1 + B / B_noise), not a hyperbola: McCandlish's small-step S = log R (1 + B_noise / B) over-counts
it by (1 + B_noise / B) log(1 + B / B_noise), 12% at B = B_noise / 4, 39% at B_noise, 101% at 4 B_noise; and Eq 22
fitted to it returns 2.8 B_noise on batch sizes B_noise / 4 .. 4 B_noise (44.3 for noise^2 = 16: ``eq22_truth`` on
the experiment's lattice). So the ground truth the pipeline must recover is the closed form's Eq 22 fit; the gap to
noise^2 is Eq 22's own error on this workload, while Eq 1 fitted to the optimal LRs (x* = B / (B + noise^2) is
McCandlish's Eq 1 with eps_max = 1) and B_simple do give noise^2. Why not a workload where the hyperbola is exact:
it needs every step to take a small fraction of the loss with G, H and Sigma keeping their shape, and on a quadratic
a small fraction needs the loss spread over unequal curvatures, which then decay at unequal rates and change the
shape (diagonal power-law spectra with the noise oracle held at a constant B_noise: Eq 22 of the exact expected-loss
S gave 0.47-2.1 x that B_noise, depending on the spectrum, the noise's shape and the target).
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


def _check_shape(name: str, size: int, dim: int, noise: float, fix: str) -> None:
    if not 0 < size < _SEED_STRIDE or dim < 2 or noise <= 0:
        raise ValueError(f"task {name}: need 0 < size < {_SEED_STRIDE}, dim >= 2 and noise > 0 (got size={size}, "
                         f"dim={dim}, noise={noise}). Fix: {fix}")


def noisy_quadratic(*, name: str = "noisy_quadratic", dim: int = 64, rho: float = 0.5, noise: float = 17.9,
                    size: int = 65536, data_seed: int = 0, batch_unit: str = "examples") -> QuadraticTask:
    if not 0 <= rho < 1:
        raise ValueError(f"task {name}: rho={rho} must be in [0, 1) for H = (1-rho) I + rho 11^T to be positive "
                         f"definite. Fix: task.rho=0.5")
    _check_shape(name, size, dim, noise, "task.size=65536 task.dim=64 task.noise=17.9")
    index = torch.arange(size)
    return QuadraticTask(name, index, index, batch_unit=batch_unit, dim=dim, rho=rho, noise=noise,
                         data_seed=data_seed)


@dataclass
class IsotropicQuadraticTask(QuadraticTask):
    """The ground truth of Eq 22 (module docstring): H = I, per-example gradient theta + sigma z_i with sigma =
    ``noise`` |theta| / sqrt(dim), so B_noise = noise^2 along the whole path. ``rho`` is unused (0)."""

    def loss(self, model, batch) -> torch.Tensor:
        z, _ = batch
        projection, theta = model(z)
        sigma = (self.noise * theta.square().mean().sqrt()).detach()  # a noise oracle: a function of the state
        return 0.5 * theta.square().sum() + sigma * projection.mean()


def isotropic_quadratic(*, name: str = "isotropic_quadratic", dim: int = 1024, noise: float = 4.0,
                        size: int = 65536, data_seed: int = 0, batch_unit: str = "examples") -> IsotropicQuadraticTask:
    _check_shape(name, size, dim, noise, "task.size=65536 task.dim=1024 task.noise=4")
    index = torch.arange(size)
    return IsotropicQuadraticTask(name, index, index, batch_unit=batch_unit, dim=dim, rho=0.0, noise=noise,
                                  data_seed=data_seed)
