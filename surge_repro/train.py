"""The one training loop: ``run(cfg)`` trains one grid point with the paper's protocol and writes it to the store.

Every workload goes through here; tasks and models only supply objects. Run it through ``run.py``::

    python run.py task=fashion_mnist model=cnn5 optimizer=adam batch=8 optimizer.lr=3e-4   # one point
    python run.py -m +experiment=quickstart                                                # a grid

Step accounting is explicit because it is the subject of the paper: ``step`` counts optimizer steps, each on exactly
``batch`` units (``task.batch_unit``: examples, sequences or tokens), so ``examples = step * batch`` counts units.
The LR is the raw per-step LR of the optimizer, constant unless the ``lr`` group says otherwise; no rule rescales it
with the batch size.
"""

from __future__ import annotations

import logging
import math
import time
import traceback

import torch
from torch.func import functional_call
from omegaconf import DictConfig, OmegaConf

from surge_repro import checkpoint, provenance
from surge_repro.config import build, validate
from surge_repro.mirror import Mirror
from surge_repro.noise_scale import NoiseScale, measured_step_gradients
from surge_repro.point import identity, signature
from surge_repro.protocol import DIVERGED, TargetTracker
from surge_repro.store import FINAL, PointDir, StoreError

log = logging.getLogger("surge_repro")


def run(cfg: DictConfig) -> dict:
    """Train the point unless the store already has it; return its summary (status ``running`` if another process
    holds it). A point checkpointed in a pack resumes as a pack (of one, if it is alone now): in its mode."""
    validate(cfg)
    sig = signature(cfg)
    point = PointDir(cfg.paths.store, cfg.experiment_name, sig)
    status = point.status()
    if status in FINAL:
        log.info("%s: already %s in %s; skipped", sig, status, point.path)
        return point.summary()
    task = build(cfg.task)  # missing or corrupt data fails here, before the store is touched
    task.check_batch_size(int(cfg.batch))  # so does a batch larger than the data: a config error, not a run's
    with point.claim() as claimed:
        if not claimed:
            log.info("%s: another process is running this point; skipped", sig)
            return {"status": "running", "signature": sig}
        if point.status() in FINAL:  # finished by another process while this one loaded data
            return point.summary()
        state = checkpoint.load(point)
        if state is not None and state["pack"]:
            from surge_repro.packed import _train_pack  # packed builds on this module

            return _train_pack([cfg], [point], [sig], task, [state])[0]
        return _train(cfg, point, sig, task, state)


