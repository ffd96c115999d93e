"""The laws the paper compares, as plain functions of the batch size B (numpy arrays or floats).

All share B_noise; each has its own eps_max (the largest optimal LR it allows).

- ``sgd_lr``:   eps_opt(B) = eps_max / (1 + B_noise / B)                       (Eq 1, McCandlish et al. 2018)
- ``alpha_lr``: eps_opt(B) = eps_max / (1 + B_noise / B) ** alpha              (Eq 24: alpha = 1 is "SGD",
                                                                                 alpha = 0.5 McCandlish's Adam guess)
- ``adam_lr``:  eps_opt(B) = eps_max / (0.5 * (sqrt(B_noise/B) + sqrt(B/B_noise)))   (Eq 2 = Eq 13, the surge)

The surge curve peaks at B = B_noise with height eps_max (Eq 15) and is symmetric in log B about it. ``LAWS`` maps the
names used in fits, JSON and legends to (function, alpha).

Below them, sign descent under Gaussian per-coordinate gradients, from (mu_i, sigma_i, H) (Fig. 1, panel b):

- ``sign_mean``: E[sign] = erf(sqrt(B/2) mu_i/sigma_i) (Eq 10, Eq 32), or Eq 10's approximation;
- ``sign_lr``: the exact optimal LR of Theorem 2 (Eq 9); ``sign_lr_small_batch``: its linearisation (Eq 13, Eq 39);
- ``surge_parameters``: B_noise (Eq 14), eps_max (Eq 16) and Theorem 3's regime bound (``theorem3_bound``);
- ``sign_lr_limit``: Theorem 4's B -> inf limit (Eq 17);
- ``su_lr``, ``su_parameters``, ``su_kappa2``: Su's mean-field variant (J. Su, https://spaces.ac.cn/archives/10542);
- ``curve_extrema``, ``refine_peak``: the peak and trough of a sampled curve.
"""

from __future__ import annotations

import numpy as np


def alpha_lr(batch_size, eps_max: float, b_noise: float, alpha: float):
    """Eq 24: eps_max / (1 + B_noise / B) ** alpha."""
    b = np.asarray(batch_size, dtype=float)
    return eps_max / (1.0 + b_noise / b) ** alpha


def sgd_lr(batch_size, eps_max: float, b_noise: float):
    """Eq 1: eps_max / (1 + B_noise / B), rising with B and saturating at eps_max."""
    return alpha_lr(batch_size, eps_max, b_noise, 1.0)


def adam_lr(batch_size, eps_max: float, b_noise: float):
    """Eq 2: eps_max / (0.5 * (sqrt(B_noise / B) + sqrt(B / B_noise))): rises like sqrt(B), peaks at B_noise, falls."""
    b = np.asarray(batch_size, dtype=float)
    return eps_max / (0.5 * (np.sqrt(b_noise / b) + np.sqrt(b / b_noise)))


LAWS = {
    "adam": ("Adam surge (Eq 2)", adam_lr),
    "sgd_alpha1": ("SGD, alpha=1 (Eq 24)", sgd_lr),
    "sgd_alpha0.5": ("SGD, alpha=0.5 (Eq 24)", lambda b, eps_max, b_noise: alpha_lr(b, eps_max, b_noise, 0.5)),
}


def law_shape(name: str, batch_size, b_noise: float):
    """The law with eps_max = 1: eps_opt(B) / eps_max."""
    return LAWS[name][1](batch_size, 1.0, b_noise)


# ---------------------------------------------------------------------------------------------------------------
# Sign descent under Gaussian per-coordinate gradients (Theorems 2-4), and Su's mean-field variant.
#
# The inputs describe one point of training: per-coordinate mean gradients mu_i and per-example standard deviations
# sigma_i (G_est,i ~ N(mu_i, sigma_i^2 / B), Eq 34) and the Hessian H, as an (n, n) matrix or, for a diagonal H, as
# its (n,) diagonal. A diagonal H is allowed but has no surge: Eq 14's denominator is the off-diagonal sum, so
# B_noise = inf and Eq 9 rises monotonically (Theorem 3). cov(sign) is taken diagonal, as
# the paper does (Eq 36). Batch sizes may be arrays; each function returns an array over them.
# ---------------------------------------------------------------------------------------------------------------

