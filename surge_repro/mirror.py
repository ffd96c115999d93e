"""The W&B mirror of the store (``logger=wandb``), through the real wandb library.

The store is the source of truth; the mirror copies it to W&B for browsing. One W&B run per point, whose id is the
point's (``run_id``: experiment and signature), so that a resumed run, a relaunch and a later mirror of the store all
write to the same W&B run; group = experiment, name = the point's signature, the resolved config as the run config.
History, on the step axis: the minibatch loss and the loss estimate at logged steps, the probe loss (the loss that
defines the targets) at every probe, and each target's crossing (``crossing/<target>``: the probe loss at S) and
window end (``window/<target>``: at S + K). Summary: flat scalar keys per target (``target/<target>/loss_drop``,
``.../steps``, ``.../examples``, ``.../b_simple``, ...: ``summary_keys``), so that scatter and parallel-coordinates
panels can plot them against ``optimizer.lr`` and ``batch``. The report's figure and fitted numbers go to a
``report`` run of the same group.

Points already in the store (trained with ``logger=none``, or before this mirror) are mirrored afterwards by

    python -m surge_repro.mirror store quickstart                 # every finished point not yet mirrored
    python -m surge_repro.mirror /data/store quickstart --mode offline

which replays each point's metrics and events from the store and is idempotent: a point mirrored once (during
training or by this command) carries ``mirror.json`` and is skipped (``--again`` mirrors it again, into the same W&B
run). Offline runs sit in each point's ``wandb/`` directory; the command prints the ``wandb sync`` line that uploads
them.

Nothing in here may fail a run or lose a metric: every call to wandb is guarded, the first failure is logged once as
a warning and the mirror goes quiet for the rest of the run, while the store keeps everything.

``logger.mode``: ``auto`` goes online when W&B credentials are present (WANDB_API_KEY, or a ~/.netrc entry written
by ``wandb login``) and the server answers, and offline otherwise, so a user without network still gets runs that
``wandb sync`` uploads later; ``online``, ``offline`` and ``disabled`` force a mode. A WANDB_MODE in the environment
wins over all of them. With credentials but no network, wandb's own init waits about 90 s before it gives up, for
every point; so ``auto`` asks the server once per process (``logger.probe_timeout_s``), and a sweep on this machine
asks once for all its points (``decide``, in the packing launcher), falling back to offline with one warning. On a
cluster each array task asks once for itself: its nodes' network is not the login node's.

Time spent in wandb calls is counted in ``Mirror.seconds`` (per process), which runs subtract from their ``wall_s``.
"""

from __future__ import annotations

import functools
import json
import logging
import netrc
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from surge_repro.store import MIRRORED, read_stream

log = logging.getLogger(__name__)


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(netrc.netrc().authenticators(urlparse(_base_url()).hostname))
    except (OSError, netrc.NetrcParseError):
        return False


@functools.cache
def _answers(url: str, timeout_s: float) -> bool:
    """Whether the W&B server at ``url`` answers HTTP within ``timeout_s`` (any status counts: it is there). Asked
    once per process; the warning comes once with it."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, unknown hosts
        log.warning("W&B: credentials are set but %s does not answer (%s); mirroring offline (sync later with "
                    "`wandb sync <point dir>/wandb`). Set logger.mode=online to insist", url,
                    getattr(err, "reason", None) or err)
        return False


def resolve_mode(mode: str, timeout_s: float = 5.0) -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode != "auto":
        return mode
    if not _has_credentials():
        return "offline"
    return "online" if _answers(_base_url(), float(timeout_s)) else "offline"


def decide(logger_cfgs: Iterable[Any]) -> None:
    """Resolve ``auto`` once for a sweep: every ``logger`` node of its points gets the same explicit mode, so worker
    processes neither ask the server again nor warn again."""
    nodes = [c for c in logger_cfgs if c is not None and c.get("name") == "wandb" and c.get("mode") == "auto"]
    if nodes:
        mode = resolve_mode("auto", nodes[0].get("probe_timeout_s", 5.0))
        for node in nodes:
            node.mode = mode


def flatten(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def run_id(experiment: str, signature: str) -> str:
    """The W&B run id of a point: one W&B run per point, whoever writes to it. W&B ids may not hold ``/\\#?%:``
    and must be unique in a project; the signature already is unique in its experiment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{experiment}-{signature}")[:128]


TARGET_KEYS = ("steps", "examples", "loss_drop", "loss_drop_at_target", "loss_drop_mean", "probe_loss",
               "probe_loss_after_k", "b_simple")


def target_key(target: float) -> str:
    return f"{float(target):g}"


