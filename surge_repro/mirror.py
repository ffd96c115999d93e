"""The W&B mirror of the store (``logger=wandb``), through the real wandb library.

The store is the source of truth; the mirror copies it to W&B for browsing: group = experiment, name = the point's
signature, the resolved config as the run config, metrics as history, the summary (per-target S, E, loss drop) as
the run summary, and the report's figure in a ``report`` run of the same group.

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
import logging
import netrc
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

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


class Mirror:
    """One W&B run. Construct with the ``logger`` config node (``None`` or ``name: none`` gives a silent mirror)."""

    seconds = 0.0  # time this process has spent in wandb calls: runs keep it out of their wall_s

    def __init__(self, logger_cfg: Any, *, group: str, name: str, config: dict, directory: Path,
                 job_type: str = "train", resume_id: str | None = None):
        self.run = None
        if logger_cfg is None or logger_cfg.get("name") == "none":
            return
        self._guard("init", self._init, logger_cfg, group, name, config, directory, job_type, resume_id)

    @property
    def id(self) -> str | None:
        """The W&B run's id: a run resumed from a checkpoint goes on in the same W&B run (``resume_id``)."""
        return None if self.run is None else self.run.id

    def _init(self, logger_cfg: Any, group: str, name: str, config: dict, directory: Path, job_type: str,
              resume_id: str | None) -> None:
        import wandb  # imported only when mirroring: it costs a second and starts a service

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=logger_cfg.project, entity=logger_cfg.get("entity"), group=group, name=name,
            job_type=job_type, tags=list(logger_cfg.get("tags") or []), config=flatten(config),
            dir=str(directory), mode=resolve_mode(logger_cfg.mode, logger_cfg.get("probe_timeout_s", 5.0)),
            id=resume_id,
            resume="allow" if resume_id else None,
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

    def finish(self, summary: dict | None = None) -> None:
        if self.run is None:
            return
        if summary:
            self._guard("summary", self.run.summary.update, flatten(summary))
        if self.run is not None:
            self._guard("finish", self.run.finish)
        self.run = None
