"""The step engines of the one training loop (``surge_repro.run.train``): what trains the points it holds.

An engine holds P points of one workload (P rows) and does their optimizer steps and their probes; the loop holds
everything else (data order, protocol, store, checkpoints), so a point's batches, events and files do not depend on
which engine stepped it. Two engines, one interface (``Engine``):

* ``Single``: one point, its own ``torch.nn.Module`` and torch optimizer. It trains every workload (BatchNorm,
  weight decay, any optimizer), and it is the reference the packed engine is tested against
  (``tests/test_packed.py``). A point alone is not a pack of one because packing cannot train every workload
  (``packing.why_not_packable``), and because on a CPU a plain model steps faster than a vmapped one at large
  batches (``reports/bench_speed.py``).
* ``Pack``: P points stacked along a leading axis, one ``torch.func.vmap``-ed forward and backward, one optimizer
  step over the stack. Per-point LRs through torch's own optimizers: the optimizer steps a zero buffer with LR 1,
  which leaves it holding minus the unit-LR update, and each point's parameters then move by its LR times that.
  This is exactly the optimizer's step for every optimizer whose update is the LR times a function of its state and
  gradients (``packing.LR_LINEAR``), with no weight decay (which reads the parameters); LR schedules act on the
  unit LR, so they multiply every point's LR. Buffers that are not state (rotary frequencies, position ids) are
  constants, shared by the points.

Both build a point's initial weights from its seed in the same way (``build_point``), take a step's batches as
rows x B indices into the task (``take``), and save and load a point in the same checkpoint format (parameters and
optimizer state by parameter name).

With ``compile`` set (the root config's key; ``compile_mode``) both run their step's forward and backward through
``torch.compile`` (AOTAutograd compiles the backward with the forward); the optimizer step, the probes and the
steps that measure B_simple (``noise_scale.measured_step_gradients``, every ``noise_scale.every`` steps) stay eager.
A pack that shrinks runs padded to a size it compiled for, and compiles again only when it has halved
(``Pack._losses``): at most log2(P) + 1 graphs for P points, not one per size (``tests/test_compile.py``). Whether it
pays: ``reports/bench_compile.py``.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from omegaconf import DictConfig
from torch.func import functional_call, stack_module_state, vmap

from surge_repro.config import build
from surge_repro.run import checkpoint
from surge_repro.run.noise_scale import NoiseScale, measured_step_gradients

FUSED = ("Adam", "AdamW", "SGD", "Adagrad")  # torch has fused kernels for these on CPU and CUDA
# off: eager. aot_eager: torch.compile's graph capture and AOTAutograd without code generation (no C++ compiler
# needed; the check that capture keeps the numbers). The rest are torch.compile's inductor modes; reduce-overhead adds
# CUDA graphs on a GPU (on a CPU it is default).
COMPILE_MODES = ("off", "aot_eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Engine(Protocol):
    """What the loop asks of an engine; rows are the points still training, in the order the engine holds them."""

    device: torch.device
    batch_norm: bool  # a model with BatchNorm: B_simple's half-batches would change the step (not measured then)

    def take(self, task, index: torch.Tensor) -> tuple:
        """The step's batches from ``index`` (rows x B indices into the task's training set)."""

    def train_step(self, batch: tuple, noise: list[NoiseScale] | None = None) -> torch.Tensor:
        """One optimizer step of every row; the rows' minibatch losses (before the step)."""

    def probe(self, rows: list[int], probe_batch: tuple) -> list[float]:
        """The probe-set losses of these rows."""

    def lrs(self) -> list[float]:
        """Each row's LR at this step (after the schedule)."""

    def keep(self, rows: list[int]) -> None:
        """Drop every row but these (points that finished leave the engine)."""

    def state(self, row: int) -> dict:
        """The row's entries of its checkpoint (``model``, ``optimizer`` and, packed, ``optimizer_shared``)."""

    def load(self, states: list[dict], step: int) -> None:
        """Set every row from its checkpoint, at ``step``."""