def summary_keys(summary: dict) -> dict:
    """The run summary W&B shows: the run's status and length, and one flat scalar key per (target, quantity):
    ``target/1.2/loss_drop``, ``target/1.2/steps``, ... (None where not measured), ``target/1.2/reached``. A
    list-valued key, as summary.json's ``targets``, cannot go on a panel."""
    out = {k: summary[k] for k in ("status", "steps", "examples_seen", "wall_s") if k in summary}
    for rec in summary.get("targets") or []:
        prefix = f"target/{target_key(rec['target'])}/"
        out.update({prefix + k: rec.get(k) for k in TARGET_KEYS})
        out[prefix + "reached"] = rec.get("steps") is not None
    return out


def history_keys(events: Iterable[dict]) -> dict:
    """The history entries of one step's protocol events: a target crossed (``crossing/<target>``, its probe loss
    at S) and a target's first K-step window closed (``window/<target>``, the probe loss at S + K)."""
    out = {}
    for event in events:
        if event.get("event") == "target":
            out[f"crossing/{target_key(event['target'])}"] = event["probe_loss"]
        elif event.get("event") == "after_k" and event.get("window") == 1:
            out[f"window/{target_key(event['target'])}"] = event["probe_loss_after_k"]
    return out


class Mirror:
    """One W&B run. Construct with the ``logger`` config node (``None`` or ``name: none`` gives a silent mirror).
    ``run_id``: the W&B run to write to, resumed if it exists (``run_id()`` for a point); None lets W&B pick one."""

    seconds = 0.0  # time this process has spent in wandb calls: runs keep it out of their wall_s

    def __init__(self, logger_cfg: Any, *, group: str, name: str, config: dict, directory: Path,
                 job_type: str = "train", run_id: str | None = None):
        self.run, self.directory, self.mode = None, directory, None
        if logger_cfg is None or logger_cfg.get("name") == "none":
            return
        self._guard("init", self._init, logger_cfg, group, name, config, directory, job_type, run_id)

    @property
    def id(self) -> str | None:
        return None if self.run is None else self.run.id

    def _init(self, logger_cfg: Any, group: str, name: str, config: dict, directory: Path, job_type: str,
              run_id: str | None) -> None:
        import wandb  # imported only when mirroring: it costs a second and starts a service

        directory.mkdir(parents=True, exist_ok=True)
        self.mode = resolve_mode(logger_cfg.mode, logger_cfg.get("probe_timeout_s", 5.0))
        self.run = wandb.init(
            project=logger_cfg.project, entity=logger_cfg.get("entity"), group=group, name=name,
            job_type=job_type, tags=list(logger_cfg.get("tags") or []), config=flatten(config),
            dir=str(directory), mode=self.mode, id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(quiet=True, console="off", reinit="create_new", silent=True),
        )

    def _guard(self, what: str, fn, *args) -> None:
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception as err:  # any failure of the mirror: warn once, go quiet, never fail the run
            log.warning("W&B mirror: %s failed (%s: %s); continuing without it, the store has everything",
                        what, type(err).__name__, err)
            self.run = None
        finally:
            Mirror.seconds += time.perf_counter() - start

    def log(self, record: dict, step: int) -> None:
        if self.run is not None:
            self._guard("log", self.run.log, record, step)

    def log_image(self, key: str, path: Path) -> None:
        if self.run is not None:
            import wandb

            self._guard("log_image", lambda: self.run.log({key: wandb.Image(str(path))}))

    def log_table(self, key: str, frame) -> None:
        """A ``wandb.Table`` of a pandas DataFrame (NaN as None), which W&B panels can plot and filter."""
        if self.run is not None:
            import wandb

            self._guard("log_table", lambda: self.run.log({key: wandb.Table(
                dataframe=frame.astype(object).where(frame.notna(), None))}))

    def log_artifact(self, name: str, kind: str, paths: Iterable[Path]) -> None:
        """The files as one W&B Artifact (versioned by W&B when their content changes)."""
        if self.run is not None:
            import wandb

            def log() -> None:
                artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", name), type=kind)
                for path in paths:
                    artifact.add_file(str(path))
                self.run.log_artifact(artifact)

            self._guard("log_artifact", log)

    def finish(self, summary: dict | None = None, mark: bool = False) -> None:
        """Write ``summary`` (flattened) and close the run. ``mark``: if all went well, leave ``mirror.json`` in
        the directory (the W&B run's id, mode and project), which tells ``python -m surge_repro.mirror`` that this
        point is mirrored."""
        if self.run is None:
            return
        if summary:
            self._guard("summary", self.run.summary.update, flatten(summary))
        run = self.run
        if run is not None:
            self._guard("finish", run.finish)
        if mark and self.run is not None:
            record = {"id": run.id, "mode": self.mode, "project": run.project, "entity": run.entity}
            (self.directory / MIRRORED).write_text(json.dumps(record) + "\n")
        self.run = None