def _erf(x) -> np.ndarray:
    """erf elementwise in float64, by torch (a dependency already; scipy is not)."""
    import torch

    return torch.special.erf(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


def _problem(mu, sigma, h) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, H as a full matrix), checked: sigma > 0, matching sizes, a symmetric H."""
    mu, sigma = np.asarray(mu, float).ravel(), np.asarray(sigma, float).ravel()
    h = np.asarray(h, float)
    h = np.diag(h) if h.ndim == 1 else h
    n = len(mu)
    if sigma.shape != (n,) or h.shape != (n, n):
        raise ValueError(f"mu has {n} coordinates, sigma {sigma.shape}, H {h.shape}: give mu and sigma of length n "
                         f"and H as (n, n) or its diagonal (n,)")
    if not np.all(sigma > 0):
        raise ValueError("every sigma_i must be > 0 (the per-example gradient of each coordinate must be noisy)")
    if not np.allclose(h, h.T):
        raise ValueError("H must be symmetric")
    return mu, sigma, h


def _batch(batch_size) -> np.ndarray:
    b = np.atleast_1d(np.asarray(batch_size, float))
    if not np.all(b > 0):
        raise ValueError("batch sizes must be > 0")
    return b


def sign_mean(batch_size, mu, sigma, approx: bool = False) -> np.ndarray:
    """Eq 10 (= Eq 32 with sigma^2 / B): E[sign G_est,i] = erf(sqrt(B/2) mu_i / sigma_i), shape (n_B, n).

    ``approx``: Eq 10's right-hand side (mu_i/sigma_i) / sqrt(pi/(2B) + (mu_i/sigma_i)^2), exact in both limits.
    """
    b = _batch(batch_size)[:, None]
    r = np.asarray(mu, float).ravel() / np.asarray(sigma, float).ravel()
    if approx:
        return r / np.sqrt(np.pi / (2 * b) + r ** 2)
    return _erf(np.sqrt(b / 2) * r)


def _eq9(e: np.ndarray, mu: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Eq 9 for given E[sign] rows e (n_B, n): sum_i e_i mu_i / (sum_i (1 - e_i^2) H_ii + e^T H e)."""
    den = ((1 - e ** 2) * np.diag(h)).sum(axis=1) + np.einsum("bi,ij,bj->b", e, h, e)
    return (e * mu).sum(axis=1) / den


def sign_lr(batch_size, mu, sigma, h, approx: bool = False) -> np.ndarray:
    """Eq 9: the optimal LR of sign descent at batch size B, exact in erf (Eq 10) unless ``approx``."""
    mu, sigma, h = _problem(mu, sigma, h)
    return _eq9(sign_mean(batch_size, mu, sigma, approx), mu, h)


def sign_lr_small_batch(batch_size, mu, sigma, h) -> np.ndarray:
    """Eq 13 (= Eq 40): Eq 9 with E[sign] linearised as sqrt(2B/pi) mu_i/sigma_i (Eq 39). Algebraically equal to
    ``adam_lr(B, eps_max, B_noise)`` with ``surge_parameters``' Eq 14 and Eq 16; valid for B << ``theorem3_bound``."""
    mu, sigma, h = _problem(mu, sigma, h)
    e = np.sqrt(2 * _batch(batch_size)[:, None] / np.pi) * (mu / sigma)
    off = np.einsum("bi,ij,bj->b", e, h - np.diag(np.diag(h)), e)  # i != j only: the diagonal terms cancel
    return (e * mu).sum(axis=1) / (np.trace(h) + off)


def surge_parameters(mu, sigma, h) -> dict:
    """Theorem 3's numbers for (mu, sigma, H): B_noise (Eq 14) = B_peak (Eq 15), eps_max (Eq 16), and the bound of
    its regime, B << min_i pi sigma_i^2 / (2 mu_i^2). B_noise and eps_max are inf/NaN where the off-diagonal sum
    sum_{i!=j} (mu_i mu_j / sigma_i sigma_j) H_ij is not > 0 (a diagonal H among them): Eq 2 has no peak then."""
    mu, sigma, h = _problem(mu, sigma, h)
    r = mu / sigma
    off = float(r @ (h - np.diag(np.diag(h))) @ r)  # i != j; subtracting the diagonal afterwards leaves rounding
    diag = float(np.trace(h))
    b_noise = np.pi * diag / (2 * off) if off > 0 and diag > 0 else np.inf
    eps_max = np.sqrt(b_noise / (2 * np.pi)) * float((mu ** 2 / sigma).sum()) / diag if np.isfinite(b_noise) \
        else np.nan
    return {"b_noise": float(b_noise), "eps_max": float(eps_max), "offdiag_sum": off, "trace_h": diag,
            "theorem3_bound": theorem3_bound(mu, sigma)}


def theorem3_bound(mu, sigma) -> float:
    """min_i pi sigma_i^2 / (2 mu_i^2): Theorem 3 (Eq 2) needs B well below it for every coordinate, Theorem 4 (Eq 17)
    well above it (Su's point: the minimum, not a typical value, bounds the regime)."""
    mu, sigma = np.asarray(mu, float).ravel(), np.asarray(sigma, float).ravel()
    with np.errstate(divide="ignore"):
        return float(np.min(np.pi * sigma ** 2 / (2 * mu ** 2)))


def sign_lr_limit(mu, h) -> float:
    """Eq 17 (Theorem 4): the B -> inf limit of Eq 9, sum_i |mu_i| / sum_ij sign(mu_i) sign(mu_j) H_ij (every mu_i
    must be non-zero for Eq 42's E[sign] -> sign(mu_i))."""
    mu = np.asarray(mu, float).ravel()
    h = np.asarray(h, float)
    h = np.diag(h) if h.ndim == 1 else h
    s = np.sign(mu)
    return float(np.abs(mu).sum() / (s @ h @ s))