def build_point(cfg: DictConfig, device: torch.device):
    """The point's model (initialised from its seed), optimizer and LR scheduler (None for a constant LR)."""
    torch.manual_seed(cfg.seed)  # the seed sets the initial weights; the task draws the data order from it too
    model = build(cfg.model).to(device)
    optimizer = build(cfg.optimizer)(model.parameters())
    scheduler = build(cfg.lr.scheduler)(optimizer) if cfg.lr.get("scheduler") else None
    return model, optimizer, scheduler


def compile_mode(cfg: DictConfig) -> str:
    """The config's ``compile`` key as one of ``COMPILE_MODES`` (YAML reads a bare ``off`` as false)."""
    value = cfg.get("compile", "off")
    if value is None or value is False:
        return "off"
    if value not in COMPILE_MODES:
        raise ValueError(f"compile={value!r} is not a compile mode. Fix: compile= one of {', '.join(COMPILE_MODES)}")
    return str(value)


def compiled(fn, mode: str):
    """``fn`` through ``torch.compile`` in ``mode`` (``compile_mode``), or ``fn`` itself when ``mode`` is off."""
    if mode == "off":
        return fn
    # One engine trains at a time in a process, and torch caches graphs per function (this one's code is every
    # engine's): forget the last engine's graphs, so they do not count toward torch's recompile limit, past which
    # it would run this engine eagerly without saying so
    torch.compiler.reset()
    if mode == "aot_eager":
        return torch.compile(fn, backend="aot_eager")
    return torch.compile(fn, mode=mode)


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Single:
    """One point: its model, its torch optimizer and LR scheduler, stepped as torch steps them."""

    def __init__(self, cfg: DictConfig, task, device: torch.device):
        self.task, self.device = task, device
        self.model, self.optimizer, self.scheduler = build_point(cfg, device)
        self.names = [name for name, _ in self.model.named_parameters()]
        self.batch_norm = has_batch_norm(self.model)
        self.loss = compiled(lambda batch: task.loss(self.model, batch), compile_mode(cfg))

    def take(self, task, index: torch.Tensor) -> tuple:
        return task.take(index[0])

    def train_step(self, batch: tuple, noise: list[NoiseScale] | None = None) -> torch.Tensor:
        return train_step(self.model, self.optimizer, self.scheduler, self.task, batch,
                          noise[0] if noise else None, loss=self.loss).view(1)

    def probe(self, rows: list[int], probe_batch: tuple) -> list[float]:
        return [probe_model(self.model, self.task, probe_batch)] if rows else []

    def lrs(self) -> list[float]:
        return [self.optimizer.param_groups[0]["lr"]]

    def keep(self, rows: list[int]) -> None:
        if rows != [0]:
            raise ValueError(f"a single point's engine keeps its one row or ends, not rows {rows}")

    def state(self, row: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": optimizer_state(self.optimizer, self.names)}

    def load(self, states: list[dict], step: int) -> None:
        (state,) = states
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, self.names, state["optimizer"])
        checkpoint.replay_schedule(self.scheduler, step)


def probe_loss(loss_fn, probe_batch: tuple, chunk: int = 256) -> float:
    """Mean of ``loss_fn(batch)`` over the probe set, in chunks (faster on CPUs, bounded memory on GPUs)."""
    inputs, labels = probe_batch
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(labels), chunk):
            total += loss_fn((inputs[i:i + chunk], labels[i:i + chunk])).item() * len(labels[i:i + chunk])
    return total / len(labels)



def probe_model(model: torch.nn.Module, task, probe_batch: tuple) -> float:
    """The model's mean loss on the probe set. Dropout is off (the probe measures the parameters, not a random
    mask). BatchNorm uses the batch statistics of each probe chunk, as training does: its running averages lag far
    behind early in training, where the paper's targets sit (Fig. 3); copies of the buffers take the update, so
    probing never moves the running statistics."""
    model.eval()
    if not has_batch_norm(model):
        value = probe_loss(lambda batch: task.loss(model, batch), probe_batch)
    else:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
        scratch = {k: v.clone() for k, v in model.named_buffers()}
        value = probe_loss(lambda batch: task.loss(lambda x: functional_call(model, scratch, (x,)), batch),
                           probe_batch)
    model.train()
    return value


