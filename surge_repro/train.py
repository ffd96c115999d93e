"""The one training loop: ``run(cfg)`` trains one grid point with the paper's protocol and writes it to the store.

Every workload goes through here; tasks and models only supply objects. Run it through ``run.py``::

    python run.py task=fashion_mnist model=cnn5 optimizer=adam batch.size=8 optimizer.lr=3e-4   # one point
    python run.py -m +experiment=quickstart                                                     # a grid

Step accounting is explicit because it is the subject of the paper: ``step`` counts optimizer steps, each on exactly
``batch.size`` examples, so ``examples = step * batch.size``. The LR is the raw per-step LR of the optimizer, constant
unless the ``lr`` group says otherwise; no rule rescales it with the batch size.
"""

from __future__ import annotations

import logging
import math
import time
import traceback

import torch
from omegaconf import DictConfig, OmegaConf

from surge_repro import provenance
from surge_repro.config import build, validate
from surge_repro.mirror import Mirror
from surge_repro.point import signature
from surge_repro.protocol import DIVERGED, TargetTracker
from surge_repro.store import FINAL, PointDir

log = logging.getLogger("surge_repro")


def run(cfg: DictConfig) -> dict:
    """Train the point unless the store already has it; return its summary (status ``running`` if another process
    holds it)."""
    validate(cfg)
    sig = signature(cfg)
    point = PointDir(cfg.paths.store, cfg.experiment_name, sig)
    status = point.status()
    if status in FINAL:
        log.info("%s: already %s in %s; skipped", sig, status, point.path)
        return point.summary()
    task = build(cfg.task)  # missing or corrupt data fails here, before the store is touched
    with point.claim() as claimed:
        if not claimed:
            log.info("%s: another process is running this point; skipped", sig)
            return {"status": "running", "signature": sig}
        if point.status() in FINAL:  # finished by another process while this one loaded data
            return point.summary()
        return _train(cfg, point, sig, task)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but torch sees no CUDA device here. Fix: device=cpu (or device=auto)")
    return torch.device(name)


def _point_fields(cfg: DictConfig) -> dict:
    betas = cfg.optimizer.get("betas")
    return {
        "task": cfg.task.name, "model": cfg.model.name, "optimizer": cfg.optimizer.name, "lr_schedule": cfg.lr.name,
        "batch_size": int(cfg.batch.size), "batch_unit": cfg.batch.unit, "lr": float(f"{cfg.optimizer.lr:.6g}"),
        "beta1": None if betas is None else float(betas[0]), "beta2": None if betas is None else float(betas[1]),
        "seed": int(cfg.seed), "k": int(cfg.protocol.k), "targets": list(cfg.protocol.targets),
    }


def _train(cfg: DictConfig, point: PointDir, sig: str, task) -> dict:
    start, batch_size, proto = time.perf_counter(), int(cfg.batch.size), cfg.protocol
    device = _device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    task = task.to(device)
    if task.batch_unit != cfg.batch.unit:
        raise ValueError(f"task {cfg.task.name} counts batches in {task.batch_unit}, batch.unit says "
                         f"{cfg.batch.unit}. Fix: batch.unit={task.batch_unit}")
    torch.manual_seed(cfg.seed)  # the seed sets the initial weights; the task draws the data order from it too
    model = build(cfg.model).to(device)
    optimizer = build(cfg.optimizer)(model.parameters())
    scheduler = build(cfg.lr.scheduler)(optimizer) if cfg.lr.get("scheduler") else None
    probe_batch = task.probe(proto.probe.size, proto.probe.seed)

    def probe() -> float:  # mean loss on the fixed probe set, in chunks (faster on CPUs, bounded memory on GPUs)
        inputs, labels = probe_batch
        total = 0.0
        model.eval()
        with torch.no_grad():
            for i in range(0, len(labels), 256):
                chunk = (inputs[i:i + 256], labels[i:i + 256])
                total += task.loss(model, chunk).item() * len(chunk[1])
        model.train()
        return total / len(labels)

    tracker = TargetTracker(targets=list(proto.targets), k=proto.k, batch_size=batch_size, initial_loss=probe(),
                            probe_every=proto.probe.every, probe_min_gap=proto.probe.min_gap,
                            ema_examples=proto.ema_examples, diverge_factor=proto.diverge_factor,
                            max_steps=proto.max_steps, max_examples=proto.max_examples, patience=proto.patience)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    point.begin(OmegaConf.to_yaml(resolved))
    mirror = Mirror(cfg.logger, group=cfg.experiment_name, name=sig, config=resolved, directory=point.path)
    fields = _point_fields(cfg)
    log.info("%s: B=%d lr=%.6g seed=%d -> %s", sig, batch_size, cfg.optimizer.lr, cfg.seed, point.path)

    step, loss_value, last_report, error = 0, math.nan, start, None
    batches = task.batches(batch_size, cfg.seed)
    try:
        while not tracker.finished:
            loss = task.loss(model, next(batches))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            loss_value = loss.item()
            events = tracker.update(step, loss_value, probe)
            for event in events:
                point.append("events", event)
                _log_event(sig, event)
            if events or step % cfg.progress.log_every == 0 or tracker.finished:
                record = {"step": step, "examples": step * batch_size, "loss": loss_value,
                          "estimate": tracker.estimate, "lr": optimizer.param_groups[0]["lr"],
                          "wall_s": round(time.perf_counter() - start, 3)}
                point.append("metrics", record)
                mirror.log(record, step)
            if time.perf_counter() - last_report > cfg.progress.every_s:
                last_report = time.perf_counter()
                log.info("%s: step %d, %d examples, loss %.4f (estimate %.4f), %.2f ms/step", sig, step,
                         step * batch_size, loss_value, tracker.estimate, 1e3 * (last_report - start) / step)
    except Exception as err:  # a failed run is recorded, the sweep goes on, a relaunch reruns it
        error = f"{type(err).__name__}: {err}"
        log.error("%s: failed at step %d: %s\n%s", sig, step, error, traceback.format_exc())

    summary = {
        "status": "failed" if error else tracker.status, "experiment": cfg.experiment_name, "signature": sig,
        "point": fields, "targets": tracker.summary(), "steps": step, "examples_seen": step * batch_size,
        "initial_loss": tracker.initial_loss, "final_probe_loss": tracker.probe_loss,
        "final_estimate": tracker.estimate, "probes": tracker.probes,
        "wall_s": round(time.perf_counter() - start, 3), "error": error,
        "provenance": provenance.collect(device),
    }
    point.write_summary(summary)
    mirror.finish({k: summary[k] for k in ("status", "targets", "steps", "examples_seen", "wall_s")})
    reached = [f"{r['target']:g}: S={r['steps']}, drop={r['loss_drop']:.4f}" for r in summary["targets"]
               if r["measured"]]
    log.info("%s: %s after %d steps in %.1f s%s", sig, summary["status"], step, summary["wall_s"],
             f" ({'; '.join(reached)})" if reached else "")
    if summary["status"] == DIVERGED:
        log.info("%s: diverged runs are kept as data (status diverged)", sig)
    return summary


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
