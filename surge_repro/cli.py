"""The suite's command lines, in one place: the console scripts of an installed suite and the argument handling that
every tool taking Hydra overrides shares.

Installed (``pip install .``), from any directory:

    surge-run -m +experiment=quickstart            # = python run.py ...   (train a point, or a grid with -m)
    surge-prepare task=fashion_mnist               # = python -m surge_repro.tasks.prepare ...
    surge-status +experiment=quickstart            # = python -m surge_repro.launch.status ...
    surge-report fig2_cnn5_fmnist +experiment=quickstart   # = python reports/fig2_cnn5_fmnist.py ...
    surge-budget +experiment=quickstart            # = python -m surge_repro.analysis.budget ...
    surge-targets +experiment=quickstart           # = python -m surge_repro.analysis.targets ...
    surge-mirror store quickstart                  # = python -m surge_repro.mirror ...
    surge-store store                              # = python -m surge_repro.store ...

The configs ship inside the package (``surge_repro/conf``; ``conf/`` at the top of the repository links there), so
Hydra finds them wherever the command runs; ``paths.store``, ``paths.data`` and ``paths.figures`` are relative to
the working directory. The tools that take Hydra overrides share ``config.overrides_help`` (``--help``: what the tool
does, its overrides and an example) and ``--cfg`` (``config.print_cfg``: the composed config). This module is the
top of the layers: it may import every part of the suite, and nothing in the suite imports it.
"""

from __future__ import annotations

import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from surge_repro.config import CONF_DIR, HELP


def train_point(cfg: DictConfig) -> str:
    """The task function of ``run.py`` and ``surge-run``: train one point (a multirun's launcher trains its points in
    units through ``run_points`` instead)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from surge_repro.run import train

    summary = train.run(cfg)
    if summary["status"] == "failed" and HydraConfig.get().mode == RunMode.RUN:  # a sweep's exit: its sweeper's
        raise SystemExit(f"error: the point failed: {summary['error']}\nIts files are kept in the store; running "
                         f"the same command again runs it again.")
    return summary["status"]


# an absolute path: Hydra reads it as a directory (a package-relative one would have to be an importable package)
run = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(train_point)


def report(argv: Sequence[str] | None = None) -> int:
    """``surge-report <script> [overrides]``: the figure of a report script of the registry
    (``surge_repro.report.figures``), e.g. fig2_cnn5_fmnist; its experiments by default, or ``+experiment=``."""
    from surge_repro.report import figures, render

    argv = list(sys.argv[1:] if argv is None else argv)
    scripts = sorted(s.removesuffix(".py") for s in figures.TITLES)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: surge-report <script> [overrides ...] [--cfg]\n  scripts: {', '.join(scripts)}\n"
              f"  example: surge-report fig2_cnn5_fmnist +experiment=quickstart paths.store=store\n\n{HELP}")
        return 0 if argv else 2
    if argv[0].removesuffix(".py") not in scripts:
        print(f"error: no report script {argv[0]!r}. Fix: one of {', '.join(scripts)}", file=sys.stderr)
        return 2
    return render.main(argv[0].removesuffix(".py") + ".py", argv[1:])


def budget() -> int:
    from surge_repro.analysis import budget as module

    return module.main()


def targets() -> int:
    from surge_repro.analysis import targets as module

    return module.main()


def prepare() -> int:
    from surge_repro.tasks import prepare as module

    return module.main(sys.argv[1:])


def status() -> int:
    from surge_repro.launch import status as module

    return module.main()


def mirror() -> int:
    from surge_repro import mirror as module

    return module.main()


def store() -> int:
    from surge_repro import store as module

    return module.main(sys.argv[1:])