def train_step(model, optimizer, scheduler, task, batch, noise: NoiseScale | None = None,
               loss=None) -> torch.Tensor:
    """One optimizer step of one point; returns its minibatch loss (before the step). With ``noise`` the gradient
    is taken as the weighted mean of the batch's two halves' gradients, which measures B_simple (``noise_scale``).
    ``loss``: the model's loss of a batch (``Single``'s, compiled or not); the task's by default."""
    optimizer.zero_grad(set_to_none=True)
    if noise is None:
        loss = loss(batch) if loss is not None else task.loss(model, batch)
        loss.backward()
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        loss, full, diff_sq, full_sq, sizes = measured_step_gradients(lambda part: task.loss(model, part), params,
                                                                      batch)
        for p, g in zip(params, full):
            p.grad = g
        noise.add(diff_sq.item(), full_sq.item(), sizes)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, dict]:
    """The optimizer's per-parameter state keyed by parameter name (``names`` in the order the optimizer holds its
    parameters): the checkpoint format, the same for a point trained alone or packed."""
    params = optimizer.param_groups[0]["params"]
    return {name: dict(optimizer.state[p]) for name, p in zip(names, params) if p in optimizer.state}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: list[str], state: dict[str, dict]) -> None:
    """Put ``optimizer_state``'s output back, through torch's own load_state_dict (it places each tensor where
    this optimizer keeps it: a fused Adam's step count on the device, a plain one's on the CPU)."""
    full = optimizer.state_dict()
    full["state"] = {i: state[name] for i, name in enumerate(names) if name in state}
    optimizer.load_state_dict(full)


def optimizer_class(cfg: DictConfig) -> type:
    from hydra.utils import get_class

    return get_class(cfg.optimizer._target_)