def mirror_point(folder: Path, logger_cfg: Any, experiment: str) -> str | None:
    """Replay one finished point of the store into its W&B run (metrics and events as history, the summary as
    ``summary_keys``); returns the offline run's directory (for ``wandb sync``), or None when online or failed."""
    from omegaconf import OmegaConf

    summary = json.loads((folder / "summary.json").read_text())
    config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")) if (folder / "config.yaml").exists() else {}
    rows: dict[int, dict] = {}
    for record in read_stream(folder / "metrics.jsonl"):
        rows.setdefault(int(record["step"]), {}).update({k: v for k, v in record.items() if k != "step"})
    by_step: dict[int, list[dict]] = {}
    for event in read_stream(folder / "events.jsonl"):
        by_step.setdefault(int(event.get("step", 0)), []).append(event)
    for step, events in by_step.items():
        rows.setdefault(step, {}).update(history_keys(events))
    before = set((folder / "wandb").glob("offline-run-*"))
    mirror = Mirror(logger_cfg, group=experiment, name=folder.name, config=config, directory=folder,
                    run_id=run_id(experiment, folder.name))
    for step in sorted(rows):
        mirror.log(rows[step], step)
    ok = mirror.run is not None
    offline = mirror.mode == "offline"
    mirror.finish(summary_keys(summary), mark=True)
    if not ok or not (folder / MIRRORED).exists():
        return None
    new = sorted(set((folder / "wandb").glob("offline-run-*")) - before)
    return str(new[-1]) if offline and new else None


def main(argv: list[str] | None = None) -> int:
    import argparse

    from omegaconf import OmegaConf

    from surge_repro.config import CONF_DIR
    from surge_repro.store import (
        FINAL,
        PointDir,
        StoreError,
        experiments_in,
        point_dirs,
    )

    defaults = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml")
    parser = argparse.ArgumentParser(
        prog="python -m surge_repro.mirror",
        description="Mirror the finished points of a store to W&B: one W&B run per point (its id from the point's "
                    "signature), history and flat per-target summary keys, as a run with logger=wandb writes them. "
                    "Points already mirrored (mirror.json in their folder) are skipped.",
        epilog="example: python -m surge_repro.mirror store quickstart --mode offline   # then the printed wandb sync")
    parser.add_argument("store", nargs="?", default="store", help="the store directory (paths.store; default store)")
    parser.add_argument("experiments", nargs="*", help="experiments to mirror (default: every one in the store)")
    parser.add_argument("--project", default=defaults.project, help=f"W&B project (default {defaults.project})")
    parser.add_argument("--entity", default=defaults.entity, help="W&B team or user (default: yours)")
    parser.add_argument("--mode", default=defaults.mode, choices=["auto", "online", "offline"],
                        help="auto: online with credentials and a server that answers, else offline (default auto)")
    parser.add_argument("--again", action="store_true", help="mirror points already mirrored again (same W&B runs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    store = Path(args.store)
    try:
        experiments = experiments_in(store, args.experiments)
    except StoreError as err:
        parser.error(str(err))
    logger_cfg = OmegaConf.merge(defaults, {"project": args.project, "entity": args.entity,
                                            "mode": resolve_mode(args.mode, defaults.probe_timeout_s)})
    offline, failed = [], 0
    for experiment in experiments:
        counts = {"mirrored": 0, "already": 0, "not final": 0}
        for folder in point_dirs(store, experiment):
            if PointDir(store, experiment, folder.name).status() not in FINAL:
                counts["not final"] += 1
            elif (folder / MIRRORED).exists() and not args.again:
                counts["already"] += 1
            else:
                run_dir = mirror_point(folder, logger_cfg, experiment)
                if (folder / MIRRORED).exists():
                    counts["mirrored"] += 1
                    offline += [run_dir] if run_dir else []
                else:
                    failed += 1
        print(f"{experiment}: {counts['mirrored']} point(s) mirrored, {counts['already']} already mirrored "
              f"(--again to redo), {counts['not final']} not final (mirrored when they finish)")
    if offline:
        print(f"{len(offline)} offline run(s); upload them with:\n  wandb sync "
              + (" ".join(offline) if len(offline) <= 3 else f"{store}/*/*/wandb/offline-run-*"))
    if failed:
        print(f"{failed} point(s) could not be mirrored (the warnings above say why); run the command again",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
