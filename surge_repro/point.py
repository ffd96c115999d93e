"""The identity of a grid point: a signature computed from its resolved config and the fingerprint of its data.

A point is (workload, batch size, LR, seed, protocol) on some data. Its signature hashes the resolved config, plus
the fingerprint of the files its task trains on (``tasks.fingerprint``: the same config on other bytes is another
point), minus the keys that do not change what is measured (``NUISANCE``: where files go, logging, launcher,
device, thread count, ``compile``, the experiment name, the number of rounds of the sweep it came from, how often it
checkpoints, how often it measures B_simple (its halves give the same gradient, up to rounding), and how reports
read it; thread count, packing and compiling change rounding, which ``train.execution_mode`` records). The same
point launched from an experiment file or typed on the command line gets the same signature, in whatever order its
keys were written.

Floats enter the hash through ``f"{x:.6g}"``: the paper's grids are linear lattices (Table 1) and ``1e-4 + 2 * 1e-4``
is not ``3e-4`` in binary; both must name the same point. Integers are kept exact.

The signature reads ``b<batch>-lr<lr>-s<seed>-<10 hex digits>``, so a store directory listing is legible.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from surge_repro.tasks import fingerprint

NUISANCE = ("experiment_name", "rounds", "paths", "logger", "device", "threads", "compile", "progress", "report",
            "checkpoint", "noise_scale", "task.root", "task.verify_md5")


def canonical(value: Any) -> Any:
    """Turn a config container into something whose JSON is the same for the same point."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    raise TypeError(f"config value of unexpected type {type(value).__name__}: {value!r}")


def identity(cfg: DictConfig) -> dict:
    """The resolved config without nuisance keys and without Hydra's own node, and ``data``: the fingerprint of the
    task's files (None for generated data). Raises ``DataError`` (naming the prepare command) when the files are
    missing: a point has no identity without its data."""
    tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    tree["data"] = fingerprint.of_task(cfg.task)
    return strip(tree)


def strip(tree: dict) -> dict:
    """A resolved config tree (a dict) without Hydra's node and the nuisance keys, canonical."""
    tree = dict(tree)
    tree.pop("hydra", None)
    for dotted in NUISANCE:
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return canonical(tree)


def signature(cfg: DictConfig) -> str:
    digest = hashlib.sha1(json.dumps(identity(cfg), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"b{cfg.batch}-lr{cfg.optimizer.lr:.6g}-s{cfg.seed}-{digest[:10]}"


AXES = ("batch", "optimizer.lr", "seed")  # what varies within one grid (one experiment's figure)


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested identity as dotted keys: ``{"protocol": {"k": 10}}`` -> ``{"protocol.k": 10}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def grid_of(ident: dict) -> tuple[str, dict[str, Any]]:
    """The grid a point belongs to: (a short hash, and the dotted keys it hashes), from its identity minus ``AXES``.
    Points of one grid agree on everything that changes their numbers except batch size, LR and seed."""
    keys = {k: v for k, v in flat(ident).items() if k not in AXES}
    digest = hashlib.sha1(json.dumps(keys, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return digest[:10], keys
