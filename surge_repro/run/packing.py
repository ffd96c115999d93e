"""Which points train packed, and how many fit: the rules of packing (``engines.Pack`` is the engine).

At the paper's batch sizes one small model leaves a GPU idle and even a CPU mostly waits on per-step overhead, so
points of one workload that differ only in LR and seed train as one pack. ``why_not_packable`` says when they cannot
(the log repeats it, and they train one by one): models with BatchNorm (its running statistics are updated in place,
which vmap cannot do per point), models vmap cannot run (a trial step of two copies tells), optimizers whose step is
not linear in the LR, and weight decay. ``pack_bytes`` estimates one point's memory in a pack and ``split`` cuts the
points into packs that fit.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

from surge_repro.config import build
from surge_repro.run.engines import Pack, has_batch_norm, on_meta, optimizer_class

log = logging.getLogger("surge_repro")

# optimizers whose step is lr * f(state, grad): their state never reads the LR (Adagrad: with lr_decay = 0). torch's
# by class name; others by module and name (a class of the same name elsewhere is not vouched for), each checked
# packed against one by one in tests/test_optimizers.py. Weight decay, which reads the parameters, is refused below.
LR_LINEAR = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Adagrad",
             "lion_pytorch.lion_pytorch.Lion", "surge_repro.optim.SignSGD", "surge_repro.optim.Signum")
def why_not_packable(cfg: DictConfig, model: torch.nn.Module | None = None, task=None) -> str | None:
    """None if points of this workload can train packed, else the reason they train one by one."""
    cls = optimizer_class(cfg)
    name = cls.__name__ if cls.__module__.split(".")[0] == "torch" else f"{cls.__module__}.{cls.__name__}"
    if name not in LR_LINEAR:
        return f"optimizer {cls.__name__} is not one whose step is linear in the LR ({', '.join(LR_LINEAR)})"
    if float(cfg.optimizer.get("weight_decay") or 0.0) != 0.0:
        return "weight decay reads the parameters, which the unit-LR step does not see"
    if float(cfg.optimizer.get("lr_decay") or 0.0) != 0.0:
        return "Adagrad's lr_decay makes the step non-linear in the LR"
    if model is not None and has_batch_norm(model):
        return (f"model {cfg.model.name} has BatchNorm, whose running statistics vmap cannot update per point")
    if model is not None and task is not None:
        return _vmap_trial(cfg, model, task)
    return None


def _vmap_trial(cfg: DictConfig, model: torch.nn.Module, task) -> str | None:
    """One packed step of two copies of ``model`` at the run's batch size: None if it runs, else why not. Some
    models cannot be vmapped at all (transformers' eager MoE experts route with data-dependent shapes,
    aten::nonzero), and only trying tells; the cost is one step of two points."""
    device = task.labels.device
    try:
        pack = Pack(cfg, task, [model, model], [1e-3, 1e-3], device)
        pack.train_step(task.take(torch.zeros(2, int(cfg.batch), dtype=torch.long, device=device)))
    except Exception as err:  # whatever vmap refuses, the points still train, one by one
        return f"vmap cannot run model {cfg.model.name} ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    return None


def pack_bytes(model: torch.nn.Module, task, batch_size: int) -> int:
    """Estimated memory of one point in a pack: parameters and their copies (the stacked parameters, gradients,
    the update buffer, two optimizer moments, a slice taken for probes: 7 in all) plus the activations autograd keeps
    for the backward of one step, counted exactly by running one forward on the meta device (no memory, no compute).
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    saved = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    index = torch.zeros(batch_size, dtype=torch.long, device=task.labels.device)
    batch = task.take(index)
    try:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            task.loss(on_meta(model), tuple(t.to("meta") for t in batch))
    except (RuntimeError, NotImplementedError):
        # models that branch on tensor values (transformers' attention masks call .item()) cannot run on meta
        # tensors: count one real forward's saved activations instead (one point fits, or it could not train)
        saved = 0
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            task.loss(model, batch)
    batch_bytes = sum(t.numel() * t.element_size() for t in batch)
    return 7 * params + saved + batch_bytes


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device``: CUDA's own count, or the kernel's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def split(cfgs: list[DictConfig], live: list[int], task, device: torch.device,
          memory_fraction: float) -> list[list[int]]:
    """Packs that fit in memory, or single points where packing does not apply."""
    if len(live) <= 1:
        return [[i] for i in live]
    cfg = cfgs[live[0]]
    model = build(cfg.model)
    reason = why_not_packable(cfg, model, task)
    if reason:
        log.info("points of %s/%s train one by one: %s", cfg.task.name, cfg.model.name, reason)
        return [[i] for i in live]
    per_point = pack_bytes(model, task, int(cfg.batch))
    budget = int(memory_fraction * free_bytes(device))
    size = max(1, min(len(live), budget // max(per_point, 1)))
    groups = [live[k:k + size] for k in range(0, len(live), size)]
    log.info("pack: %d points of B=%d, about %.1f MiB each; %.1f GiB of %s memory allowed (memory_fraction=%g) "
             "-> %d pack(s) of up to %d", len(live), cfg.batch, per_point / 2**20, budget / 2**30, device.type,
             memory_fraction, len(groups), size)
    return groups
