"""Fixtures: configs composed from the real conf/ with a store and data folder in tmp_path, tiny workloads."""

import os

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from surge_repro.config import compose  # noqa: E402

TINY = ["task=synthetic_images", "model=tiny_mlp", "batch=16", "optimizer.lr=0.01",
        "protocol.targets=[1.0,0.8]", "protocol.k=3", "protocol.probe.size=256", "protocol.max_steps=2000",
        "threads=1", "device=cpu"]


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) with the store and data under tmp_path; ``tiny=True`` starts from the synthetic workload."""

    def make(*overrides, tiny=True):
        base = [f"paths.store={tmp_path / 'store'}", f"paths.data={tmp_path / 'data'}"]
        return compose(base + (TINY if tiny else []) + list(overrides))

    return make
