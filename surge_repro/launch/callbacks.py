"""Hydra callbacks (``hydra.callbacks`` in ``conf/config.yaml``): check a sweep before its first point, number its
points as they start, and print the store's counts when it ends.

A sweep over missing data must fail once, at the start, not once per point; so ``on_multirun_start`` builds the task
of the sweep's base config (the data load is cached, so the first point reuses it in this process).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from surge_repro import provenance
from surge_repro.config import build
from surge_repro.store import status_counts

log = logging.getLogger("surge_repro")


def sweep_size(config: DictConfig) -> int | None:
    """Number of points Hydra's basic sweeper makes of ``hydra.sweeper.params`` and the command line's overrides."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    sizes: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task)):
        is_sweep = override.is_sweep_override() and override.is_discrete_sweep()
        sizes[override.get_key_element()] = len(list(override.sweep_string_iterator())) if is_sweep else 1
    return math.prod(sizes.values())


class SweepCheck(Callback):
    def __init__(self) -> None:
        self.total: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.total = sweep_size(config)
        try:
            build(config.task)  # the task's own error names the fix
        except Exception as err:
            # Hydra turns a callback's exceptions into warnings and goes on; only SystemExit stops the sweep
            raise SystemExit(f"error: {err}\nNo point of the sweep was run.") from err
        log.info("sweep of %s points into %s/%s/", self.total or "?", config.paths.store, config.experiment_name)
        if provenance.code_state()["git_dirty"]:
            log.warning("the code has uncommitted changes: the summaries record the commit but not the changes; "
                        "commit first to make these points reproducible")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        k = int(config.hydra.job.num) + 1
        left = f", {self.total - k} left after it" if self.total else ""
        log.info("point %d of %s%s", k, self.total or "?", left)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        counts = status_counts(config.paths.store, config.experiment_name)
        log.info("store %s/%s: %s", config.paths.store, config.experiment_name,
                 ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty")
