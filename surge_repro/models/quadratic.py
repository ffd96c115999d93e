"""A plain parameter vector, the "model" of the quadratic ground-truth tasks (``surge_repro.tasks.quadratic``: the
noisy quadratic and Eq 22's isotropic one, where every coordinate starts at ``init`` too).

``QuadraticVector(dim, init)`` holds theta (``dim`` floats), started at ``init`` on every coordinate: every seed
starts at the same point on the Hessian's top eigenvector (the all-ones direction), where the theory's numbers are
known in closed form (``surge_repro.analysis.ground_truth.ray_truth``). Its forward takes a batch of noise rows z and
returns (z @ theta, theta): the task's loss needs both, and z @ theta keeps a packed run from holding a copy of
theta per example.
"""

import torch
from torch import nn


class QuadraticVector(nn.Module):
    def __init__(self, *, dim: int, init: float = 1.0):
        super().__init__()
        # Deterministic: the seed then only picks the noise (the data order), so the state at the start is known.
        self.theta = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z @ self.theta, self.theta
