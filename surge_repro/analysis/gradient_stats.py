"""The statistics of the gradient diagnostics (``surge_repro.run.diagnostics`` measures, this module estimates):
per-coordinate moments and the Theorem 3 ratio pi sigma_i^2 / (2 mu_i^2), normality of per-example values, Eq 14 and
Eq 16 (and Eq 1 for SGD) from Hessian-vector-product terms with jackknife covariances and Fieller intervals. The
estimation notes are in ``surge_repro.run.diagnostics``'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

QUANTILES = (0.01, 0.05, 0.5)  # with the minimum: the paper's "bound" is a low quantile of the histogram
Z95 = 1.959964  # two-sided 95% normal quantile for the Eq 14 intervals


@dataclass
class Moments:
    """Running per-coordinate count, mean and sum of squared deviations, merged chunk by chunk (Chan et al.),
    in float64: a chunk's float32 gradients are small and a naive sum of squares loses the variance to rounding."""

    n: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, g: torch.Tensor) -> None:
        g = g.to(torch.float64)
        nb = g.shape[0]
        mb = g.mean(0)
        m2b = ((g - mb) ** 2).sum(0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / (self.n - 1)  # unbiased sample variance


def gradient_stats(mu: torch.Tensor, var: torch.Tensor, n: int) -> dict:
    """Theorem 3 ratio quantiles and B_simple from per-coordinate means ``mu`` and unbiased variances ``var`` over
    ``n`` examples (float64 tensors). Returns plain numbers plus the ratio arrays (numpy) for the histogram."""
    mu, var = mu.double(), var.double()
    dead = (var == 0) & (mu == 0)  # no gradient from any example (a dead unit): no ratio to speak of
    with torch.no_grad():
        ratio = math.pi * var / (2 * mu ** 2)
        mu2_corr = mu ** 2 - var / n
        ratio_corr = torch.where(mu2_corr > 0, math.pi * var / (2 * mu2_corr), torch.full_like(var, math.inf))
    live = ~dead
    r = ratio[live].cpu().numpy()
    rc = ratio_corr[live].cpu().numpy()
    tr_sigma = float(var.sum())
    g2_plugin = float((mu ** 2).sum())
    g2 = g2_plugin - tr_sigma / n

    def quantiles(x: np.ndarray) -> dict:
        # inf (a mean of exactly 0 with some variance, or a corrected mean^2 <= 0) sorts last, as the largest bound
        if x.size == 0:
            return {"min": None, **{f"q{int(q * 100):02d}": None for q in QUANTILES}}
        out = {"min": float(np.min(x))}
        for q in QUANTILES:
            v = float(np.quantile(x, q, method="lower"))  # an actual coordinate's value, well defined with infs
            out[f"q{int(q * 100):02d}"] = v if math.isfinite(v) else None
        return out

    return {
        "n_examples": n, "n_params": int(mu.numel()), "n_dead": int(dead.sum()),
        "n_infinite": int((~np.isfinite(r)).sum()), "n_infinite_corrected": int((~np.isfinite(rc)).sum()),
        "noise_floor": math.pi * n / 2,
        "ratio": quantiles(r), "ratio_corrected": quantiles(rc),
        "tr_sigma": tr_sigma, "grad_norm2": g2, "grad_norm2_plugin": g2_plugin,
        "b_simple": tr_sigma / g2 if g2 > 0 else None,
        "b_simple_plugin": tr_sigma / g2_plugin if g2_plugin > 0 else None,
        "_ratio": r, "_ratio_corrected": rc,
    }


def normality(x: np.ndarray) -> dict:
    """Sample skewness, excess kurtosis (both 0 for a Gaussian) and the Kolmogorov-Smirnov distance to the Gaussian
    with the sample's mean and standard deviation (Lilliefors' setting: its 5% critical value is about 0.886/sqrt(n),
    lower than the 1.36/sqrt(n) of a fully specified Gaussian)."""
    x = np.asarray(x, np.float64)
    n = x.size
    m, s = x.mean(), x.std(ddof=1)
    if not s > 0:
        return {"n": n, "mean": float(m), "std": float(s), "skewness": None, "excess_kurtosis": None, "ks": None,
                "ks_crit_5pct": 0.886 / math.sqrt(n)}
    z = np.sort((x - m) / s)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    i = np.arange(1, n + 1)
    ks = max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n))
    c = x - m
    m2 = np.mean(c ** 2)
    return {"n": n, "mean": float(m), "std": float(s), "skewness": float(np.mean(c ** 3) / m2 ** 1.5),
            "excess_kurtosis": float(np.mean(c ** 4) / m2 ** 2 - 3), "ks": float(ks),
            "ks_crit_5pct": 0.886 / math.sqrt(n)}