def device_for(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but torch sees no CUDA device here. Fix: device=cpu (or device=auto)")
    return torch.device(name)


def setup(cfg: DictConfig, task):
    """Device, thread count and the task on the device; shared with ``packed``."""
    device = device_for(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    return device, task.to(device)


def execution_mode(device: torch.device, packed: bool) -> dict:
    """How a point trains, beyond its identity: alone or packed (vmap's batched kernels), the CPU threads (a
    kernel's reductions split by thread count) and the device. Runs of one point in one mode give the same bits; in
    two modes they agree to float rounding, which training amplifies (the README's "what can go wrong")."""
    return {"packed": bool(packed), "threads": torch.get_num_threads(), "device": device.type}


def keep_mode(sig: str, state: dict, device: torch.device) -> None:
    """Resume a checkpointed point in the mode it trained in: its thread count (whatever ``threads`` says now); a
    device that cannot be kept is named in the log."""
    mode = state["mode"]
    if mode["threads"] != torch.get_num_threads():
        log.info("%s: resumes with %d threads as it trained (not %d): the same bits", sig, mode["threads"],
                 torch.get_num_threads())
        torch.set_num_threads(int(mode["threads"]))
    if mode["device"] != device.type:
        log.warning("%s: trained on %s and resumes on %s: equal to rounding, not bit for bit (the summary records "
                    "it)", sig, mode["device"], device.type)


def _point_fields(cfg: DictConfig) -> dict:
    betas = cfg.optimizer.get("betas")
    return {
        "task": cfg.task.name, "model": cfg.model.name, "optimizer": cfg.optimizer.name, "lr_schedule": cfg.lr.name,
        "batch_size": int(cfg.batch), "batch_unit": cfg.task.batch_unit, "lr": float(f"{cfg.optimizer.lr:.6g}"),
        "beta1": None if betas is None else float(betas[0]), "beta2": None if betas is None else float(betas[1]),
        "seed": int(cfg.seed), "k": int(cfg.protocol.k), "windows": int(cfg.protocol.windows),
        "targets": list(cfg.protocol.targets),
    }


class PointRun:
    """The bookkeeping of one run of a point: its protocol tracker, its files in the store and its W&B mirror.

    The sequential loop below and the packed loop (``surge_repro.packed``) both train and hand it one minibatch loss
    per optimizer step; it records events and metrics and, at the end, the summary. ``pack`` (packed runs only) says
    which pack the point trained in, and lands in summary.json. ``resume`` is the ``state()`` of a run that was
    interrupted (from its checkpoint): the run goes on from there, and ``initial_loss`` is not needed;
    ``mode_change`` says why it goes on in another mode than it trained in (recorded in ``mode_changes``).
    """

    def __init__(self, cfg: DictConfig, point: PointDir, sig: str, initial_loss: float | None, device: torch.device,
                 pack: dict | None = None, resume: dict | None = None, mode_change: str | None = None):
        self.cfg, self.point, self.sig, self.device, self.pack = cfg, point, sig, device, pack
        mode = execution_mode(device, packed=pack is not None)
        self.identity = identity(cfg)  # at the run's start: what it trains on now, as its signature said
        self.batch_size = int(cfg.batch)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if resume is None:
            proto = cfg.protocol
            self.tracker = TargetTracker(
                targets=list(proto.targets), k=proto.k, windows=proto.windows, batch_size=self.batch_size,
                initial_loss=initial_loss,
                probe_every=proto.probe.every, probe_min_gap=proto.probe.min_gap,
                probe_reach=proto.probe.reach, ema_examples=proto.ema_examples,
                diverge_factor=proto.diverge_factor, max_steps=proto.max_steps, max_examples=proto.max_examples,
                patience=proto.patience)
            point.begin(OmegaConf.to_yaml(resolved))
            self.step, elapsed, mirror_id, self.resumed = 0, 0.0, None, []
            self.mode, self.mode_changes = mode, []
            self.noise = NoiseScale(self.batch_size, every=int(cfg.noise_scale.every), ema=float(cfg.noise_scale.ema))
            for event in self.tracker.start_events:  # targets the initial loss already meets: S = 0
                point.append("events", event)
                _log_event(sig, event)
        else:
            self.tracker = TargetTracker.from_state(resume["tracker"])
            self.noise = NoiseScale.from_state(resume["noise"])
            point.resume(OmegaConf.to_yaml(resolved), resume["files"])
            self.step, elapsed, mirror_id = resume["step"], resume["wall_s"], resume["mirror_id"]
            self.resumed = resume["resumed"] + [self.step]
            self.mode, self.mode_changes = resume["mode"], resume["mode_changes"]
            if mode != self.mode or mode_change:  # a device or pack-mates that could not be kept (``keep_mode``)
                why = mode_change or f"resumed on {mode['device']}, trained on {self.mode['device']}"
                self.mode_changes = self.mode_changes + [{"step": self.step, "mode": mode, "why": why}]
        self.mirror = Mirror(cfg.logger, group=cfg.experiment_name, name=sig, config=resolved, directory=point.path,
                             resume_id=mirror_id)
        # wall_s counts training time over all of the run's attempts, without the time this process spends in W&B
        self.start, self.mirror_start = time.perf_counter() - elapsed, Mirror.seconds
        self.last_report = time.perf_counter()
        self.loss = math.nan
        log.info("%s: B=%d lr=%.6g seed=%d -> %s%s", sig, self.batch_size, cfg.optimizer.lr, cfg.seed, point.path,
                 f" (resumed at step {self.step})" if resume else "")

    def state(self) -> dict:
        """What a checkpoint keeps of this run's bookkeeping (``resume`` takes it back)."""
        return {"tracker": self.tracker.state_dict(), "noise": self.noise.state_dict(), "step": self.step,
                "wall_s": self.wall_s(), "files": self.point.stream_sizes(), "mirror_id": self.mirror.id,
                "resumed": self.resumed, "mode": self.mode, "mode_changes": self.mode_changes}

    def wall_s(self) -> float:
        """Seconds this run has trained, over all its attempts, less what this process spent in W&B meanwhile (an
        unreachable server must not read as a slow point)."""
        return time.perf_counter() - self.start - (Mirror.seconds - self.mirror_start)

    @property
    def finished(self) -> bool:
        return self.tracker.finished

    def update(self, step: int, loss: float, probe, lr: float) -> None:
        """Record optimizer step ``step`` (1-based) and its minibatch loss; ``probe()`` gives the probe-set loss."""
        self.step, self.loss = step, loss
        tracker, cfg = self.tracker, self.cfg
        events = tracker.update(step, loss, probe)
        for event in events:
            if event["event"] == "target":  # B_simple where the point crossed the target, beside its S and E
                measured = self.noise.record()
                event.update(measured)
                vars(tracker.records[event["target"]]).update(measured)
            self.point.append("events", event)
            _log_event(self.sig, event)
        if events or step % cfg.progress.log_every == 0 or tracker.finished:
            record = {"step": step, "examples": step * self.batch_size, "loss": loss, "estimate": tracker.estimate,
                      "lr": lr, "wall_s": round(self.wall_s(), 3)}
            if self.noise.measurements:
                record["b_simple"] = self.noise.record()["b_simple"]
            self.point.append("metrics", record)
            self.mirror.log(record, step)
        now = time.perf_counter()
        if self.pack is None and now - self.last_report > cfg.progress.every_s:  # a pack reports for its points
            self.last_report = now
            log.info("%s: step %d, %d examples, loss %.4f (estimate %.4f), %.2f ms/step", self.sig, step,
                     step * self.batch_size, loss, tracker.estimate, 1e3 * (now - self.start) / step)

    def finish(self, error: str | None = None) -> dict:
        """Write summary.json (status ``failed`` if ``error``), close the mirror, return the summary."""
        tracker, step = self.tracker, self.step
        summary = {
            "status": "failed" if error else tracker.status, "experiment": self.cfg.experiment_name,
            "signature": self.sig, "point": _point_fields(self.cfg), "targets": tracker.summary(), "steps": step,
            "examples_seen": step * self.batch_size, "initial_loss": tracker.initial_loss,
            "final_probe_loss": tracker.probe_loss, "final_estimate": tracker.estimate, "probes": tracker.probes,
            "wall_s": round(self.wall_s(), 3), "error": error, "pack": self.pack, "mode": self.mode,
            "mode_changes": self.mode_changes, "resumed_at": self.resumed, "identity": self.identity,
            "provenance": provenance.collect(self.device),
        }
        self.point.write_summary(summary)
        self.mirror.finish({k: summary[k] for k in ("status", "targets", "steps", "examples_seen", "wall_s")})
        reached = [f"{r['target']:g}: S={r['steps']}, drop={r['loss_drop']:.4f}" for r in summary["targets"]
                   if r["measured"]]
        log.info("%s: %s after %d steps in %.1f s%s", self.sig, summary["status"], step, summary["wall_s"],
                 f" ({'; '.join(reached)})" if reached else "")
        if summary["status"] == DIVERGED:
            log.info("%s: diverged runs are kept as data (status diverged)", self.sig)
        return summary


def probe_loss(loss_fn, probe_batch: tuple, chunk: int = 256) -> float:
    """Mean of ``loss_fn(batch)`` over the probe set, in chunks (faster on CPUs, bounded memory on GPUs)."""
    inputs, labels = probe_batch
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(labels), chunk):
            total += loss_fn((inputs[i:i + chunk], labels[i:i + chunk])).item() * len(labels[i:i + chunk])
    return total / len(labels)


def make_probe(model: torch.nn.Module, task, probe_batch: tuple):
    """The probe of one model: its mean loss on the probe set. Dropout is off (the probe measures the parameters,
    not a random mask). BatchNorm uses the batch statistics of each probe chunk, as training does: its running
    averages lag far behind early in training, where the paper's targets sit (Fig. 3); copies of the buffers take
    the update, so probing never moves the running statistics."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def probe() -> float:
        model.eval()
        if not norms:
            value = probe_loss(lambda batch: task.loss(model, batch), probe_batch)
        else:
            for m in norms:
                m.train()
            scratch = {k: v.clone() for k, v in model.named_buffers()}
            value = probe_loss(lambda batch: task.loss(lambda x: functional_call(model, scratch, (x,)), batch),
                               probe_batch)
        model.train()
        return value

    return probe


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` cut a run short rather than failed it: submitit raises UncompletedJobError from its signal
    handler when SLURM times out or preempts a job. Such a run writes no summary; it stays incomplete and a relaunch
    runs it again."""
    return type(err).__name__ == "UncompletedJobError"


def train_step(model, optimizer, scheduler, task, batch, noise: NoiseScale | None = None) -> torch.Tensor:
    """One optimizer step of one point; returns its minibatch loss (before the step). With ``noise`` the gradient
    is taken as the weighted mean of the batch's two halves' gradients, which measures B_simple (``noise_scale``)."""
    optimizer.zero_grad(set_to_none=True)
    if noise is None:
        loss = task.loss(model, batch)
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


def build_point(cfg: DictConfig, device: torch.device):
    """The point's model (initialised from its seed), optimizer and LR scheduler (None for a constant LR)."""
    torch.manual_seed(cfg.seed)  # the seed sets the initial weights; the task draws the data order from it too
    model = build(cfg.model).to(device)
    optimizer = build(cfg.optimizer)(model.parameters())
    scheduler = build(cfg.lr.scheduler)(optimizer) if cfg.lr.get("scheduler") else None
    return model, optimizer, scheduler


def _train(cfg: DictConfig, point: PointDir, sig: str, task, state: dict | None = None) -> dict:
    """Train one point from its start, or from ``state`` (its checkpoint), to its end; write its summary."""
    device, task = setup(cfg, task)
    model, optimizer, scheduler = build_point(cfg, device)
    probe_batch = task.probe(cfg.protocol.probe.size, cfg.protocol.probe.seed)
    names = [name for name, _ in model.named_parameters()]

    probe = make_probe(model, task, probe_batch)
    norms = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

    step = 0
    if state is None:
        try:
            initial = probe()
        except Exception as err:  # a model that cannot take its task's batches: failed, as in the loop below
            log.error("%s: failed before its first step: %s: %s", sig, type(err).__name__, err)
            return PointRun(cfg, point, sig, math.nan, device).finish(f"{type(err).__name__}: {err}")
        run_ = PointRun(cfg, point, sig, initial, device)
    else:
        keep_mode(sig, state, device)
        step = state["step"]
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, names, state["optimizer"])
        checkpoint.replay_schedule(scheduler, step)
        checkpoint.set_rng_state(state["rng"])  # last: building the model drew from it
        run_ = PointRun(cfg, point, sig, None, device, resume=state["run"])
    if norms and run_.noise.active:  # halves would change the step's batch statistics: training would differ
        log.info("%s: B_simple is not measured: the model has BatchNorm", sig)
        run_.noise.every = 0

    def save() -> None:
        checkpoint.save(point, {"step": step, "model": model.state_dict(), "rng": checkpoint.rng_state(),
                                "optimizer": optimizer_state(optimizer, names), "run": run_.state(), "pack": None,
                                "mode": run_.mode})

    error = None
    batches = task.batches(int(cfg.batch), cfg.seed, start=step)
    with checkpoint.Saver(cfg.checkpoint.every_s, save).running() as saver:
        try:
            while not run_.finished:
                noise = run_.noise if run_.noise.due(step + 1) else None
                loss = train_step(model, optimizer, scheduler, task, next(batches), noise)
                step += 1
                run_.update(step, loss.item(), probe, optimizer.param_groups[0]["lr"])
                if not run_.finished:
                    saver.step()
        except Exception as err:  # a failed run is recorded, the sweep goes on, a relaunch reruns it
            if interrupted(err) or isinstance(err, StoreError):  # a full disk stops the sweep, not the point:
                raise  # it stays incomplete and resumes from its last checkpoint once there is room
            error = f"{type(err).__name__}: {err}"
            log.error("%s: failed at step %d: %s\n%s", sig, run_.step, error, traceback.format_exc())
    return run_.finish(error)


def _log_event(sig: str, event: dict) -> None:
    kind = event["event"]
    if kind == "target":
        log.info("%s: target %g reached: S=%d, E=%d (probe loss %.4f)", sig, event["target"], event["steps"],
                 event["examples"], event["probe_loss"])
    elif kind == "after_k":
        log.info("%s: target %g: loss drop over K steps %.4f", sig, event["target"], event["loss_drop"])
    else:
        log.info("%s: %s at step %d: %s", sig, kind, event["step"],
                 event.get("reason") or f"not reached: {event.get('targets_not_reached')}")
