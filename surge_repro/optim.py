"""Sign descent optimizers that neither torch nor a well-kept package provides: signSGD and signum.

The paper's working model for Adam-style optimizers is sign descent, theta <- theta - lr * sign(G_est) (its Eq 5): Adam
with betas (0, 0) reduces to it (Eq 29), and its theory of the surge (Theorems 2 and 3) is a theory of this update.
These classes give that update directly, so a grid can ask whether the surge holds for the model itself and for its
momentum variant:

- ``SignSGD``: theta <- theta - lr * sign(g) (Bernstein et al. 2018, "signSGD").
- ``Signum``: m <- beta * m + (1 - beta) * g, theta <- theta - lr * sign(m), with m starting at 0 (so the first step
  is sign(g)); the same paper's "signSGD with momentum".

How ``SignSGD`` differs from ``torch.optim.Adam`` with betas (0, 0) (``conf/optimizer/adam_sign.yaml``): Adam's step
is g / (|g| + eps), which is sign(g) only where |g| >> eps. An element with |g| comparable to eps (1e-8) moves by less
than lr, and one with |g| << eps by about lr * g / eps; ``SignSGD`` moves every element with a nonzero gradient by
exactly lr. Both leave an element with g = 0 where it is (torch.sign(0) = 0), the case the paper's Eq 29 leaves out.

Both steps are lr times a function of the gradients and a state that never reads the LR, so points of these optimizers
train packed (``surge_repro.run.packing.LR_LINEAR``). Neither has weight decay: the paper puts it out of scope, and it
would read the parameters, which packing cannot.

Use them from a config (``optimizer=signsgd``, ``optimizer=signsgd_momentum``) or directly::

    from surge_repro.optim import SignSGD, Signum
    opt = Signum(model.parameters(), lr=1e-3, beta=0.9)

``tests/test_optimizers.py`` checks the steps against their formulas.
"""

from __future__ import annotations

from typing import Callable

import torch


class _SignDescent(torch.optim.Optimizer):
    """The loop shared by both: every parameter with a gradient moves by -lr * sign(direction(p, group))."""

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(self.direction(p, group)), alpha=-group["lr"])
        return loss


class SignSGD(_SignDescent):
    """theta <- theta - lr * sign(g): the paper's Eq 5, without Adam's eps (see the module docstring)."""

    def __init__(self, params, lr: float = 1e-3):
        if not lr > 0:
            raise ValueError(f"SignSGD's lr must be > 0, got {lr}")
        super().__init__(params, {"lr": lr})

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        return p.grad


class Signum(_SignDescent):
    """m <- beta * m + (1 - beta) * g; theta <- theta - lr * sign(m): signSGD with momentum (signum)."""

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9):
        if not lr > 0:
            raise ValueError(f"Signum's lr must be > 0, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Signum's beta must be in [0, 1), got {beta}")
        super().__init__(params, {"lr": lr, "beta": beta})

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state["momentum_buffer"]
        return m.mul_(group["beta"]).add_(p.grad, alpha=1.0 - group["beta"])