def on_meta(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` on the meta device (no memory), with tied weights tied again: moving a model unties
    transformers' output layer from its input embedding, and functional_call must see them as one parameter."""
    base = copy.deepcopy(model).to("meta")
    if hasattr(base, "tie_weights"):
        base.tie_weights()
    return base


class Pack:
    """The stacked state of the points still training (parameters, the optimizer on its unit-LR update buffers, the
    LR schedule, each point's LR), the vmapped training step and the probe. ``keep`` shrinks it all to the points
    still training. ``models`` are the points' initialised models, ``lrs`` their LRs; ``cfg`` is any of the points'
    configs (they differ only in LR and seed). ``reports/bench_speed.py`` times this same object."""

    def __init__(self, cfg: DictConfig, task, models: list[torch.nn.Module], lrs: list[float],
                 device: torch.device):
        self.cfg, self.task, self.device = cfg, task, device
        self.base = on_meta(models[0])  # the architecture; the weights come from the stack
        # buffers that are not state (rotary frequencies, position ids) are the same for every point: shared
        self.constants = {k: v.to(device) for k, v in models[0].named_buffers()}
        params, _ = stack_module_state(models)
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=device)
        self.point_lrs = [float(lr) for lr in lrs]  # as configured (the float32 stack rounds them)
        self.batch_norm = False  # packing refuses BatchNorm (``packing.why_not_packable``)
        self.buffers, self.optimizer, self.scheduler = self._optimizer()
        self.compile = compile_mode(cfg)
        self.losses = compiled(lambda params, *batch: vmap(self.point_loss)(params, *batch), self.compile)
        self.sizes: list[int] = []  # the pack sizes ``losses`` has been compiled for

    @classmethod
    def build(cls, cfgs: list[DictConfig], task, device: torch.device) -> "Pack":
        """The pack of these points (one workload; they differ only in LR and seed), each initialised from its seed
        as ``build_point`` initialises it alone."""
        models = []
        for c in cfgs:
            torch.manual_seed(c.seed)
            models.append(build(c.model).to(device))
        return cls(cfgs[0], task, models, [float(c.optimizer.lr) for c in cfgs], device)

    def _optimizer(self, old: torch.optim.Optimizer | None = None, keep: torch.Tensor | None = None):
        buffers = {k: torch.zeros_like(v) for k, v in self.params.items()}
        cls = optimizer_class(self.cfg)
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
        self.point_lrs = [self.point_lrs[r] for r in keep]
        self.buffers, self.optimizer, self.scheduler = self._optimizer(self.optimizer, index)

    def state(self, row: int) -> dict:
        """The point at ``row``, copied out of the stack in the checkpoint's per-point format: its parameters and its
        optimizer state by parameter name (``optimizer_state``), and per name the optimizer entries that all
        points share (the step count)."""
        model = {k: v.detach()[row].to("cpu", copy=True) for k, v in self.params.items()}
        optimizer, shared = {}, {}
        for name, buffer in self.buffers.items():
            state = self.optimizer.state.get(buffer)
            if state:
                optimizer[name] = {k: v[row].to("cpu", copy=True) if _per_point(v) else v for k, v in state.items()}
                shared[name] = [k for k, v in state.items() if not _per_point(v)]
        return {"model": model, "optimizer": optimizer, "optimizer_shared": shared}

    def load(self, states: list[dict], step: int) -> None:
        """Set the stack to the checkpointed points ``states`` (one per row) and the LR schedule to their step."""
        self.params = {k: torch.stack([s["model"][k] for s in states]).to(self.device).requires_grad_()
                       for k in self.params}
        merged = {}
        for name, entries in states[0]["optimizer"].items():
            shared = set(states[0]["optimizer_shared"][name])
            merged[name] = {k: v if k in shared else torch.stack([s["optimizer"][name][k] for s in states])
                            for k, v in entries.items()}
        load_optimizer_state(self.optimizer, list(self.buffers), merged)
        checkpoint.replay_schedule(self.scheduler, step)

    def point_loss(self, params: dict, *batch: torch.Tensor) -> torch.Tensor:
        """One point's loss, from its parameters: what vmap maps over the stack."""
        return self.task.loss(lambda x: functional_call(self.base, {**params, **self.constants}, (x,)), batch)

    def train_step(self, batch: tuple, noise: list | None = None) -> torch.Tensor:
        """Forward, backward and optimizer step of every point on its own batch (``batch``: tensors of points x B x
        ...); returns the points' minibatch losses (before the step), as the sequential loop sees them. ``noise``
        (one ``NoiseScale`` per row) measures B_simple from the batch's halves, as ``train_step`` does."""
        if noise is None:
            losses = self._losses(batch)
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

    def _losses(self, batch: tuple) -> torch.Tensor:
        """The rows' losses of ``batch``, vmapped; compiled, at one of a few stack sizes. The stack's leading
        dimension cannot be dynamic: vmap turns a convolution over stacked weights into one grouped convolution,
        whose group count torch.compile specialises. So a pack that shrank runs at the smallest size compiled so
        far, its extra rows copies of row 0 whose results are dropped (rows are independent: each row's loss and
        gradient are the same bits at any stack size, ``tests/test_compile.py``), until more than half the rows
        would be such copies; then it compiles for its own size. A pack of P points compiles at most
        log2(P) + 1 times, and does at most twice the work of its live rows."""
        rows = len(self.point_lrs)
        if self.compile == "off":
            return self.losses(self.params, *batch)
        size = min((s for s in self.sizes if rows <= s < 2 * rows), default=None)
        if size is None:
            size = rows
            self.sizes.append(rows)
        params, pad = self.params, size - rows
        if pad:
            params = {k: torch.cat([v, v[:1].detach().expand(pad, *v.shape[1:])]) for k, v in params.items()}
            batch = tuple(torch.cat([t, t[:1].expand(pad, *t.shape[1:])]) for t in batch)
        return self.losses(params, *batch)[:rows]

    def take(self, task, index: torch.Tensor) -> tuple:
        return task.take(index)

    def lrs(self) -> list[float]:
        return [self.unit_lr * lr for lr in self.point_lrs]

    def probe(self, rows: list[int], probe_batch: tuple, chunk: int = 256) -> list[float]:
        """Probe-set losses of the points at these rows of the stack, in chunks as ``probe_loss``.
        A probe is one large forward per point: on a GPU vmap runs them as one; on a CPU a loop of plain forwards
        (``probe_loss`` itself) is twice as fast as vmap's grouped convolutions (measured on the CNN, 8 points
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
