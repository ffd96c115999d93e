"""Ground truth: a noisy quadratic whose per-example gradients are Gaussian with known mu, sigma and H, and the
closed forms of the theory for it (paper section 1, ``../shared/paper.md``: Eq 1, 9, 14, 16).

Construction (``noisy_quadratic``), with delta = theta (the optimum is at 0):

* H = (1 - rho) I + rho 11^T in ``dim`` dimensions: a dense Hessian. Eq 14's B_noise comes only from H's
  off-diagonal terms (a diagonal H has B_noise = inf, no surge), so they must be there. Its top eigenvector is
  the all-ones direction (eigenvalue lam = 1 - rho + rho dim); the rest have eigenvalue 1 - rho.
* Per-example gradient g_i = H delta + sigma z_i, z_i ~ N(0, I) independent per coordinate, with
  sigma = ``noise`` * |mean_k (H delta)_k|: the noise scales with the mean gradient, so on the all-ones ray
  mu_k / sigma_k = 1 / noise for every k at every loss, and Eq 14's B_noise is the same number all along the ray:
      B_noise = pi noise^2 / (2 rho (dim - 1))                                            (Eq 14 on the ray)
  (off the ray it moves only by a factor 1 + O(cv(mu)^2 / dim): ``eq14_b_noise`` evaluates it anywhere).
  The loss of example i is 0.5 delta^T H delta + sigma.detach() (z_i . delta): sigma is a function of the state
  held fixed within a step (a state-dependent noise oracle), so autograd returns exactly g_i.
* The examples are a fixed pool of ``size`` noise rows, centred so that their mean is exactly 0: the full-batch
  gradient is exactly H delta. ``take(index)`` addresses them like ``TensorTask`` (packed runs work).
* The probe is one zero-noise row: the protocol's "training loss" is the exact loss 0.5 delta^T H delta.

Status (what this workload showed; see ``tests/test_ground_truth.py``): the closed forms and the oracle are tested.
The end-to-end recovery of B_noise through the protocol is NOT achieved with this construction: sign descent
random-walks along the dim - 1 low-curvature directions (eigenvalue 1 - rho, restoring ~P times slower than the ray
converges), so at the target most of the loss sits off the ray, and one step drops a large share of the ray's loss
near B_noise (fraction ~ x / (1 + x), x = B / B_noise), so the crossing overshoots the target. A standalone
simulation of the protocol (dim 64, rho 0.5, noise 17.9: B_noise = 16; K = 1, 64 seeds) found the optimum at
0.25-0.5 of Eq 9's LR with no clear peak, and Eq 22 gave 26 instead of 16.

Run a grid: ``python run.py -m +experiment=ground_truth_sign`` (and ``ground_truth_sgd``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from surge_repro.tasks import TensorTask


@dataclass
class QuadraticTask(TensorTask):
    """``inputs`` are the pool's noise rows (N x dim), ``labels`` a dummy; ``rho`` and ``noise`` define the loss."""

    rho: float = 0.5
    noise: float = 1.0

    def to(self, device):
        return replace(self, inputs=self.inputs.to(device), labels=self.labels.to(device))

    def probe(self, size: int, seed: int):
        # One zero-noise row: the probe loss is the exact loss, for every point alike (size and seed are moot).
        dim = self.inputs.shape[1]
        return (torch.zeros(1, dim, device=self.inputs.device),
                torch.zeros(1, dtype=torch.long, device=self.labels.device))

    def loss(self, model, batch) -> torch.Tensor:
        z, _ = batch
        delta = model(z)  # batch x dim, theta repeated
        total = delta.sum(-1, keepdim=True)
        quad = 0.5 * ((1 - self.rho) * delta.square().sum(-1) + self.rho * total.squeeze(-1).square())
        mu = (1 - self.rho) * delta + self.rho * total  # H delta
        sigma = (self.noise * mu.mean(-1).abs()).detach()
        return (quad + sigma * (z * delta).sum(-1)).mean()


def noisy_quadratic(*, name: str = "noisy_quadratic", dim: int = 64, rho: float = 0.5, noise: float = 17.9,
                    size: int = 65536, data_seed: int = 0, batch_unit: str = "examples") -> QuadraticTask:
    if not 0 <= rho < 1:
        raise ValueError(f"task {name}: rho={rho} must be in [0, 1) for H = (1-rho) I + rho 11^T to be positive "
                         f"definite. Fix: task.rho=0.5")
    gen = torch.Generator().manual_seed(data_seed)
    z = torch.randn(size, dim, generator=gen, dtype=torch.float64)
    z = (z - z.mean(0)).float()  # a pool of mean exactly 0: the full-batch gradient is H delta, unbiased
    return QuadraticTask(name, z, torch.zeros(size, dtype=torch.long), batch_unit=batch_unit, rho=rho, noise=noise)


# Closed forms ---------------------------------------------------------------------------------------------------

def hessian(dim: int, rho: float) -> np.ndarray:
    return (1 - rho) * np.eye(dim) + rho * np.ones((dim, dim))


def oracle(delta, rho: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma of the per-example gradient at ``delta`` (Theorem 2's N(mu_i, sigma_i^2))."""
    delta = np.asarray(delta, float)
    mu = (1 - rho) * delta + rho * delta.sum()
    return mu, np.full_like(mu, noise * abs(mu.mean()))


def eq14_b_noise(mu, sigma, h) -> float:
    """Eq 14: B_noise = pi sum_i H_ii / (2 sum_{i != j} (mu_i mu_j / (sigma_i sigma_j)) H_ij)."""
    r = np.asarray(mu, float) / np.asarray(sigma, float)
    h = np.asarray(h, float)
    off = r @ h @ r - np.sum(np.diag(h) * r * r)
    return math.pi * np.trace(h) / (2 * off)


def ray_b_noise(dim: int, rho: float, noise: float) -> float:
    """Eq 14 on the all-ones ray, where mu_k / sigma_k = 1 / noise: pi noise^2 / (2 rho (dim - 1))."""
    return math.pi * noise ** 2 / (2 * rho * (dim - 1))


def eq9_sign_lr(batch_size, mu, sigma, h) -> np.ndarray:
    """Eq 9 (Theorem 2, exact erf of Eq 10): the one-step optimal LR of sign descent at batch size B."""
    erf = np.vectorize(math.erf)  # scipy is not a dependency of this package
    b = np.atleast_1d(np.asarray(batch_size, float))
    mu, sigma, h = np.asarray(mu, float), np.asarray(sigma, float), np.asarray(h, float)
    e = erf(np.sqrt(b[:, None] / 2) * mu / sigma)  # B x dim: E[sign] per coordinate (Eq 32, 34)
    num = e @ mu
    den = (1 - e ** 2) @ np.diag(h) + np.einsum("bi,ij,bj->b", e, h, e)  # sum (1 - E_i^2) H_ii + sum E_i E_j H_ij
    return num / den


def eq1_sgd(mu, sigma, h) -> dict:
    """McCandlish (paper Eq 1): eps_max = |G|^2 / G^T H G and B_noise = tr(H Sigma) / G^T H G, Sigma diagonal."""
    mu, sigma, h = np.asarray(mu, float), np.asarray(sigma, float), np.asarray(h, float)
    ghg = mu @ h @ mu
    return {"eps_max": float(mu @ mu / ghg), "b_noise": float(np.sum(np.diag(h) * sigma ** 2) / ghg)}
