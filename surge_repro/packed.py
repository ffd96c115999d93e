"""Packed execution: the points of one workload that differ only in LR and seed train together, in one process.

At the paper's batch sizes one small model leaves a GPU idle and even a CPU mostly waits on per-step overhead, so
``run_pack(cfgs)`` trains P points as one: their parameters stacked along a leading axis, one ``torch.func.vmap``-ed
forward and backward, one optimizer step over the stack. Everything that makes a point a point stays its own: its
initial weights and data order (drawn from its seed exactly as ``train.run`` draws them), its LR, its protocol tracker,
its early finish and its store entry (``summary.json`` says which pack it trained in). A point that finishes leaves
the pack and the stack shrinks to the points still training. The launcher (``surge_repro.launcher``) forms packs
from a Hydra multirun; ``tests/test_packed.py`` checks that packed points equal the same points run one by one.

Per-point LRs through torch's own optimizers: the optimizer steps a zero buffer with LR 1, which leaves it holding
minus the unit-LR update, and each point's parameters then move by its LR times that. This is exactly the optimizer's
step for every optimizer whose update is the LR times a function of its state and gradients (``LR_LINEAR``), with
no weight decay (which reads the parameters); LR schedules act on the unit LR, so they multiply every point's LR.

What falls back to one-by-one (``why_not_packable`` says why, and the log repeats it): models with BatchNorm (its
running statistics are updated in place, which vmap cannot do per point), models vmap cannot run (a trial step of
two copies tells), other optimizers or weight decay, and tasks that cannot hand out batches by index. Other buffers
(rotary frequencies, position ids) are constants, shared by the points.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
import traceback
from collections import defaultdict

import torch
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call, stack_module_state, vmap

from surge_repro import checkpoint
from surge_repro.config import build, validate
from surge_repro.noise_scale import measured_step_gradients
from surge_repro.point import signature
from surge_repro.store import FINAL, PointDir, StoreError
from surge_repro.train import (
    PointRun,
    _train,
    interrupted,
    keep_mode,
    load_optimizer_state,
    probe_loss,
    setup,
)

log = logging.getLogger("surge_repro")

# optimizers whose step is lr * f(state, grad): their state never reads the LR (Adagrad: with lr_decay = 0). torch's
# by class name; others by module and name (a class of the same name elsewhere is not vouched for), each checked
# packed against one by one in tests/test_optimizers.py. Weight decay, which reads the parameters, is refused below.
LR_LINEAR = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Adagrad",
             "lion_pytorch.lion_pytorch.Lion", "surge_repro.optim.SignSGD", "surge_repro.optim.Signum")
FUSED = ("Adam", "AdamW", "SGD", "Adagrad")  # torch has fused kernels for these on CPU and CUDA


def _optimizer_class(cfg: DictConfig) -> type:
    from hydra.utils import get_class

    return get_class(cfg.optimizer._target_)


def why_not_packable(cfg: DictConfig, model: torch.nn.Module | None = None, task=None) -> str | None:
    """None if points of this workload can train packed, else the reason they train one by one."""
    cls = _optimizer_class(cfg)
    name = cls.__name__ if cls.__module__.split(".")[0] == "torch" else f"{cls.__module__}.{cls.__name__}"
    if name not in LR_LINEAR:
        return f"optimizer {cls.__name__} is not one whose step is linear in the LR ({', '.join(LR_LINEAR)})"
    if float(cfg.optimizer.get("weight_decay") or 0.0) != 0.0:
        return "weight decay reads the parameters, which the unit-LR step does not see"
    if float(cfg.optimizer.get("lr_decay") or 0.0) != 0.0:
        return "Adagrad's lr_decay makes the step non-linear in the LR"
    if model is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return (f"model {cfg.model.name} has BatchNorm, whose running statistics vmap cannot update per point")
    if task is not None and not hasattr(task, "take"):
        return f"task {cfg.task.name} does not hand out batches by index"
    if model is not None and task is not None:
        return _vmap_trial(cfg, model, task)
    return None


def _vmap_trial(cfg: DictConfig, model: torch.nn.Module, task) -> str | None:
    """One packed step of two copies of ``model`` at the run's batch size: None if it runs, else why not. Some
    models cannot be vmapped at all (transformers' eager MoE experts route with data-dependent shapes,
    aten::nonzero), and only trying tells; the cost is one step of two points."""
    device = task.labels.device if hasattr(task, "labels") else torch.device("cpu")
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

    index = torch.zeros(batch_size, dtype=torch.long, device=task.labels.device if hasattr(task, "labels") else None)
    batch = task.take(index)
    try:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            task.loss(_on_meta(model), tuple(t.to("meta") for t in batch))
    except (RuntimeError, NotImplementedError):
        # models that branch on tensor values (transformers' attention masks call .item()) cannot run on meta
        # tensors: count one real forward's saved activations instead (one point fits, or it could not train)
        saved = 0
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            task.loss(model, batch)
    batch_bytes = sum(t.numel() * t.element_size() for t in batch)
    return 7 * params + saved + batch_bytes


def _on_meta(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` on the meta device (no memory), with tied weights tied again: moving a model unties
    transformers' output layer from its input embedding, and functional_call must see them as one parameter."""
    base = copy.deepcopy(model).to("meta")
    if hasattr(base, "tie_weights"):
        base.tie_weights()
    return base


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


