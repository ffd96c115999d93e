"""The one training loop: every point of every launcher, of ``run.py`` and of the diagnostics trains here.

``run(cfg)`` trains one point; ``run_points(cfgs)`` trains the points of one workload that differ only in LR and
seed (a launcher's unit), packed where they can be (``packing``); both skip what the store has and resume what it
has checkpointed. ``train`` is the loop: it holds the data order (``Steps``), the protocol (one ``PointRun`` per point:
tracker, store files, W&B mirror), the checkpoints and the failure handling, and hands the optimizer steps and probes
to a step engine (``engines``: ``Single`` for a point alone, ``Pack`` for points stacked and vmapped). Run it
through ``run.py``::

    python run.py task=fashion_mnist model=cnn5 optimizer=adam batch=8 optimizer.lr=3e-4   # one point
    python run.py -m +experiment=quickstart                                                # a grid

Step accounting is explicit because it is the subject of the paper: ``step`` counts optimizer steps, each on exactly
``batch`` units (``task.batch_unit``: examples, sequences or tokens), so ``examples = step * batch`` counts units.
The LR is the raw per-step LR of the optimizer, constant unless the ``lr`` group says otherwise; no rule rescales it
with the batch size.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections import defaultdict

import torch
from omegaconf import DictConfig, OmegaConf

from surge_repro import provenance
from surge_repro.config import build, validate
from surge_repro.mirror import Mirror, history_keys, run_id, summary_keys
from surge_repro.point import identity, signature
from surge_repro.run import checkpoint
from surge_repro.run.engines import Engine, Pack, Single, compile_mode
from surge_repro.run.noise_scale import NoiseScale
from surge_repro.run.packing import split
from surge_repro.run.protocol import DIVERGED, TargetTracker
from surge_repro.store import FINAL, PointDir, StoreError
from surge_repro.tasks import Task

log = logging.getLogger("surge_repro")


def run(cfg: DictConfig) -> dict:
    """Train the point unless the store already has it; return its summary (status ``running`` if another process
    holds it)."""
    return run_points([cfg])[0]


def run_points(cfgs: list[DictConfig], memory_fraction: float = 0.5) -> list[dict]:
    """Train the points of ``cfgs`` (one workload, differing only in LR and seed); return their summaries in order.
    Points already final in the store are skipped, points another process holds are left to it, checkpointed points
    resume in the mode they trained in (a pack's points as that pack, row for row), and the rest train as packs of
    at most ``memory_fraction`` of the device's free memory, or one by one where packing does not apply."""
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
    task.check_batch_size(int(cfgs[todo[0]].batch))  # so does a batch larger than the data: a config error
    device, task = setup(cfgs[todo[0]], task)  # on the device once, for every unit of this call

    def train_(group: list[int], packed: bool, states: list[dict] | None = None) -> None:
        summaries = train([cfgs[i] for i in group], [points[i] for i in group], [sigs[i] for i in group], task,
                          device, packed=packed, states=states)
        for i, summary in zip(group, summaries):
            results[i] = summary

    with contextlib.ExitStack() as claims:
        live = []
        for i in todo:
            if not claims.enter_context(points[i].claim()):
                log.info("%s: another process is running this point; skipped", sigs[i])
                results[i] = {"status": "running", "signature": sigs[i]}
            elif points[i].status() in FINAL:  # finished by another process while this one loaded data
                results[i] = points[i].summary()
            else:
                live.append(i)
        states = {i: checkpoint.load(points[i]) for i in live}
        packs = defaultdict(list)  # a pack's checkpointed points resume as that pack, row for row
        for i in live:
            if states[i] is not None and states[i]["pack"]:
                packs[states[i]["pack"]["id"], states[i]["step"]].append(i)
            elif states[i] is not None:
                train_([i], packed=False, states=[states[i]])
        for (pack_id, step), group in packs.items():
            group.sort(key=lambda i: states[i]["pack"]["row"])
            log.info("pack %s: %d point(s) resume from their checkpoints at step %d", pack_id, len(group), step)
            train_(group, packed=True, states=[states[i] for i in group])
        fresh = [i for i in live if states[i] is None]
        for group in split(cfgs, fresh, task, device, memory_fraction):
            train_(group, packed=len(group) > 1)
    return results


def device_for(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but torch sees no CUDA device here. Fix: device=cpu (or device=auto)")
    return torch.device(name)


def setup(cfg: DictConfig, task: Task) -> tuple[torch.device, Task]:
    """Device, thread count and the task on the device."""
    device = device_for(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    return device, task.to(device)


def execution_mode(device: torch.device, packed: bool, compile: str = "off") -> dict:
    """How a point trains, beyond its identity: alone or packed (vmap's batched kernels), the CPU threads (a
    kernel's reductions split by thread count), the device and, when not eager, the ``compile`` mode (generated
    kernels order float operations their own way). Runs of one point in one mode give the same bits; in two modes
    they agree to float rounding, which training amplifies (the README's "what can go wrong"). An eager run records
    no compile key, so its mode reads as it did before the key existed (and its checkpoints resume as they were)."""
    mode = {"packed": bool(packed), "threads": torch.get_num_threads(), "device": device.type}
    return mode if compile == "off" else {**mode, "compile": compile}


def keep_mode(name: str, state: dict, device: torch.device) -> None:
    """Resume a checkpointed point (or pack: ``name``) in the mode it trained in: its thread count (whatever
    ``threads`` says now); a device that cannot be kept is named in the log."""
    mode = state["mode"]
    if mode["threads"] != torch.get_num_threads():
        log.info("%s: resumes with %d threads as it trained (not %d): the same bits", name, mode["threads"],
                 torch.get_num_threads())
        torch.set_num_threads(int(mode["threads"]))
    if mode["device"] != device.type:
        log.warning("%s: trained on %s and resumes on %s: equal to rounding, not bit for bit (the summary records "
                    "it)", name, mode["device"], device.type)


class Steps:
    """The data order and the optimizer steps of the points an engine holds. Each point's batches are its seed's
    epochs (``task.epoch_orders``) cut into ``task.epoch_length`` batches: the same wherever and however it trains,
    resumed or not (the position is a function of the seed and the step). ``keep`` drops finished points."""

    def __init__(self, engine: Engine, task: Task, seeds: list[int], batch_size: int, step: int = 0):
        self.engine, self.task, self.batch_size, self.step = engine, task, batch_size, step
        self.per_epoch = task.epoch_length(batch_size)
        self.orders = [task.epoch_orders(seed, step // self.per_epoch) for seed in seeds]
        self.epoch = None

    def next(self, noise: list[NoiseScale] | None = None) -> torch.Tensor:
        """One optimizer step of every point held; their minibatch losses (before the step)."""
        if self.epoch is None or self.step % self.per_epoch == 0:  # every point starts an epoch at the same step
            self.epoch = torch.stack([next(order) for order in self.orders])
        offset = (self.step % self.per_epoch) * self.batch_size
        losses = self.engine.train_step(self.engine.take(self.task, self.epoch[:, offset:offset + self.batch_size]),
                                        noise)
        self.step += 1
        return losses

    def keep(self, rows: list[int]) -> None:
        self.engine.keep(rows)
        self.epoch = self.epoch[rows]
        self.orders = [self.orders[r] for r in rows]


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

    The loop (``train``) hands it one minibatch loss per optimizer step, whatever engine took the step; it records
    events and metrics and, at the end, the summary. ``pack`` (packed runs only) says which pack the point trained
    in, and lands in summary.json. ``resume`` is the ``state()`` of a run that was
    interrupted (from its checkpoint): the run goes on from there, and ``initial_loss`` is not needed;
    ``mode_change`` says why it goes on in another mode than it trained in (recorded in ``mode_changes``).
    """

    def __init__(self, cfg: DictConfig, point: PointDir, sig: str, initial_loss: float | None, device: torch.device,
                 pack: dict | None = None, resume: dict | None = None, mode_change: str | None = None):
        self.cfg, self.point, self.sig, self.device, self.pack = cfg, point, sig, device, pack
        mode = execution_mode(device, packed=pack is not None, compile=compile_mode(cfg))
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
            self.step, elapsed, self.resumed = 0, 0.0, []
            self.mode, self.mode_changes = mode, []
            self.noise = NoiseScale(self.batch_size, every=int(cfg.noise_scale.every), ema=float(cfg.noise_scale.ema))
            for event in self.tracker.start_events:  # targets the initial loss already meets: S = 0
                point.append("events", event)
                _log_event(sig, event)
        else:
            self.tracker = TargetTracker.from_state(resume["tracker"])
            self.noise = NoiseScale.from_state(resume["noise"])
            point.resume(OmegaConf.to_yaml(resolved), resume["files"])
            self.step, elapsed = resume["step"], resume["wall_s"]
            self.resumed = resume["resumed"] + [self.step]
            self.mode, self.mode_changes = resume["mode"], resume["mode_changes"]
            if mode != self.mode or mode_change:  # a device or pack-mates that could not be kept (``keep_mode``)
                why = mode_change or (f"resumed on {mode['device']}, trained on {self.mode['device']}"
                                      if mode["device"] != self.mode["device"] else
                                      f"resumed with compile={mode.get('compile', 'off')}, trained with "
                                      f"compile={self.mode.get('compile', 'off')}")
                self.mode_changes = self.mode_changes + [{"step": self.step, "mode": mode, "why": why}]
        self.mirror = Mirror(cfg.logger, group=cfg.experiment_name, name=sig, config=resolved, directory=point.path,
                             run_id=run_id(cfg.experiment_name, sig))
        # wall_s counts training time over all of the run's attempts, without the time this process spends in W&B
        self.start, self.mirror_start = time.perf_counter() - elapsed, Mirror.seconds
        self.last_report = time.perf_counter()
        self.loss = math.nan
        log.info("%s: B=%d lr=%.6g seed=%d -> %s%s", sig, self.batch_size, cfg.optimizer.lr, cfg.seed, point.path,
                 f" (resumed at step {self.step})" if resume else "")

    def state(self) -> dict:
        """What a checkpoint keeps of this run's bookkeeping (``resume`` takes it back)."""
        return {"tracker": self.tracker.state_dict(), "noise": self.noise.state_dict(), "step": self.step,
                "wall_s": self.wall_s(), "files": self.point.stream_sizes(),
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
        probes = tracker.probes
        events = tracker.update(step, loss, probe)
        for event in events:
            if event["event"] == "target":  # B_simple where the point crossed the target, beside its S and E
                measured = self.noise.record()
                event.update(measured)
                vars(tracker.records[event["target"]]).update(measured)
            self.point.append("events", event)
            _log_event(self.sig, event)
        probed = tracker.probes != probes
        if events or probed or step % cfg.progress.log_every == 0 or tracker.finished:
            record = {"step": step, "examples": step * self.batch_size, "loss": loss, "estimate": tracker.estimate,
                      "lr": lr, "wall_s": round(self.wall_s(), 3)}
            if probed:  # the loss that defines the targets, at every probe
                record["probe_loss"] = tracker.probe_loss
            if self.noise.measurements:
                record["b_simple"] = self.noise.record()["b_simple"]
            self.point.append("metrics", record)
            self.mirror.log({**record, **history_keys(events)}, step)
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
        self.mirror.finish(summary_keys(summary), mark=True)
        reached = [f"{r['target']:g}: S={r['steps']}, drop={r['loss_drop']:.4f}" for r in summary["targets"]
                   if r["measured"]]
        log.info("%s: %s after %d steps in %.1f s%s", self.sig, summary["status"], step, summary["wall_s"],
                 f" ({'; '.join(reached)})" if reached else "")
        if summary["status"] == DIVERGED:
            log.info("%s: diverged runs are kept as data (status diverged)", self.sig)
        return summary


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` cut a run short rather than failed it: submitit raises UncompletedJobError from its signal
    handler when SLURM times out or preempts a job. Such a run writes no summary; it stays incomplete and a relaunch
    runs it again."""
    return type(err).__name__ == "UncompletedJobError"


def train(cfgs: list[DictConfig], points: list[PointDir], sigs: list[str], task: Task, device: torch.device,
          packed: bool = False, states: list[dict] | None = None) -> list[dict]:
    """Train these points from their start, or from ``states`` (their checkpoints, all at one step; a pack's in the
    order of their rows), to their end; write their summaries and return them. ``task`` is on ``device`` already
    (``setup``, once per call of ``run_points``). ``packed``: one ``Pack`` engine for all of them, else a ``Single``
    engine for the one point."""
    cfg = cfgs[0]
    batch_size = int(cfg.batch)
    if not packed and len(cfgs) != 1:
        raise ValueError(f"an unpacked run trains one point, not {len(cfgs)}")
    engine: Engine = Pack.build(cfgs, task, device) if packed else Single(cfg, task, device)
    probe_batch = task.probe(cfg.protocol.probe.size, cfg.protocol.probe.seed)
    name = f"pack {sigs[0]}" if packed else sigs[0]

    step = 0
    if states is None:
        pack_info = {"points": len(cfgs), "id": sigs[0]} if packed else None
        rows = list(range(len(cfgs)))  # each point's row in the pack as it started: a resumed pack keeps the order
        try:
            initial = engine.probe(rows, probe_batch)
        except Exception as err:  # a model that cannot take its task's batches: every point failed
            log.error("%s: failed before its first step: %s: %s", name, type(err).__name__, err)
            return [PointRun(c, p, s, math.nan, device, pack=pack_info).finish(f"{type(err).__name__}: {err}")
                    for c, p, s in zip(cfgs, points, sigs)]
        runs = [PointRun(c, p, s, loss, device, pack=pack_info) for c, p, s, loss in zip(cfgs, points, sigs, initial)]
    else:
        step = states[0]["step"]
        pack_info = {k: states[0]["pack"][k] for k in ("points", "id")} if packed else None
        rows = [s["pack"]["row"] for s in states] if packed else [0]
        keep_mode(name, states[0], device)
        smaller = None
        live_then = states[0]["pack"].get("live", len(states)) if packed else 1
        if len(states) < live_then:  # pack-mates not relaunched: their rows are missing from the stack
            smaller = f"resumed in a pack of {len(states)} of the {live_then} it was checkpointed with"
            log.warning("%s: %s (the others were not relaunched): equal to rounding, not bit for bit; the "
                        "summaries record it. Relaunch the same sweep to keep the pack whole", name, smaller)
        engine.load(states, step)
        checkpoint.set_rng_state(states[0]["rng"])  # last: building the models drew from it
        runs = [PointRun(c, p, s, None, device, pack=pack_info, resume=st["run"], mode_change=smaller)
                for c, p, s, st in zip(cfgs, points, sigs, states)]
    if engine.batch_norm and runs[0].noise.active:  # halves would change the step's batch statistics
        log.info("%s: B_simple is not measured: the model has BatchNorm", name)
        for r in runs:
            r.noise.every = 0
    if packed:
        log.info("%s: %d points of B=%d train together (LRs %s; seeds %s)", name, len(runs), batch_size,
                 ",".join(sorted({f"{c.optimizer.lr:.3g}" for c in cfgs})),
                 ",".join(sorted({str(c.seed) for c in cfgs})))
    live = list(range(len(runs)))  # row r of the engine is the point runs[live[r]]
    steps = Steps(engine, task, [int(c.seed) for c in cfgs], batch_size, step)
    summaries: list[dict | None] = [None] * len(runs)
    error = None
    start = last_report = time.perf_counter()

    def save() -> None:  # every point still training, at this step
        rng = checkpoint.rng_state()
        for r, j in enumerate(live):
            checkpoint.save(points[j], {"step": steps.step, **engine.state(r), "rng": rng, "run": runs[j].state(),
                                        "pack": {**pack_info, "row": rows[j], "live": len(live)} if packed else None,
                                        "mode": runs[j].mode})

    with checkpoint.Saver(cfg.checkpoint.every_s, save).running() as saver:
        try:
            task.check_batch_size(batch_size)
            while live:
                noise = [runs[j].noise for j in live] if runs[live[0]].noise.due(steps.step + 1) else None
                values = steps.next(noise).tolist()
                probe_rows = [r for r, j in enumerate(live) if runs[j].tracker.needs_probe(steps.step)]
                probed = dict(zip(probe_rows, engine.probe(probe_rows, probe_batch))) if probe_rows else {}
                lrs = engine.lrs()
                for r, j in enumerate(live):
                    runs[j].update(steps.step, values[r], lambda r=r: probed[r], lrs[r])
                if packed and time.perf_counter() - last_report > cfg.progress.every_s:  # a point alone reports
                    last_report = time.perf_counter()  # itself (``PointRun.update``)
                    log.info("%s: step %d, %d of %d points training, %.2f ms/step", name, steps.step, len(live),
                             len(runs), 1e3 * (last_report - start) / (steps.step - step))
                done = [r for r, j in enumerate(live) if runs[j].finished]
                if done:
                    for r in done:
                        summaries[live[r]] = runs[live[r]].finish()
                    keep = [r for r in range(len(live)) if r not in done]
                    live = [live[r] for r in keep]
                    if live:
                        steps.keep(keep)
                if live:
                    saver.step()
        except Exception as err:  # every point still training is recorded as failed; a relaunch reruns them
            if interrupted(err) or isinstance(err, StoreError):  # a full disk stops the sweep, not the point:
                raise  # it stays incomplete and resumes from its last checkpoint once there is room
            error = f"{type(err).__name__}: {err}"
            log.error("%s: failed at step %d: %s\n%s", name, steps.step, error, traceback.format_exc())
    for j in live:
        summaries[j] = runs[j].finish(error)
    return summaries


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
