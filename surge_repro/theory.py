"""The laws the paper compares, as plain functions of the batch size B (numpy arrays or floats).

All share B_noise; each has its own eps_max (the largest optimal LR it allows).

- ``sgd_lr``:   eps_opt(B) = eps_max / (1 + B_noise / B)                       (Eq 1, McCandlish et al. 2018)
- ``alpha_lr``: eps_opt(B) = eps_max / (1 + B_noise / B) ** alpha              (Eq 24: alpha = 1 is "SGD",
                                                                                 alpha = 0.5 McCandlish's Adam guess)
- ``adam_lr``:  eps_opt(B) = eps_max / (0.5 * (sqrt(B_noise/B) + sqrt(B/B_noise)))   (Eq 2 = Eq 13, the surge)

The surge curve peaks at B = B_noise with height eps_max (Eq 15) and is symmetric in log B about it. ``LAWS`` maps the
names used in fits, JSON and legends to (function, alpha).
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