def run_pack(cfgs: list[DictConfig], memory_fraction: float = 0.5) -> list[dict]:
    """Train the points of ``cfgs`` (one workload, differing only in LR and seed) packed; return their summaries in
    order. Points already final in the store are skipped, points another process holds are left to it, and a pack
    larger than ``memory_fraction`` of the device's free memory is trained as several packs one after another."""
    for cfg in cfgs:
        validate(cfg)
    sigs = [signature(cfg) for cfg in cfgs]
    points = [PointDir(cfg.paths.store, cfg.experiment_name, sig) for cfg, sig in zip(cfgs, sigs)]
    results: list[dict | None] = [None] * len(cfgs)
    for i, point in enumerate(points):
        status = point.status()
        if status in FINAL:
            log.info("%s: already %s in %s; skipped", sigs[i], status, point.path)
            results[i] = point.summary()
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    _check_same_workload([cfgs[i] for i in todo])
    task = build(cfgs[todo[0]].task)  # missing or corrupt data fails here, before the store is touched
    task.check_batch_size(int(cfgs[todo[0]].batch))  # so does a batch larger than the data
    task = setup(cfgs[todo[0]], task)[1]  # on the device once, for every pack of this call
    with contextlib.ExitStack() as claims:
        live = []
        for i in todo:
            if not claims.enter_context(points[i].claim()):
                log.info("%s: another process is running this point; skipped", sigs[i])
                results[i] = {"status": "running", "signature": sigs[i]}
            elif points[i].status() in FINAL:
                results[i] = points[i].summary()
            else:
                live.append(i)
        states = {i: checkpoint.load(points[i]) for i in live}
        fresh = [i for i in live if states[i] is None]
        packs = defaultdict(list)  # a pack's checkpointed points resume as that pack, row for row
        for i in live:
            if states[i] is not None and states[i]["pack"]:
                packs[states[i]["pack"]["id"], states[i]["step"]].append(i)
            elif states[i] is not None:
                results[i] = _train(cfgs[i], points[i], sigs[i], task, states.pop(i))
        for (pack_id, step), group in packs.items():
            group.sort(key=lambda i: states[i]["pack"]["row"])
            log.info("pack %s: %d point(s) resume from their checkpoints at step %d", pack_id, len(group), step)
            summaries = _train_pack([cfgs[i] for i in group], [points[i] for i in group], [sigs[i] for i in group],
                                    task, [states.pop(i) for i in group])
            for i, summary in zip(group, summaries):
                results[i] = summary
        for group in _split(cfgs, fresh, task, memory_fraction):
            if len(group) == 1:
                i = group[0]
                results[i] = _train(cfgs[i], points[i], sigs[i], task)
                continue
            summaries = _train_pack([cfgs[i] for i in group], [points[i] for i in group], [sigs[i] for i in group],
                                    task)
            for i, summary in zip(group, summaries):
                results[i] = summary
    return results


def _check_same_workload(cfgs: list[DictConfig]) -> None:
    def rest(cfg: DictConfig) -> dict:
        tree = OmegaConf.to_container(cfg, resolve=True)
        tree.pop("hydra", None)
        tree["optimizer"].pop("lr")
        for key in ("seed", "experiment_name", "rounds"):
            tree.pop(key, None)
        return tree

    first = rest(cfgs[0])
    for cfg in cfgs[1:]:
        if rest(cfg) != first:
            raise ValueError("a pack holds points that differ in more than LR and seed; the launcher groups them "
                             "by their overrides, so this is a bug: report it with the command line")