def su_kappa2(mu, sigma) -> float:
    """The mean-field kappa^2 this suite uses by default for Su's variant: B_simple = sum sigma_i^2 / sum mu_i^2
    (tr(Sigma) / |G|^2). Su replaces every (sigma_i / mu_i)^2 by one constant and calls it B_simple's analogue; the
    choice of which average is ours."""
    mu, sigma = np.asarray(mu, float).ravel(), np.asarray(sigma, float).ravel()
    return float((sigma ** 2).sum() / (mu ** 2).sum())


def su_lr(batch_size, mu, h, kappa2: float) -> np.ndarray:
    """Su's mean-field optimal LR (J. Su, https://spaces.ac.cn/archives/10542): Eq 9 with
    E[sign]_i = sign(mu_i) beta(B), beta(B) = 1 / sqrt(1 + pi kappa^2 / (2B)), i.e.

        eta*(B) = eta_max / (0.5 (beta_noise / beta + beta / beta_noise))      (``su_parameters``)

    It equals Eq 9 with Eq 10's approximation when every |mu_i| / sigma_i = 1 / kappa. beta < 1 for every B, so it
    surges (peaks, then falls) only if beta_noise < 1; it then tends to Eq 17 from above and never rises again:
    the rise-fall-rise of the exact Eq 9 needs coordinates of different signal-to-noise ratios."""
    mu = np.asarray(mu, float).ravel()
    h = np.asarray(h, float)
    h = np.diag(h) if h.ndim == 1 else h
    beta = 1 / np.sqrt(1 + np.pi * kappa2 / (2 * _batch(batch_size)))
    return _eq9(beta[:, None] * np.sign(mu)[None, :], mu, h)


def su_parameters(mu, h, kappa2: float) -> dict:
    """Su's beta_noise = sqrt(sum_i H_ii / sum_{i!=j} sign(mu_i mu_j) H_ij), eta_max, whether a surge exists
    (beta_noise < 1), its peak B_noise = pi kappa^2 beta_noise^2 / (2 (1 - beta_noise^2)) and the balance point of
    speed and data B_noise-2 = pi kappa^2 beta_noise^2 / (2 (1 + beta_noise^2)): 1/B_noise-2 - 1/B_noise = 4/(pi
    kappa^2), so in Su's variant the LR peak and the S-E balance point differ."""
    mu = np.asarray(mu, float).ravel()
    h = np.asarray(h, float)
    h = np.diag(h) if h.ndim == 1 else h
    s = np.sign(mu)
    diag, off = float(np.trace(h)), float(s @ (h - np.diag(np.diag(h))) @ s)
    beta_noise = float(np.sqrt(diag / off)) if off > 0 else np.inf
    surge = beta_noise < 1
    b2 = beta_noise ** 2
    return {"kappa2": float(kappa2), "beta_noise": beta_noise, "surge": bool(surge),
            "eta_max": float(np.abs(mu).sum() / (2 * np.sqrt(diag * off))) if off > 0 else np.nan,
            "b_peak": float(np.pi * kappa2 * b2 / (2 * (1 - b2))) if surge else np.inf,
            "b_noise_2": float(np.pi * kappa2 * b2 / (2 * (1 + b2))) if np.isfinite(b2) else np.inf}


def curve_extrema(batch_size, lr) -> dict:
    """The local maxima and minima of a sampled curve lr(B) (interior samples only), in order of B: the exact
    Eq 9 curve rises to a peak, falls to a trough and rises again towards Eq 17 when the coordinates' noise differs."""
    b, y = np.asarray(batch_size, float), np.asarray(lr, float)
    tol = 1e-9 * np.nanmax(np.abs(y))  # rounding on a flat tail (the Eq 17 limit) is no extremum
    inner = np.arange(1, len(y) - 1)
    maxima = inner[(y[inner] > y[inner - 1] + tol) & (y[inner] >= y[inner + 1])]
    minima = inner[(y[inner] < y[inner - 1] - tol) & (y[inner] <= y[inner + 1])]
    return {"maxima": [(float(b[i]), float(y[i])) for i in maxima],
            "minima": [(float(b[i]), float(y[i])) for i in minima]}


def refine_peak(fn, lo: float, hi: float, iters: int = 80) -> tuple[float, float]:
    """Golden-section search in log B for the maximum of a unimodal fn on [lo, hi]: (B, fn(B)). Used to place the
    exact curve's peak between the samples that bracket it."""
    a, c = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    f = lambda x: float(np.asarray(fn(np.exp(x))).ravel()[0])  # noqa: E731
    x1, x2 = c - g * (c - a), a + g * (c - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(iters):
        if f1 > f2:
            c, x2, f2 = x2, x1, f1
            x1 = c - g * (c - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (c - a)
            f2 = f(x2)
    x = (a + c) / 2
    return float(np.exp(x)), f(x)
