"""The ground truth of the noisy quadratic (``surge_repro.tasks.quadratic``): the theory's closed forms on its
all-ones ray (paper section 1: Eq 1, 9, 14, 16, 17), against which ``reports/ground_truth.py`` and
``tests/test_ground_truth.py`` check what the protocol measures; and Eq 22's ground truth on the isotropic quadratic
(``surge_repro.tasks.quadratic.IsotropicQuadraticTask``, derivation there): the exact steps to a target of every
(B, lr) and what Eq 22 fitted to them returns (``eq22_rate``, ``eq22_steps``, ``eq22_truth``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from surge_repro.analysis import theory
from surge_repro.analysis.fit import fit_b_noise

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


# Eq 22 on the isotropic quadratic (theta' = (1 - lr) theta - lr sigma zbar, sigma^2 = noise^2 |theta|^2 / dim) -------

def eq22_rate(batch_size, lr, noise: float):
    """The exact factor of the expected loss per SGD step, r = (1 - lr)^2 + lr^2 noise^2 / B (curvature 1)."""
    b, lr = np.broadcast_arrays(np.asarray(batch_size, float), np.asarray(lr, float))
    return (1 - lr) ** 2 + lr ** 2 * noise ** 2 / b


def eq22_steps(batch_size, lr, noise: float, ratio: float):
    """S: the first step whose expected loss is at or below initial / ``ratio``, ceil(log ratio / -log r); inf where
    the loss does not fall (r >= 1: the run diverges or stalls)."""
    r = eq22_rate(batch_size, lr, noise)
    with np.errstate(divide="ignore"):
        exact = np.log(ratio) / -np.log(r)
    # a hair below an integer is that integer (float rounding), not the next step
    return np.where(r < 1, np.ceil(exact - 1e-9), np.inf)


def eq22_truth(batch_sizes, lrs, noise: float, ratio: float) -> dict:
    """What a perfect measurement of ``conf/experiment/ground_truth_eq22.yaml`` gives: per batch size the LR of the
    lattice ``lrs`` with the fewest steps (the fit's ``steps`` criterion), its S and E = B S, and Eq 22 fitted to
    them (``fit.fit_b_noise``). Beside it, McCandlish's B_noise = noise^2 (exact per step here) and the continuous
    optimum x* = B / (B + noise^2), S* = log ratio / log(1 + B / noise^2), with Eq 22 fitted to that too, and
    McCandlish's S = S_min (1 + B_noise / B) in the small-step limit, S_min = log ratio: the gaps between these and
    the exact S are Eq 22's own error on this workload, not the pipeline's."""
    b, grid = np.asarray(batch_sizes, float), np.asarray(lrs, float)
    steps = eq22_steps(b[:, None], grid[None, :], noise, ratio)
    best = np.argmin(steps, axis=1)
    s_opt = steps[np.arange(len(b)), best]
    unique = (steps == s_opt[:, None]).sum(axis=1) == 1  # a tie has no optimum in the fit
    s_star = np.log(ratio) / np.log1p(b / noise ** 2)
    b22, s_min = fit_b_noise(s_opt, b * s_opt)
    b22_star, s_min_star = fit_b_noise(s_star, b * s_star)
    return {"batch_sizes": b, "lr_opt": grid[best], "steps": s_opt, "examples": b * s_opt, "unique": unique,
            "b_noise": b22, "s_min": s_min, "mccandlish_b_noise": noise ** 2,
            # McCandlish's S_min (1 + B_noise / B) with S_min = log ratio (Delta L_max = L: one step's best fraction)
            "mccandlish_steps": np.log(ratio) * (1 + noise ** 2 / b),
            "lr_star": b / (b + noise ** 2), "steps_star": s_star, "b_noise_star": b22_star, "s_min_star": s_min_star}
