"""Per-example gradient diagnostics: the paper's Fig. 2(a) (the Theorem 3 bound pi sigma_i^2 / (2 mu_i^2)), Fig. 8
(per-coordinate gradient distributions against a Gaussian) and McCandlish's simple noise scale B_simple.

``run(cfg, steps, examples)`` trains one point of a composed config (task, model, optimizer, batch, lr) through the
training loop's steps (``train.Steps``, without store or protocol) and, at each checkpoint step, computes the gradient
of every one of ``examples`` training examples with ``torch.func`` (``functional_call`` + ``vmap(grad)``), in chunks;
for a model vmap refuses (the MoE: transformers' expert loop routes with ``torch.nonzero``), ``grad`` of
``functional_call`` once per example, the same gradients in a loop, without the Hessian part (its HVPs are vmapped).
From them, per parameter coordinate i: the mean mu_i and the standard deviation sigma_i (Theorem 2's per-coordinate
model, G_est,i ~ N(mu_i, sigma_i^2 / B)), the ratio pi sigma_i^2 / (2 mu_i^2) (Theorem 3 needs B << it for every i, Eq
13), B_simple = tr(Sigma) / |G|^2, and, for a few chosen coordinates, the per-example values with normality statistics.
``reports/fig2a_fig8_gradients.py`` draws the result::

    python reports/fig2a_fig8_gradients.py --figure 2a    # Fig. 2(a): the CNN on Fashion-MNIST
    python reports/fig2a_fig8_gradients.py --figure 8     # Fig. 8: the MoE on RedPajama (data not available here)

Fig. 8's coordinates: in an MoE, the largest-|mu| and random coordinates of each MoE part (``MOE_PARTS``: router,
routed experts, shared expert), named parameter[index]; in other models, of all coordinates.

Estimation notes (they matter for reading the numbers):

- mu_i and sigma_i^2 are the sample mean and the unbiased sample variance over the N examples. The plug-in
  ratio uses mu_hat_i^2, which overestimates mu_i^2 by sigma_i^2 / N on average; for a coordinate whose true mean is
  0 the plug-in ratio is about pi N / 2 (``noise_floor``), so ratios near or above that are "mean not resolved", not
  measured bounds. ``ratio_corrected`` uses mu_hat^2 - sigma^2/N (infinite where that is <= 0).
- B_simple uses tr(Sigma) = sum_i sigma_i^2 and the unbiased |G|^2 = |mu_hat|^2 - tr(Sigma)/N (McCandlish App. A);
  ``b_simple_plugin`` divides by |mu_hat|^2 instead (biased low). Both are in examples: for a token task an example
  is a sequence (times seq_len for tokens), and ``batch_examples`` is the trained batch in those units.
- The per-example gradients are of the training loss at the current parameters, one example at a time; models with
  BatchNorm are refused, since their per-example gradient depends on the rest of the batch.

Eq 14's B_noise from measured quantities (``hessian_probes`` > 0, the default; 0 switches it off; the report's
``--hessian-probes`` and ``--hessian-groups``). H is the Hessian of the mean training loss over the same N examples,
used only through Hessian-vector products (``torch.func``: jvp of grad), 2 * ``hessian_groups`` +
``hessian_probes`` of them per checkpoint (32 by default: about 4-6 s for the CNN at N = 1024 on 2 CPU cores,
where the rest of ``measure`` takes 1-2 s):

    B_noise (Eq 14) = pi tr(H) / (2 S),  S = sum_{i != j} r_i r_j H_ij = r^T H r - sum_i H_ii r_i^2,  r_i = mu_i/sigma_i
    eps_max (Eq 16) = sqrt(B_noise / (2 pi)) sum_i mu_i^2/sigma_i / tr(H)
    Eq 1 (SGD):       eps_max = |G|^2 / G^T H G,   B_noise = tr(H Sigma) / G^T H G

- diag(H), for tr(H), sum_i H_ii r_i^2 and sum_i H_ii sigma_i^2, is Hutchinson's: d = z * Hz with Rademacher z,
  E[d] = diag(H), averaged over ``hessian_probes`` probes.
- r: the plug-in r_hat = mu_hat/sigma_hat carries the noise of every mean, N(0, C/N) with C the correlation matrix
  of the per-example gradients, and S is quadratic in r, so the plug-in S is off by sum_{i != j} C_ij H_ij / N on
  average (the diagonal terms, where this is worst, are already out of S). Coordinates whose mean is not resolved
  (ratios near ``noise_floor``) are all noise and add to it. Its sign is that of the alignment of gradient noise and
  curvature, positive for a loss whose noise covariance resembles its Hessian (cross-entropy: the Fisher), so there
  the plug-in S is too large and the plug-in B_noise too small (12% at step 300 of the CNN run above). So the N
  examples are cut into ``hessian_groups`` groups g with means m_g, and every product of two means uses two
  different groups: E[m_g,i m_h,j] = mu_i mu_j for g != h, exactly, whatever the noise. That costs one HVP per group
  for r and one for mu. Dropping the unresolved coordinates instead would bias S the other way by an unknown
  amount. ``b_noise_plugin`` (the plain plug-in formula) is reported beside it. sigma_hat is from all N examples
  and treated as exact (its error is second order), and so is H: it comes from the same examples, which leaves an
  O(1/N) correlation of an example's gradient with its own curvature that the groups do not remove.
- The groups also give tr(H Sigma) with the full Sigma, as Eq 1 defines it: sum_g n_g (m_g - mu_hat)^T H
  (m_g - mu_hat) / (M - 1) is unbiased for it (a between-group estimate with M - 1 degrees of freedom);
  ``b_noise_sgd_diag`` uses Theorem 2's diagonal Sigma, sum_i H_ii sigma_i^2, instead.
- Uncertainty: each quantity is a ratio a / b (Eq 16's eps_max: its square) of two noisy estimates; tr(H), in
  Eq 14's numerator, can be as unresolved as its denominator (at initialisation H is nearly traceless and
  Hutchinson's error, sqrt(2 sum_{i != j} H_ij^2 / K), dwarfs it). The covariance of (a, b) is a jackknife over the
  probes (Hutchinson) plus one over the groups (which examples were drawn), each widened to Student's t for its
  degrees of freedom, and the interval is Fieller's, about 95% (less where b is barely resolved: 75-80% in a
  simulation with 8 groups). lo/hi None: an unbounded end (b not resolved from 0). A negative value: that estimate of
  the denominator is < 0 (the paper needs it > 0). ``rse_probes`` and ``rse_data`` are the relative standard
  errors from each source (delta method): which of more probes or more examples would shrink the interval.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig
from torch.func import functional_call, grad, jvp, vmap

from surge_repro.analysis.gradient_stats import (
    Moments,
    fmt_g,
    gradient_stats,
    hessian_stats,
    interval_text,
    normality,
)
from surge_repro.config import build, validate
from surge_repro.run.engines import Single, has_batch_norm, probe_loss
from surge_repro.run.train import Steps, setup


def _check_model(model: torch.nn.Module) -> None:
    if has_batch_norm(model):
        raise ValueError("per-example gradients of a model with BatchNorm depend on the rest of the batch; "
                         "use a model without it (model=cnn5, model=tiny_mlp)")


def _example_grad(model: torch.nn.Module, task):
    """(params, grad_fn): grad_fn(params, x, y) is the gradient dict of one example's loss (x, y: one example)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one_loss(p, x, y):
        # a batch of one through the task's own loss, so the diagnostics use exactly the training objective
        return task.loss(lambda inp: functional_call(model, (p, buffers), (inp,)), (x.unsqueeze(0), y.unsqueeze(0)))

    return params, grad(one_loss)


