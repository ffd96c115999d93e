"""Config helpers: composing ``conf/`` outside ``run.py``, checking a point's values, building objects from nodes.

``validate`` turns impossible values into errors that say what to type instead. Unknown keys and unknown group
options are Hydra's own errors (struct mode), which already name the available choices.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

CONF_DIR = Path(__file__).resolve().parent / "conf"  # conf/ at the top of the repository links here


class ConfigError(ValueError):
    """An impossible value in a point's config; the message says how to fix it."""


def compose(overrides: Sequence[str] = (), config_name: str = "config", hydra_node: bool = False) -> DictConfig:
    """The config ``run.py`` would see for these overrides (no Hydra run directory, no logging setup); with
    ``hydra_node`` it keeps Hydra's own node (the sweeper's grid, the launcher)."""
    import hydra_plugins.surge_repro_launcher  # noqa: F401  registers hydra/launcher=surge_packed, which run.py's
    # Hydra finds by scanning plugins and the compose API does not

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` on a group node, leaving out its ``name`` (which labels the choice)."""
    tree = OmegaConf.to_container(node, resolve=True)  # resolve while the node still sees the root config
    tree.pop("name", None)
    try:
        return instantiate(tree, **kwargs)
    except InstantiationException as err:
        # our own errors already say what to do; Hydra's wrapper would bury that under its repr
        if isinstance(err.__cause__, (ConfigError, ValueError, RuntimeError)):
            raise err.__cause__ from None
        raise


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is not set: add {key}=<value> to the command line "
                          f"(or sweep it: -m {key}=a,b,c)") from None


def _positive(cfg: DictConfig, key: str, kind: type, example: str, allow_zero: bool = False) -> None:
    value = _get(cfg, key)
    ok_type = isinstance(value, int) and not isinstance(value, bool) if kind is int else \
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok_type or value < 0 or (value == 0 and not allow_zero):
        what = "an integer" if kind is int else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be {what} {bound}, got {value!r}. Fix: {key}={example}")


def validate(cfg: DictConfig) -> None:
    """Check the values a run needs before anything is built or written."""
    _positive(cfg, "batch", int, "8")
    _positive(cfg, "optimizer.lr", float, "3e-4")
    _positive(cfg, "seed", int, "0", allow_zero=True)
    p = "protocol"
    _positive(cfg, f"{p}.k", int, "10")
    _positive(cfg, f"{p}.windows", int, "1")
    _positive(cfg, f"{p}.ema_examples", float, "512")
    _positive(cfg, f"{p}.probe.size", int, "1024")
    _positive(cfg, f"{p}.probe.every", int, "2048")
    _positive(cfg, f"{p}.probe.min_gap", int, "8")
    _positive(cfg, f"{p}.probe.reach", int, "8", allow_zero=True)
    _positive(cfg, f"{p}.max_steps", int, "20000")
    _positive(cfg, f"{p}.max_examples", int, "1000000")
    _positive(cfg, f"{p}.patience", int, "100000")
    targets = _get(cfg, f"{p}.targets")
    if not targets or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                              and t > 0 for t in targets):
        raise ConfigError(f"{p}.targets must be a non-empty list of positive training-loss levels, got "
                          f"{OmegaConf.to_container(targets) if targets is not None else None}. "
                          f"Fix: '{p}.targets=[1.0,0.8]'")
    if not _get(cfg, f"{p}.diverge_factor") > 1:
        raise ConfigError(f"{p}.diverge_factor must be > 1 (a multiple of the initial loss), got "
                          f"{cfg.protocol.diverge_factor}. Fix: {p}.diverge_factor=3")
    experiment = _get(cfg, "experiment_name")
    if not isinstance(experiment, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", experiment):
        raise ConfigError(f"experiment_name must be a plain name (letters, digits, _ . -), got {experiment!r}: it "
                          f"names the store directory. Fix: experiment_name=my_grid")
    _positive(cfg, "checkpoint.every_s", float, "300", allow_zero=True)
    threads = _get(cfg, "threads")
    if threads is not None:
        _positive(cfg, "threads", int, "1")
    device = str(_get(cfg, "device"))
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}. Fix: device=auto")


HELP = ("Arguments are Hydra overrides of conf/config.yaml (the same as run.py's): +experiment=<name>, "
        "paths.store=..., report.criterion=steps, ...; --cfg prints the composed config and exits; "
        "eval \"$(<this command> -sc install=bash)\" completes the overrides with tab.")


def shell_completion(argv: Sequence[str], prog: str, config_name: str = "config") -> bool:
    """Hydra's own shell completion of the overrides (``-sc install=bash``, then tab), for a tool that composes with
    the compose API: the arguments go through a Hydra app over the same configs. True when it did."""
    if not any(a in ("-sc", "--shell-completion") or a.startswith("--shell-completion=") for a in argv):
        return False
    import sys

    import hydra

    sys.argv = [prog, *argv]
    hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(lambda cfg: None)()
    return True


def overrides_help(argv: Sequence[str], prog: str, doc: str | None) -> bool:
    """Print ``prog``'s help (its docstring, which holds its examples, and how arguments are read) when ``argv``
    asks for it; True when it did."""
    if not any(a in ("-h", "--help") for a in argv):
        return False
    print(f"usage: {prog} [overrides ...] [--cfg]\n\n{(doc or '').strip()}\n\n{HELP}")
    return True


def print_cfg(argv: Sequence[str], cfg: DictConfig) -> bool:
    """With ``--cfg`` in ``argv``, print ``cfg`` as YAML; True when it did."""
    if "--cfg" not in argv:
        return False
    print(OmegaConf.to_yaml(cfg))
    return True


def without_flags(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if a != "--cfg"]
