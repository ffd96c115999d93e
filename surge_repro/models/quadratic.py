"""A plain parameter vector, the "model" of the noisy-quadratic ground-truth task (``surge_repro.tasks.quadratic``).

``QuadraticVector(dim, init)`` holds theta (``dim`` floats), started at ``init`` on every coordinate: every seed
starts at the same point on the Hessian's top eigenvector (the all-ones direction), where Eq 14's B_noise is known in
closed form (``surge_repro.tasks.quadratic``). Its forward returns theta broadcast over a batch of noise rows, so the
task's loss sees one copy of theta per example and the packed launcher can vmap it like any other model.
"""

import torch
from torch import nn


class QuadraticVector(nn.Module):
    def __init__(self, *, dim: int, init: float = 1.0):
        super().__init__()
        # Deterministic: the seed then only picks the noise (the data order), so the state at the start is known.
        self.theta = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(z.shape)
