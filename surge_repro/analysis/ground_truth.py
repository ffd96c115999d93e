"""The ground truth of the noisy quadratic (``surge_repro.tasks.quadratic``): the theory's closed forms on its
all-ones ray (paper section 1: Eq 1, 9, 14, 16, 17), against which ``reports/ground_truth.py`` and
``tests/test_ground_truth.py`` check what the protocol measures.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from surge_repro.analysis import theory

# Closed forms on the all-ones ray (theta = c 1: mu_k = lam c, sigma_k = noise lam c for every k) ------------------

def ray_truth(dim: int, rho: float, noise: float) -> dict:
    """What the theory says at any state on the ray (the numbers do not depend on c, except the LRs' scale, which
    is c: here c = 1). lam = 1 - rho + rho dim is H's top eigenvalue (the ray's); H_kk = 1.

    sign descent: B_noise by Eq 14, eps_max by Eq 16, the peak of the exact Eq 9 (``sign_lr``), the B -> inf limit
    (Eq 17, the Theorem 4 asymptote). SGD: McCandlish's Eq 1, eps_max = |G|^2 / G^T H G = 1 / lam,
    B_noise = tr(H Sigma) / G^T H G = noise^2 / lam."""
    lam = 1 - rho + rho * dim
    b_noise = math.pi * noise ** 2 / (2 * rho * (dim - 1))
    peak, peak_lr = theory.refine_peak(lambda b: sign_lr(b, dim, rho, noise), 1e-3 * b_noise, 1e3 * b_noise, 100)
    return {"lam": lam, "b_noise": b_noise, "eps_max": math.sqrt(b_noise / (2 * math.pi)) * lam / noise,
            "eq9_peak_batch_size": peak, "eq9_peak_lr": peak_lr,
            "eq17_limit": 1.0,  # sum |mu| / 1^T H 1 = dim lam / (dim lam)
            "sgd_eps_max": 1 / lam, "sgd_b_noise": noise ** 2 / lam}


def sign_lr(batch_size, dim: int, rho: float, noise: float):
    """Eq 9 on the ray at theta = 1, with Eq 10's exact erf: e = erf(sqrt(B/2) / noise) for every coordinate, so
    eps_opt = dim e lam / (dim (1 - e^2) + e^2 1^T H 1) = e lam / (1 - e^2 + e^2 lam)."""
    lam = 1 - rho + rho * dim
    e = torch.special.erf(torch.sqrt(torch.as_tensor(batch_size, dtype=torch.float64) / 2) / noise)
    return (e * lam / (1 - e ** 2 + e ** 2 * lam)).numpy()


def sgd_lr(batch_size, dim: int, rho: float, noise: float):
    """Eq 1 on the ray at theta = 1 (``theory.sgd_lr`` with ``ray_truth``'s eps_max and B_noise), exact for SGD on a
    quadratic."""
    lam = 1 - rho + rho * dim
    return theory.sgd_lr(np.asarray(batch_size, float), 1 / lam, noise ** 2 / lam)