def _pairs(a: np.ndarray, n: np.ndarray) -> float:
    """sum_{g != h} n_g n_h a_gh / sum_{g != h} n_g n_h: a product of two independent group means, unbiased."""
    w = np.outer(n, n)
    np.fill_diagonal(w, 0)
    return float((w * a).sum() / w.sum())


def _plugin(a: np.ndarray, n: np.ndarray) -> float:
    """mu_hat^T A mu_hat, mu_hat the mean of all N: the plug-in, noise of the mean included."""
    return float((np.outer(n, n) * a).sum() / n.sum() ** 2)


def _between(a: np.ndarray, n: np.ndarray) -> float:
    """sum_g n_g (m_g - mu_hat)^T H (m_g - mu_hat) / (M - 1): unbiased for tr(H Sigma)."""
    return float(((n * np.diag(a)).sum() - _plugin(a, n) * n.sum()) / (len(n) - 1))


def hessian_values(terms: dict, groups: np.ndarray, probes: np.ndarray) -> dict:
    """The Eq 14, 16 and 1 terms from the groups and probes kept (index arrays; the jackknife leaves one out)."""
    n = terms["counts"][groups]

    def sub(a):
        return a[np.ix_(groups, groups)]

    q = sub(terms["Q"][probes].mean(0))
    a_r = sub(terms["A_r"])
    return {
        "trace_h": float(terms["T"][probes].mean()),
        "offdiag": _pairs(a_r - q, n),                   # S = sum_{i != j} r_i r_j H_ij, unbiased in r
        "offdiag_plugin": _plugin(a_r - q, n),           # the same with r_hat
        "r_h_r": _pairs(a_r, n),                         # r^T H r, unbiased in r, exact
        "r_h_r_plugin": _plugin(a_r, n),                 # r_hat^T H r_hat, exact
        "sum_mu2_over_sigma": _pairs(sub(terms["A_e"]), n),
        "grad_norm2": _pairs(sub(terms["A_g"]), n),
        "g_h_g": _pairs(sub(terms["A_mu"]), n),
        "g_h_g_plugin": _plugin(sub(terms["A_mu"]), n),  # mu_hat^T H mu_hat, exact
        "tr_h_sigma": _between(sub(terms["A_mu"]), n),
        "tr_h_sigma_diag": float(terms["D"][probes].mean()),
    }


def _ratios(v: dict) -> dict:
    """name -> (a, b): each quantity is a / b (Eq 16's eps_max: its square, Eq 41's form)."""
    return {
        "b_noise": (math.pi * v["trace_h"], 2 * v["offdiag"]),                        # Eq 14
        "b_noise_plugin": (math.pi * v["trace_h"], 2 * v["offdiag_plugin"]),
        "eps_max": (v["sum_mu2_over_sigma"] ** 2, 4 * v["trace_h"] * v["offdiag"]),    # Eq 16 = Eq 41, squared
        "eps_max_sgd": (v["grad_norm2"], v["g_h_g"]),                                    # Eq 1
        "b_noise_sgd": (v["tr_h_sigma"], v["g_h_g"]),
        "b_noise_sgd_diag": (v["tr_h_sigma_diag"], v["g_h_g"]),
    }


def _jackknife_cov(pairs: list[tuple[float, float]]) -> np.ndarray:
    """2 x 2 covariance of (a, b) from their leave-one-out values."""
    x = np.asarray(pairs, np.float64)
    d = x - x.mean(0)
    return (len(x) - 1) / len(x) * d.T @ d


