"""Per-example gradient diagnostics: the paper's Fig. 2(a) (the Theorem 3 bound pi sigma_i^2 / (2 mu_i^2)), Fig. 8
(per-coordinate gradient distributions against a Gaussian) and McCandlish's simple noise scale B_simple.

``run(cfg, steps, examples)`` trains one point of a composed config (task, model, optimizer, batch, lr) with a
plain loop (no store, no protocol) and, at each checkpoint step, computes the gradient of every one of ``examples``
training examples with ``torch.func`` (``functional_call`` + ``vmap(grad)``), in chunks. From them, per parameter
coordinate i: the mean mu_i and the standard deviation sigma_i (Theorem 2's per-coordinate model,
G_est,i ~ N(mu_i, sigma_i^2 / B)), the ratio pi sigma_i^2 / (2 mu_i^2) (Theorem 3 needs B << it for every i, Eq 13),
B_simple = tr(Sigma) / |G|^2, and, for a few chosen coordinates, the per-example values with normality statistics.
``reports/fig2a_fig8_gradients.py`` draws the result::

    python reports/fig2a_fig8_gradients.py task=fashion_mnist model=cnn5 batch=8 optimizer.lr=1e-3 --steps 0,300

Estimation notes (they matter for reading the numbers):

- mu_i and sigma_i^2 are the sample mean and the unbiased sample variance over the N examples. The plug-in
  ratio uses mu_hat_i^2, which overestimates mu_i^2 by sigma_i^2 / N on average; for a coordinate whose true mean is
  0 the plug-in ratio is about pi N / 2 (``noise_floor``), so ratios near or above that are "mean not resolved", not
  measured bounds. ``ratio_corrected`` uses mu_hat^2 - sigma^2/N (infinite where that is <= 0).
- B_simple uses tr(Sigma) = sum_i sigma_i^2 and the unbiased |G|^2 = |mu_hat|^2 - tr(Sigma)/N (McCandlish App. A);
  ``b_simple_plugin`` divides by |mu_hat|^2 instead (biased low). Both are in the task's batch units (examples).
- The per-example gradients are of the training loss at the current parameters, one example at a time; models with
  BatchNorm are refused, since their per-example gradient depends on the rest of the batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig
from torch.func import functional_call, grad, vmap

from surge_repro.config import build, validate
from surge_repro.train import build_point, probe_loss, setup, train_step

QUANTILES = (0.01, 0.05, 0.5)  # with the minimum: the paper's "bound" is a low quantile of the histogram


def _check_model(model: torch.nn.Module) -> None:
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("per-example gradients of a model with BatchNorm depend on the rest of the batch; "
                         "use a model without it (model=cnn5, model=tiny_mlp)")


def per_example_grads(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 256):
    """Yield (start, G) for consecutive chunks of the examples: G is chunk x P, the flattened gradient of each
    example's loss with respect to all trainable parameters (in ``named_parameters`` order)."""
    _check_model(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one_loss(p, x, y):
        # a batch of one through the task's own loss, so the diagnostics use exactly the training objective
        return task.loss(lambda inp: functional_call(model, (p, buffers), (inp,)), (x.unsqueeze(0), y.unsqueeze(0)))

    per_example = vmap(grad(one_loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.train()  # dropout is 0 in every model here; train mode keeps the loss the one training minimises
    try:
        for start in range(0, len(labels), chunk):
            g = per_example(params, inputs[start:start + chunk], labels[start:start + chunk])
            yield start, torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1)
    finally:
        model.train(was_training)


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


def coordinate_names(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(parameter name, numel) in the flattening order of ``per_example_grads``."""
    return [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]


def _label(names: list[tuple[str, int]], flat: int) -> str:
    for name, size in names:
        if flat < size:
            return f"{name}[{flat}]"
        flat -= size
    raise IndexError(flat)


def choose_coordinates(mu: torch.Tensor, var: torch.Tensor, n_top: int, n_random: int, seed: int) -> list[dict]:
    """Fig. 8's coordinates: the ``n_top`` largest |mu| and ``n_random`` drawn uniformly among those with some
    variance (a coordinate no example moves has no distribution to show)."""
    top = torch.topk(mu.abs(), min(n_top, mu.numel())).indices.tolist()
    pool = torch.nonzero(var > 0).flatten()
    pool = pool[~torch.isin(pool, torch.tensor(top, device=pool.device))]
    gen = torch.Generator().manual_seed(seed)
    rand = pool[torch.randperm(len(pool), generator=gen)[:n_random].to(pool.device)].tolist()
    return [{"index": i, "kind": "largest |mu|"} for i in top] + [{"index": i, "kind": "random"} for i in rand]


def measure(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 256,
            n_top: int = 3, n_random: int = 3, seed: int = 0) -> dict:
    """All diagnostics at the model's current parameters over the examples (inputs, labels). Two passes over the
    per-example gradients: the first for the moments, the second for the values of the coordinates the first one
    picks (keeping the whole N x P matrix instead would cost N x P floats: 250 MB for the CNN at N = 1024)."""
    t0 = time.perf_counter()
    mom = Moments()
    for _, g in per_example_grads(model, task, inputs, labels, chunk):
        mom.add(g)
    stats = gradient_stats(mom.mean, mom.var, mom.n)
    coords = choose_coordinates(mom.mean, mom.var, n_top, n_random, seed)
    idx = torch.tensor([c["index"] for c in coords], device=mom.mean.device, dtype=torch.long)
    values = torch.cat([g[:, idx].double() for _, g in per_example_grads(model, task, inputs, labels, chunk)])
    names = coordinate_names(model)
    for j, c in enumerate(coords):
        v = values[:, j].cpu().numpy()
        c["name"] = _label(names, c["index"])
        c["mu"], c["sigma"] = float(mom.mean[c["index"]]), float(mom.var[c["index"]].sqrt())
        c["ratio"] = math.pi * c["sigma"] ** 2 / (2 * c["mu"] ** 2) if c["mu"] != 0 else None
        c["normality"] = normality(v)
        c["_values"] = v
    stats["coordinates"] = coords
    # the bound per parameter tensor: which layer sets the minimum
    per_tensor, start = {}, 0
    r_all = (math.pi * mom.var / (2 * mom.mean ** 2)).cpu().numpy()
    for name, size in names:
        r = r_all[start:start + size]
        r = r[np.isfinite(r)]
        per_tensor[name] = {"min": float(r.min()) if r.size else None,
                            "median": float(np.median(r)) if r.size else None}
        start += size
    stats["per_tensor"] = per_tensor
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


@dataclass
class Checkpoint:
    step: int
    train_loss: float | None  # the minibatch loss of the last optimizer step before the checkpoint
    sample_loss: float        # the mean loss over the diagnostic examples
    stats: dict = field(default_factory=dict)


def run(cfg: DictConfig, steps: list[int], examples: int, chunk: int = 256, sample_seed: int = 12345,
        n_top: int = 3, n_random: int = 3, log=print) -> list[Checkpoint]:
    """Train the point of ``cfg`` to each of ``steps`` (sorted; 0 is the initial weights) and measure there.

    The model, optimizer, scheduler and data order are built as ``train._train`` builds them (same seed, same
    batches), so the checkpoints lie on the trajectory of the stored run of this point. The ``examples`` training
    examples are drawn once from ``sample_seed`` and shared by all checkpoints.
    """
    validate(cfg)
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if examples < 2:
        raise ValueError(f"examples must be >= 2 (a variance needs two), got {examples}")
    device, task = setup(cfg, build(cfg.task))
    model, optimizer, scheduler = build_point(cfg, device)
    _check_model(model)
    inputs, labels = task.probe(examples, sample_seed)
    if len(labels) < examples:
        log(f"the task has only {len(labels)} training examples; using all of them")
    batches = task.batches(int(cfg.batch), cfg.seed)
    out, step, loss = [], 0, None
    t0 = time.perf_counter()
    for target in steps:
        while step < target:
            loss = train_step(model, optimizer, scheduler, task, next(batches)).item()
            step += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step} (loss {loss}); lower optimizer.lr")
        sample_loss = probe_loss(lambda batch: task.loss(model, batch), (inputs, labels), chunk)
        stats = measure(model, task, inputs, labels, chunk, n_top, n_random, seed=sample_seed + step)
        b = int(cfg.batch)
        for c in stats["coordinates"]:
            # Theorem 2 models the minibatch mean of B examples: by the CLT its skewness shrinks as 1/sqrt(B) and
            # its excess kurtosis as 1/B, so these are the per-example values carried to the trained batch size
            nm = c["normality"]
            nm["batch"] = b
            nm["skewness_at_batch"] = None if nm["skewness"] is None else nm["skewness"] / math.sqrt(b)
            nm["excess_kurtosis_at_batch"] = None if nm["excess_kurtosis"] is None else nm["excess_kurtosis"] / b
            # and measured directly: means of B examples drawn without replacement from the N (Theorem 2's G_est,i)
            gen = np.random.default_rng(sample_seed + step)
            v = c["_values"]
            draws = min(4096, 64 * len(v))
            idx = np.argsort(gen.random((draws, len(v))), axis=1)[:, :min(b, len(v))] if b < len(v) else None
            c["_batch_means"] = v[idx].mean(1) if idx is not None else np.array([v.mean()])
            c["normality_batch_mean"] = normality(c["_batch_means"]) if idx is not None else None
        out.append(Checkpoint(step, loss, sample_loss, stats))
        r = stats["ratio"]
        log(f"step {step}: loss {sample_loss:.4f}; pi sigma^2/(2 mu^2): min {_g(r['min'])}, 1% {_g(r['q01'])}, "
            f"5% {_g(r['q05'])}, median {_g(r['q50'])}; B_simple {_g(stats['b_simple'])}; "
            f"{stats['seconds']:.1f} s measuring, {time.perf_counter() - t0:.1f} s in all")
    return out