def vmap_refusal(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor) -> str | None:
    """None if ``vmap`` batches the per-example gradient of this model, else why not. transformers' eager MoE
    experts route tokens with data-dependent shapes (torch.nonzero), which vmap refuses; only trying tells (as
    ``run.packing`` finds for packed training), on the first two examples."""
    _check_model(model)
    params, one = _example_grad(model, task)
    try:
        vmap(one, in_dims=(None, 0, 0))(params, inputs[:2], labels[:2])
    except Exception as err:  # whatever vmap refuses, a loop over the examples computes the same gradients
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return None


def batching(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor, hessian_probes: int):
    """``vmap_refusal``, refused with the fix named where the Hessian part is asked for: its HVPs are vmapped."""
    refusal = vmap_refusal(model, task, inputs, labels)
    if refusal and hessian_probes:
        raise ValueError(f"vmap cannot batch this model ({refusal}), and the Hessian-vector products need it; "
                         f"its per-example gradients come from a loop. Fix: hessian_probes=0 (--hessian-probes 0)")
    return refusal


def per_example_grads(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 256,
                      batched: bool = True):
    """Yield (start, G) for consecutive chunks of the examples: G is chunk x P, the flattened gradient of each
    example's loss with respect to all trainable parameters (in ``named_parameters`` order). ``batched``: one
    ``vmap(grad)`` call per chunk (fast); False: ``grad`` of ``functional_call`` once per example, for models vmap
    refuses (``vmap_refusal``: the MoE's expert routing), the same numbers in a Python loop."""
    _check_model(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params, one = _example_grad(model, task)
    per_example = vmap(one, in_dims=(None, 0, 0))
    was_training = model.training
    model.train()  # dropout is 0 in every model here; train mode keeps the loss the one training minimises
    try:
        for start in range(0, len(labels), chunk):
            x, y = inputs[start:start + chunk], labels[start:start + chunk]
            if batched:
                g = per_example(params, x, y)
                yield start, torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1)
            else:
                rows = [one(params, x[i], y[i]) for i in range(len(y))]
                yield start, torch.stack([torch.cat([r[n].reshape(-1) for n in names]) for r in rows])
    finally:
        model.train(was_training)


