"""Fetch and convert a task's data into ``paths.data``: the only code in the suite that downloads.

    python -m surge_repro.tasks.prepare task=fashion_mnist                 # into data/ (paths.data)
    python -m surge_repro.tasks.prepare task=fashion_mnist paths.data=/scratch/data force=true

Arguments are Hydra overrides of ``conf/prepare.yaml`` (the main config plus ``force``). Tasks read only local files,
so a training job never touches the network.
"""

from __future__ import annotations

import sys

from surge_repro.config import compose, overrides_help, print_cfg, shell_completion, without_flags
from surge_repro.tasks import DataError, text, vision

PREPARE = {"fashion_mnist": vision.prepare_fashion_mnist,
           "cifar10": vision.prepare_cifar10, "cifar100": vision.prepare_cifar100,
           "tiny_imagenet": vision.prepare_tiny_imagenet,
           "shakespeare": text.prepare_shakespeare, "eli5_category": text.prepare_eli5_category,
           "redpajama": text.prepare_redpajama}
NO_DATA = {"synthetic_images"}


def main(argv: list[str]) -> int:
    if overrides_help(argv, "python -m surge_repro.tasks.prepare", __doc__) or \
            shell_completion(argv, __file__, config_name="prepare"):
        return 0
    cfg = compose(without_flags(argv), config_name="prepare")
    if print_cfg(argv, cfg):
        return 0
    name = cfg.task.name
    if name in NO_DATA:
        print(f"task {name} generates its data; nothing to prepare")
        return 0
    if name not in PREPARE:
        print(f"no prepare step for task {name}; tasks with one: {', '.join(sorted(PREPARE))}", file=sys.stderr)
        return 2
    try:
        print(PREPARE[name](cfg.paths.data, force=bool(cfg.force)))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