def _rse(a: float, b: float, cov: np.ndarray) -> float | None:
    """Relative standard error of a / b from the covariance of (a, b) (delta method)."""
    if a * b == 0:
        return None
    return math.sqrt(max(cov[0, 0] / a ** 2 + cov[1, 1] / b ** 2 - 2 * cov[0, 1] / (a * b), 0.0))


def t_quantile(dof: int, z: float = Z95) -> float:
    """Student's t quantile matching the normal quantile z (Cornish-Fisher to 1/dof^3: within 1% for dof >= 3)."""
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof ** 2 + g3 / dof ** 3


def fieller(a: float, b: float, cov: np.ndarray, z: float = Z95) -> tuple[float | None, float | None]:
    """Confidence set of a / b (Fieller 1954): the q with (a - q b)^2 <= z^2 var(a - q b), var from ``cov`` of
    (a, b). Returns (lo, hi), None for an unbounded end: b not resolved from 0 leaves the side of a/b unbounded,
    and neither a nor b resolved leaves every q."""
    qa = b * b - z * z * cov[1, 1]
    qb = a * b - z * z * cov[0, 1]
    qc = a * a - z * z * cov[0, 0]
    disc = qb * qb - qa * qc
    if qa > 0:  # b resolved: a bounded interval around a / b
        root = math.sqrt(max(disc, 0.0))
        return (qb - root) / qa, (qb + root) / qa
    if qa < 0 and disc > 0:  # two rays; keep the one with the estimate
        r1, r2 = sorted(((qb - math.sqrt(disc)) / qa, (qb + math.sqrt(disc)) / qa))
        return (r2, None) if b != 0 and a / b >= r2 else (None, r1)
    return None, None


def hessian_stats(terms: dict) -> dict:
    """Eq 14's B_noise, Eq 16's eps_max and Eq 1's eps_max and B_noise, each {value, lo, hi, rse_probes, rse_data}
    (about-95% Fieller interval, module docstring), and the terms they come from."""
    groups, probes = np.arange(len(terms["counts"])), np.arange(len(terms["T"]))
    values = hessian_values(terms, groups, probes)
    by_probe = [_ratios(hessian_values(terms, groups, np.delete(probes, k))) for k in probes]
    by_group = [_ratios(hessian_values(terms, np.delete(groups, g), probes)) for g in groups]
    out = {"n_hvp": terms["n_hvp"], "n_probes": len(probes), "n_groups": len(groups), "terms": values}
    for name, (a, b) in _ratios(values).items():
        cov_p = _jackknife_cov([j[name] for j in by_probe])
        cov_d = _jackknife_cov([j[name] for j in by_group])
        # the two sources are independent: their covariances add, each widened from z to Student's t for its
        # jackknife's degrees of freedom (M - 1 groups is few: with z, a nominal 95% covers about 90%)
        wide = cov_p * (t_quantile(len(probes) - 1) / Z95) ** 2 + cov_d * (t_quantile(len(groups) - 1) / Z95) ** 2
        lo, hi = fieller(a, b, wide)
        q = a / b if b != 0 else None
        rp, rd = _rse(a, b, cov_p), _rse(a, b, cov_d)
        if name == "eps_max":  # the ratio is eps_max^2: its interval maps through sqrt, its relative error halves
            q = math.sqrt(q) if q is not None and q > 0 else None
            lo = math.sqrt(max(lo, 0.0)) if lo is not None else 0.0
            hi = None if hi is None else math.sqrt(max(hi, 0.0))
            rp, rd = (x / 2 if x is not None else None for x in (rp, rd))
        out[name] = {"value": q, "lo": lo, "hi": hi, "rse_probes": rp, "rse_data": rd}
    return out


def fmt_g(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def interval_text(q: dict) -> str:
    """'value [lo, hi]' of a ``hessian_stats`` quantity (None ends print as -inf and inf)."""
    lo = "-inf" if q["lo"] is None else f"{q['lo']:.3g}"
    hi = "inf" if q["hi"] is None else f"{q['hi']:.3g}"
    return f"{fmt_g(q['value'])} [{lo}, {hi}]"