def coordinate_names(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(parameter name, numel) in the flattening order of ``per_example_grads``."""
    return [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]


def _label(model: torch.nn.Module, flat: int) -> str:
    """A flat coordinate as parameter[index]: ``model.layers.0.mlp.experts.down_proj[3, 5, 7]`` (expert 3)."""
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if flat < p.numel():
            return f"{name}[{', '.join(str(int(i)) for i in np.unravel_index(flat, tuple(p.shape)))}]"
        flat -= p.numel()
    raise IndexError(flat)


# Fig. 8 of an MoE: the parameters only an MoE has, by their names in transformers' Qwen2-MoE (model=moe_shared,
# moe_tiny): the router, the routed experts, the shared expert. The paper shows "gradient distributions during MoE
# training" without naming the parameters; a draw over all coordinates would land mostly in the tied embedding
# (a third of moe_shared), which the dense models have too.
MOE_PARTS = {"router": r"\.mlp\.gate\.", "routed experts": r"\.mlp\.experts\.",
             "shared expert": r"\.mlp\.shared_expert\."}


def coordinate_groups(names: list[tuple[str, int]]) -> dict[str, list[tuple[int, int]]] | None:
    """The MoE parts present (``MOE_PARTS``), each as (start, size) segments of the flat coordinates; None for a
    model without them (its coordinates are chosen from all of them)."""
    groups, start = {label: [] for label in MOE_PARTS}, 0
    for name, size in names:
        for label, pattern in MOE_PARTS.items():
            if re.search(pattern, name):
                groups[label].append((start, size))
        start += size
    return {label: segs for label, segs in groups.items() if segs} or None


def choose_coordinates(mu: torch.Tensor, var: torch.Tensor, n_top: int, n_random: int, seed: int,
                       groups: dict[str, list[tuple[int, int]]] | None = None) -> list[dict]:
    """Fig. 8's coordinates: the ``n_top`` largest |mu| (where the mean is resolved, the Gaussian sits off 0) and
    ``n_random`` drawn uniformly among those with some variance (a typical coordinate; one no example moves has no
    distribution to show), from all coordinates or, with ``groups`` (``coordinate_groups``), from each group."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for label, segments in (groups or {None: [(0, mu.numel())]}).items():
        m = torch.cat([mu[s:s + n] for s, n in segments])
        v = torch.cat([var[s:s + n] for s, n in segments])
        offsets = torch.tensor([s for s, _ in segments])
        ends = torch.tensor([n for _, n in segments]).cumsum(0)

        def flat(j: int) -> int:  # position in the group -> flat coordinate
            k = int(torch.searchsorted(ends, j, right=True))
            return int(offsets[k]) + j - (int(ends[k - 1]) if k else 0)

        top = torch.topk(m.abs(), min(n_top, m.numel())).indices
        pool = torch.nonzero(v > 0).flatten()
        pool = pool[~torch.isin(pool, top)]
        rand = pool[torch.randperm(len(pool), generator=gen)[:n_random].to(pool.device)]
        group = {} if label is None else {"group": label}
        out += [{"index": flat(j), "kind": "largest |mu|", **group} for j in top.tolist()]
        out += [{"index": flat(j), "kind": "random", **group} for j in rand.tolist()]
    return out


def hessian_vector_products(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor,
                            chunk: int = 256, block: int | None = None):
    """Return hvp(V) -> H V for V a K x P tensor of vectors flattened like ``per_example_grads``, H the Hessian of
    the mean training loss over (inputs, labels); float64 out. Forward-over-reverse (jvp of grad), ``block`` vectors
    per vmap call (default: 2048 // chunk, so vectors x examples per call stays near 8 chunks' worth), summed over
    chunks of examples weighted by their share (the task's loss is a mean over its batch)."""
    block = block or max(1, min(64, 2048 // chunk))
    _check_model(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    sizes = [params[n].numel() for n in names]
    dtype = params[names[0]].dtype

    def unflatten(v):
        return {n: t.view(params[n].shape) for n, t in zip(names, v.split(sizes))}

    def hvp(vectors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(vectors.shape, dtype=torch.float64, device=vectors.device)
        was_training = model.training
        model.train()  # the loss per_example_grads differentiates
        try:
            for start in range(0, len(labels), chunk):
                x, y = inputs[start:start + chunk], labels[start:start + chunk]

                def chunk_grad(p, x=x, y=y):
                    return grad(lambda q: task.loss(lambda inp: functional_call(model, (q, buffers), (inp,)),
                                                    (x, y)))(p)

                def one(v):
                    hv = jvp(chunk_grad, (params,), (unflatten(v),))[1]
                    return torch.cat([hv[n].reshape(-1) for n in names])

                for b in range(0, len(vectors), block):
                    out[b:b + block] += vmap(one)(vectors[b:b + block].to(dtype)).double() * (len(y) / len(labels))
        finally:
            model.train(was_training)
        return out

    return hvp


def group_of(index: torch.Tensor, n: int, groups: int) -> torch.Tensor:
    """The group of each example index: ``groups`` contiguous blocks of the N examples (a random draw already)."""
    return index * groups // n


def hessian_terms(hvp, means: torch.Tensor, counts: torch.Tensor, var: torch.Tensor, probes: int,
                  seed: int = 0) -> dict:
    """The small matrices every Eq 14, Eq 16 and Eq 1 estimate is built from (numpy float64), with 2M + K HVPs.

    ``means``: M x P group means m_g of the per-example gradients; ``counts``: the M group sizes; ``var``: the P
    unbiased variances over all N examples; ``hvp``: V x P -> H V. With r_g = m_g / sigma (0 where sigma = 0):
    A_mu[g,h] = m_g^T H m_h, A_r[g,h] = r_g^T H r_h, A_g[g,h] = m_g^T m_h, A_e[g,h] = sum_i m_gi m_hi / sigma_i; per
    Rademacher probe z_k, d_k = z_k * H z_k (Hutchinson, E[d_k] = diag H): T[k] = sum_i d_ki, D[k] = sum_i d_ki
    sigma_i^2, Q[k,g,h] = sum_i d_ki r_gi r_hi."""
    means, var = means.double(), var.double()
    m = len(means)
    sigma = var.sqrt()
    inv = torch.where(sigma > 0, 1 / sigma.clamp_min(1e-300), torch.zeros_like(sigma))
    r = means * inv
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randint(0, 2, (probes, means.shape[1]), generator=gen, dtype=torch.float64) * 2 - 1).to(means.device)
    h_m, h_r, h_z = hvp(torch.cat([means, r, z])).split([m, m, probes])
    d = z * h_z

    def sym(a):  # H is symmetric; float32 HVPs are not exactly
        return ((a + a.T) / 2).cpu().numpy()

    return {"counts": counts.double().cpu().numpy(), "n_hvp": 2 * m + probes,
            "A_mu": sym(means @ h_m.T), "A_r": sym(r @ h_r.T), "A_g": sym(means @ means.T),
            "A_e": sym((means * inv) @ means.T),
            "T": d.sum(1).cpu().numpy(), "D": (d @ var).cpu().numpy(),
            "Q": np.stack([sym((dk * r) @ r.T) for dk in d])}


def measure(model: torch.nn.Module, task, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 256,
            n_top: int = 3, n_random: int = 3, seed: int = 0, hessian_probes: int = 16,
            hessian_groups: int = 8) -> dict:
    """All diagnostics at the model's current parameters over the examples (inputs, labels). Two passes over the
    per-example gradients: the first for the moments, the second for the values of the coordinates the first one
    picks (keeping the whole N x P matrix instead would cost N x P floats: 250 MB for the CNN at N = 1024).
    ``hessian_probes`` > 0 adds ``stats["hessian"]`` (``hessian_stats``: Eq 14, 16 and 1, with
    2 * ``hessian_groups`` + ``hessian_probes`` HVPs); 0 leaves it None. A model vmap refuses (the MoE) gets its
    per-example gradients from a loop (``stats["per_example"]`` says which) and no Hessian part: the HVPs are
    vmapped too. Fig. 8's coordinates come from each MoE part (``coordinate_groups``) where the model has them."""
    n = len(labels)
    if hessian_probes and not (hessian_probes >= 2 and 3 <= hessian_groups <= n):
        raise ValueError(f"hessian_probes must be 0 or >= 2 and hessian_groups in [3, N = {n}] (the jackknife "
                         f"leaves one out), got {hessian_probes} and {hessian_groups}")
    t0 = time.perf_counter()
    refusal = batching(model, task, inputs, labels, hessian_probes)
    batched = refusal is None
    mom = Moments()
    sums = counts = None
    for start, g in per_example_grads(model, task, inputs, labels, chunk, batched):
        mom.add(g)
        if hessian_probes:
            if sums is None:
                sums = torch.zeros(hessian_groups, g.shape[1], dtype=torch.float64, device=g.device)
                counts = torch.zeros(hessian_groups, dtype=torch.float64, device=g.device)
            gid = group_of(torch.arange(start, start + len(g), device=g.device), n, hessian_groups)
            sums.index_add_(0, gid, g.double())
            counts.index_add_(0, gid, torch.ones(len(g), dtype=torch.float64, device=g.device))
    stats = gradient_stats(mom.mean, mom.var, mom.n)
    stats["per_example"] = "vmap" if batched else f"loop over examples (vmap refuses: {refusal})"
    stats["hessian"] = None
    if hessian_probes:
        t1 = time.perf_counter()
        terms = hessian_terms(hessian_vector_products(model, task, inputs, labels, chunk),
                              sums / counts[:, None], counts, mom.var, hessian_probes, seed)
        stats["hessian"] = hessian_stats(terms)
        stats["hessian"]["seconds"] = time.perf_counter() - t1
    names = coordinate_names(model)
    coords = choose_coordinates(mom.mean, mom.var, n_top, n_random, seed, coordinate_groups(names))
    idx = torch.tensor([c["index"] for c in coords], device=mom.mean.device, dtype=torch.long)
    values = torch.cat([g[:, idx].double()
                        for _, g in per_example_grads(model, task, inputs, labels, chunk, batched)])
    for j, c in enumerate(coords):
        v = values[:, j].cpu().numpy()
        c["name"] = _label(model, c["index"])
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


@dataclass
class Checkpoint:
    step: int
    train_loss: float | None  # the minibatch loss of the last optimizer step before the checkpoint
    sample_loss: float        # the mean loss over the diagnostic examples
    stats: dict = field(default_factory=dict)


def run(cfg: DictConfig, steps: list[int], examples: int, chunk: int = 256, sample_seed: int = 12345,
        n_top: int = 3, n_random: int = 3, log=print, hessian_probes: int = 16,
        hessian_groups: int = 8) -> list[Checkpoint]:
    """Train the point of ``cfg`` to each of ``steps`` (sorted; 0 is the initial weights) and measure there
    (``measure``; ``hessian_probes=0`` skips the Hessian part).

    The point steps through the training loop's own engine and data order (``train.Steps`` on an
    ``engines.Single``: same seed, same batches), so the checkpoints lie on the trajectory of the stored run of
    this point (trained alone). The ``examples`` training
    examples are drawn once from ``sample_seed`` and shared by all checkpoints.
    """
    validate(cfg)
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if examples < 2:
        raise ValueError(f"examples must be >= 2 (a variance needs two), got {examples}")
    device, task = setup(cfg, build(cfg.task))
    engine = Single(cfg, task, device)
    model = engine.model
    _check_model(model)
    unit = getattr(task, "unit", 1)  # batch units per example: a token task's probe counts tokens, N sequences
    inputs, labels = task.probe(examples * unit, sample_seed)
    if len(labels) < examples:
        log(f"the task has only {len(labels)} training examples; using all of them")
    if batching(model, task, inputs, labels, hessian_probes):  # before training: the first checkpoint may be late
        log("vmap cannot batch this model: its per-example gradients come from a loop over the examples")
    stepper = Steps(engine, task, [int(cfg.seed)], int(cfg.batch))
    out, step, loss = [], 0, None
    t0 = time.perf_counter()
    for target in steps:
        while step < target:
            loss = stepper.next().item()
            step += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step} (loss {loss}); lower optimizer.lr")
        sample_loss = probe_loss(lambda batch: task.loss(model, batch), (inputs, labels), chunk)
        stats = measure(model, task, inputs, labels, chunk, n_top, n_random, seed=sample_seed + step,
                        hessian_probes=hessian_probes, hessian_groups=hessian_groups)
        # the trained batch in examples (one example = one sequence of a token task, whose batch counts tokens):
        # what Theorem 3's ratio and the minibatch means below compare with
        b = int(cfg.batch) // unit
        stats["batch_examples"] = b
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
        log(f"step {step}: loss {sample_loss:.4f}; pi sigma^2/(2 mu^2): min {fmt_g(r['min'])}, 1% {fmt_g(r['q01'])}, "
            f"5% {fmt_g(r['q05'])}, median {fmt_g(r['q50'])}; B_simple {fmt_g(stats['b_simple'])}; "
            f"{stats['seconds']:.1f} s measuring, {time.perf_counter() - t0:.1f} s in all")
        if stats["hessian"]:
            h = stats["hessian"]
            log(f"  Eq 14 B_noise {interval_text(h['b_noise'])} (plug-in {fmt_g(h['b_noise_plugin']['value'])}), "
                f"Eq 16 eps_max {interval_text(h['eps_max'])}; Eq 1: B_noise {interval_text(h['b_noise_sgd'])}, "
                f"eps_max {interval_text(h['eps_max_sgd'])}; {h['n_hvp']} HVPs, {h['seconds']:.1f} s")
    return out