def _split(cfgs: list[DictConfig], live: list[int], task, memory_fraction: float) -> list[list[int]]:
    """Packs that fit in memory, or single points where packing does not apply."""
    if len(live) <= 1:
        return [[i] for i in live]
    cfg = cfgs[live[0]]
    model = build(cfg.model)
    reason = why_not_packable(cfg, model, task)
    if reason:
        log.info("points of %s/%s train one by one: %s", cfg.task.name, cfg.model.name, reason)
        return [[i] for i in live]
    device = setup(cfg, task)[0]
    per_point = pack_bytes(model, task, int(cfg.batch))
    budget = int(memory_fraction * free_bytes(device))
    size = max(1, min(len(live), budget // max(per_point, 1)))
    groups = [live[k:k + size] for k in range(0, len(live), size)]
    log.info("pack: %d points of B=%d, about %.1f MiB each; %.1f GiB of %s memory allowed (memory_fraction=%g) "
             "-> %d pack(s) of up to %d", len(live), cfg.batch, per_point / 2**20, budget / 2**30, device.type,
             memory_fraction, len(groups), size)
    return groups


class Pack:
    """The stacked state of the points still training (parameters, the optimizer on its unit-LR update buffers, the
    LR schedule, each point's LR), the vmapped training step and the probe. ``keep`` shrinks it all to the points
    still training. ``models`` are the points' initialised models, ``lrs`` their LRs; ``cfg`` is any of the points'
    configs (they differ only in LR and seed). ``reports/bench_speed.py`` times this same object."""

    def __init__(self, cfg: DictConfig, task, models: list[torch.nn.Module], lrs: list[float],
                 device: torch.device):
        self.cfg, self.task, self.device = cfg, task, device
        self.base = _on_meta(models[0])  # the architecture; the weights come from the stack
        # buffers that are not state (rotary frequencies, position ids) are the same for every point: shared
        self.constants = {k: v.to(device) for k, v in models[0].named_buffers()}
        params, _ = stack_module_state(models)
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=device)
        self.buffers, self.optimizer, self.scheduler = self._optimizer()

    def _optimizer(self, old: torch.optim.Optimizer | None = None, keep: torch.Tensor | None = None):
        buffers = {k: torch.zeros_like(v) for k, v in self.params.items()}
        cls = _optimizer_class(self.cfg)
        fused = {"fused": True} if cls.__name__ in FUSED else {}
        optimizer = build(self.cfg.optimizer, lr=1.0, **fused)(list(buffers.values()))
        scheduler = build(self.cfg.lr.scheduler)(optimizer) if self.cfg.lr.get("scheduler") else None
        if old is not None:
            for old_p, new_p in zip(old.param_groups[0]["params"], optimizer.param_groups[0]["params"]):
                state = old.state.get(old_p)
                if state:  # per-point tensors lose the points that left; scalars (the step count) are shared
                    optimizer.state[new_p] = {k: v[keep] if _per_point(v) else v for k, v in state.items()}
            if scheduler is not None:
                scheduler.load_state_dict(self.scheduler.state_dict())
            optimizer.param_groups[0]["lr"] = old.param_groups[0]["lr"]
        return buffers, optimizer, scheduler

    def keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, device=self.device)
        self.params = {k: v.detach()[index].requires_grad_() for k, v in self.params.items()}
        self.lr = self.lr[index]
        self.buffers, self.optimizer, self.scheduler = self._optimizer(self.optimizer, index)

    def state(self, row: int) -> tuple[dict, dict, dict]:
        """The point at ``row``, copied out of the stack in the checkpoint's per-point format: its parameters and its
        optimizer state by parameter name (``train.optimizer_state``), and per name the optimizer entries that all
        points share (the step count)."""
        model = {k: v.detach()[row].to("cpu", copy=True) for k, v in self.params.items()}
        optimizer, shared = {}, {}
        for name, buffer in self.buffers.items():
            state = self.optimizer.state.get(buffer)
            if state:
                optimizer[name] = {k: v[row].to("cpu", copy=True) if _per_point(v) else v for k, v in state.items()}
                shared[name] = [k for k, v in state.items() if not _per_point(v)]
        return model, optimizer, shared

    def load(self, states: list[dict]) -> None:
        """Set the stack to the checkpointed points ``states`` (one per row) and the LR schedule to their step."""
        self.params = {k: torch.stack([s["model"][k] for s in states]).to(self.device).requires_grad_()
                       for k in self.params}
        merged = {}
        for name, entries in states[0]["optimizer"].items():
            shared = set(states[0]["optimizer_shared"][name])
            merged[name] = {k: v if k in shared else torch.stack([s["optimizer"][name][k] for s in states])
                            for k, v in entries.items()}
        load_optimizer_state(self.optimizer, list(self.buffers), merged)
        checkpoint.replay_schedule(self.scheduler, states[0]["step"])

    def point_loss(self, params: dict, *batch: torch.Tensor) -> torch.Tensor:
        """One point's loss, from its parameters: what vmap maps over the stack."""
        return self.task.loss(lambda x: functional_call(self.base, {**params, **self.constants}, (x,)), batch)

    def train_step(self, batch: tuple, noise: list | None = None) -> torch.Tensor:
        """Forward, backward and optimizer step of every point on its own batch (``batch``: tensors of points x B x
        ...); returns the points' minibatch losses (before the step), as the sequential loop sees them. ``noise``
        (one ``NoiseScale`` per row) measures B_simple from the batch's halves, as ``train.train_step`` does."""
        if noise is None:
            losses = vmap(self.point_loss)(self.params, *batch)
            losses.sum().backward()  # the points are independent: each gets the gradient of its own loss
        else:
            params = list(self.params.values())
            losses, full, diff_sq, full_sq, sizes = measured_step_gradients(
                lambda part: vmap(self.point_loss)(self.params, *part), params, batch, dim=1, points=True)
            for p, g in zip(params, full):
                p.grad = g
            for row, (d, f) in enumerate(zip(diff_sq.tolist(), full_sq.tolist())):
                noise[row].add(d, f, sizes)
        self._optimizer_step()
        return losses.detach()

    def probe(self, rows: list[int], probe_batch: tuple, chunk: int = 256) -> list[float]:
        """Probe-set losses of the points at these rows of the stack, in chunks as ``train.probe_loss``.
        A probe is one large forward per point: on a GPU vmap runs them as one; on a CPU a loop of plain forwards
        (``train.probe_loss`` itself) is twice as fast as vmap's grouped convolutions (measured on the CNN, 8 points
        x 256 images: 115 vs 240 ms)."""
        self.base.eval()
        if self.device.type != "cuda":
            values = [probe_loss(lambda b, r=r: self.point_loss({k: v.detach()[r] for k, v in self.params.items()},
                                                                 *b), probe_batch, chunk) for r in rows]
            self.base.train()
            return values
        inputs, labels = probe_batch
        index = torch.tensor(rows, device=self.device)
        params = {k: v.detach()[index] for k, v in self.params.items()}
        total = torch.zeros(len(rows), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for i in range(0, len(labels), chunk):
                part = (inputs[i:i + chunk], labels[i:i + chunk])
                total += vmap(self.point_loss, in_dims=(0, None, None))(params, *part).double() * len(part[1])
        self.base.train()
        return (total / len(labels)).tolist()

    def _optimizer_step(self) -> None:
        """One optimizer step of every point from the gradients the backward left on the stacked parameters."""
        for k, p in self.params.items():
            self.buffers[k].grad, p.grad = p.grad, None
        self.optimizer.step()  # buffers now hold -(unit-LR update), times the schedule's factor
        if self.scheduler is not None:
            self.scheduler.step()
        with torch.no_grad():
            for k, p in self.params.items():
                update = self.buffers[k]
                p.addcmul_(update, self.lr.view(-1, *([1] * (p.dim() - 1))))
                update.zero_()
                update.grad = None

    @property
    def unit_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def _per_point(value) -> bool:
    """Whether an optimizer state entry of the stack has a row per point (moments) or is shared (the step count)."""
    return torch.is_tensor(value) and value.dim() > 0


def _train_pack(cfgs: list[DictConfig], points: list[PointDir], sigs: list[str], task,
                states: list[dict] | None = None) -> list[dict]:
    """Train these points as one pack from their start, or from ``states``: their checkpoints, all of one pack at
    one step, in the order of their rows."""
    cfg = cfgs[0]
    device, task = setup(cfg, task)
    batch_size = int(cfg.batch)
    models = []
    for c in cfgs:
        torch.manual_seed(c.seed)  # the same initial weights as the point would get alone (train._train)
        models.append(build(c.model).to(device))
    pack = Pack(cfg, task, models, [float(c.optimizer.lr) for c in cfgs], device)
    del models
    probe_batch = task.probe(cfg.protocol.probe.size, cfg.protocol.probe.seed)

    step = 0
    if states is None:
        pack_info = {"points": len(cfgs), "id": sigs[0]}
        rows = list(range(len(cfgs)))  # each point's row in the pack as it started: a resumed pack keeps the order
        try:
            initial = pack.probe(rows, probe_batch)
        except Exception as err:  # a model that cannot take its task's batches: every point failed
            log.error("pack %s: failed before its first step: %s: %s", pack_info["id"], type(err).__name__, err)
            return [PointRun(c, p, s, math.nan, device, pack=pack_info).finish(f"{type(err).__name__}: {err}")
                    for c, p, s in zip(cfgs, points, sigs)]
        runs = [PointRun(c, p, s, loss, device, pack=pack_info) for c, p, s, loss in zip(cfgs, points, sigs, initial)]
    else:
        pack_info = {k: states[0]["pack"][k] for k in ("points", "id")}
        rows = [s["pack"]["row"] for s in states]
        step = states[0]["step"]
        keep_mode(pack_info["id"], states[0], device)
        live_then = states[0]["pack"].get("live", len(states))
        smaller = None
        if len(states) < live_then:  # pack-mates not relaunched: their rows are missing from the stack
            smaller = f"resumed in a pack of {len(states)} of the {live_then} it was checkpointed with"
            log.warning("pack %s: %s (the others were not relaunched): equal to rounding, not bit for bit; the "
                        "summaries record it. Relaunch the same sweep to keep the pack whole", pack_info["id"], smaller)
        pack.load(states)
        checkpoint.set_rng_state(states[0]["rng"])
        runs = [PointRun(c, p, s, None, device, pack=pack_info, resume=st["run"], mode_change=smaller)
                for c, p, s, st in zip(cfgs, points, sigs, states)]
    log.info("pack %s: %d points of B=%d train together (LRs %s; seeds %s)", pack_info["id"], len(runs), batch_size,
             ",".join(sorted({f"{c.optimizer.lr:.3g}" for c in cfgs})), ",".join(sorted({str(c.seed) for c in cfgs})))
    live = list(range(len(runs)))  # row r of the stack is the point runs[live[r]]
    per_epoch = task.epoch_length(batch_size)
    orders = [task.epoch_orders(c.seed, step // per_epoch) for c in cfgs]  # as task.batches draws them alone
    epoch = None
    summaries: list[dict | None] = [None] * len(runs)
    error = None
    start = last_report = time.perf_counter()
    first = step

    def save() -> None:  # every point still training, at this step
        rng = checkpoint.rng_state()
        for r, j in enumerate(live):
            model, optimizer, shared = pack.state(r)
            checkpoint.save(points[j], {"step": step, "model": model, "optimizer": optimizer,
                                        "optimizer_shared": shared, "rng": rng, "run": runs[j].state(),
                                        "pack": {**pack_info, "row": rows[j], "live": len(live)},
                                        "mode": runs[j].mode})

    with checkpoint.Saver(cfg.checkpoint.every_s, save).running() as saver:
        try:
            task.check_batch_size(batch_size)
            while live:
                if epoch is None or step % per_epoch == 0:  # every point starts an epoch at the same step
                    epoch = torch.stack([next(order) for order in orders])
                offset = (step % per_epoch) * batch_size
                batch = task.take(epoch[:, offset:offset + batch_size])
                noise = [runs[j].noise for j in live] if runs[live[0]].noise.due(step + 1) else None
                losses = pack.train_step(batch, noise)
                step += 1
                values = losses.tolist()
                probe_rows = [r for r, j in enumerate(live) if runs[j].tracker.needs_probe(step)]
                probed = dict(zip(probe_rows, pack.probe(probe_rows, probe_batch))) if probe_rows else {}
                lr = pack.unit_lr
                for r, j in enumerate(live):
                    runs[j].update(step, values[r], lambda r=r: probed[r], lr * float(cfgs[j].optimizer.lr))
                if time.perf_counter() - last_report > cfg.progress.every_s:
                    last_report = time.perf_counter()
                    log.info("pack %s: step %d, %d of %d points training, %.2f ms/step", pack_info["id"], step,
                             len(live), len(runs), 1e3 * (last_report - start) / (step - first))
                done = [r for r, j in enumerate(live) if runs[j].finished]
                if done:
                    for r in done:
                        summaries[live[r]] = runs[live[r]].finish()
                    keep = [r for r in range(len(live)) if r not in done]
                    live = [live[r] for r in keep]
                    if live:
                        pack.keep(keep)
                        epoch = epoch[keep]
                        orders = [orders[r] for r in keep]
                if live:
                    saver.step()
        except Exception as err:  # every point still training is recorded as failed; a relaunch reruns them
            if interrupted(err) or isinstance(err, StoreError):  # a full disk stops the sweep, not the point:
                raise  # it stays incomplete and resumes from its last checkpoint once there is room
            error = f"{type(err).__name__}: {err}"
            log.error("pack %s: failed at step %d: %s\n%s", pack_info["id"], step, error, traceback.format_exc())
    for j in live:
        summaries[j] = runs[j].finish(error)
    return summaries
