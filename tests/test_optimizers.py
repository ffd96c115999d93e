"""The Adam-style family beyond Adam and SGD (conf/optimizer: rmsprop, adagrad, adafactor, lion, signsgd,
signsgd_momentum): each composes, builds and trains; the sign optimizers of surge_repro/optim.py follow their formulas;
every optimizer packing.LR_LINEAR names really is linear in the LR, and its packed points equal the same points one by
one; and a run.py sweep over the whole family finishes. Run: .venv/bin/python -m pytest tests/test_optimizers.py"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from surge_repro.config import CONF_DIR, build, validate
from surge_repro.optim import SignSGD, Signum
from surge_repro.run.packing import LR_LINEAR, why_not_packable
from surge_repro.run.train import run, run_points
from surge_repro.store import load_grid

ROOT = Path(__file__).resolve().parent.parent
NEW = ["rmsprop", "adagrad", "adafactor", "lion", "signsgd", "signsgd_momentum"]
PACKABLE = ["rmsprop", "adagrad", "lion", "signsgd", "signsgd_momentum"]  # adafactor reads the parameters
# the torch classes of LR_LINEAR that no config names, run through adam.yaml's keys (all four accept them)
TORCH_ONLY = ["AdamW", "Adamax", "NAdam", "RAdam"]
# an LR each optimizer reaches the tiny workload's targets at, in a few hundred steps
LR = {"rmsprop": 0.01, "adagrad": 0.05, "adafactor": 0.05, "lion": 0.01, "signsgd": 0.01, "signsgd_momentum": 0.01}
COMPARED = ["status", "steps", "reached", "steps_to_target", "loss_at_target", "loss_after_k", "loss_drop_after_k"]


def _overrides(name):
    if name in TORCH_ONLY:
        return ["optimizer=adam", f"optimizer._target_=torch.optim.{name}"]
    return [f"optimizer={name}"]


@pytest.mark.parametrize("name", NEW)
def test_each_config_composes_builds_and_trains_a_tiny_model(make_cfg, name):
    cfg = make_cfg(f"optimizer={name}", f"optimizer.lr={LR[name]}")
    validate(cfg)
    assert cfg.optimizer.name == name
    for line in (CONF_DIR / "optimizer" / f"{name}.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line or line.startswith(("_target_:", "name:")), f"{name}.yaml: uncommented key {line}"
    torch.manual_seed(0)
    task, model = build(cfg.task), build(cfg.model)
    optimizer = build(cfg.optimizer)(model.parameters())
    assert optimizer.param_groups[0]["lr"] == LR[name]
    batch = task.take(torch.arange(64))
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_signsgd_steps_by_exactly_lr_times_the_sign_where_adam_00_does_not():
    p0 = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    g = torch.tensor([3.0, -0.5, 1e-12, -1e-30, 0.0])
    p = p0.clone().requires_grad_()
    p.grad = g.clone()
    SignSGD([p], lr=0.25).step()
    assert torch.equal(p.detach(), torch.tensor([0.75, 1.25, 0.75, 1.25, 1.0]))  # -lr sign(g); g = 0 stays
    q = p0.clone().requires_grad_()
    q.grad = g.clone()
    torch.optim.Adam([q], lr=0.25, betas=(0.0, 0.0), eps=1e-8).step()
    # Adam (0, 0) moves by lr g / (|g| + eps): the same for large gradients, almost nothing for |g| << eps
    assert torch.allclose(q.detach()[:2], p.detach()[:2], rtol=0, atol=1e-7)
    assert abs(q.detach()[2].item() - 1.0) < 1e-4 and q.detach()[3].item() == 1.0


def test_signum_follows_its_formula_on_a_hand_computed_example():
    p = torch.ones(3, requires_grad=True)
    opt = Signum([p], lr=0.25, beta=0.5)
    p.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()  # m = 0.5 * 0 + 0.5 g = [0.5, -1, 0.25]: p = 1 - 0.25 * [1, -1, 1]
    assert torch.equal(p.detach(), torch.tensor([0.75, 1.25, 0.75]))
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.tensor([0.5, -1.0, 0.25]))
    p.grad = torch.tensor([-3.0, 1.0, -0.5])
    opt.step()  # m = 0.5 m + 0.5 g = [-1.25, 0, -0.125]: p -= 0.25 * [-1, 0, -1]
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.tensor([-1.25, 0.0, -0.125]))
    assert torch.equal(p.detach(), torch.tensor([1.0, 1.25, 1.0]))
    with pytest.raises(ValueError, match="beta"):
        Signum([p], lr=0.1, beta=1.0)


def test_which_new_optimizers_train_packed_and_why_not(make_cfg):
    for name in PACKABLE:
        assert why_not_packable(make_cfg(f"optimizer={name}")) is None, name
    assert why_not_packable(make_cfg("optimizer=adafactor")).startswith("optimizer Adafactor is not one whose step")
    assert "weight decay" in why_not_packable(make_cfg("optimizer=lion", "optimizer.weight_decay=0.1"))
    assert "lr_decay" in why_not_packable(make_cfg("optimizer=adagrad", "optimizer.lr_decay=0.01"))
    # LR_LINEAR vouches for classes by module and name: lion-pytorch's unchecked cautious variant is not packed
    cautious = make_cfg("optimizer=lion", "optimizer._target_=lion_pytorch.cautious_lion.Lion")
    assert why_not_packable(cautious).startswith("optimizer Lion is not one whose step is linear")


def _class(name):
    if name in TORCH_ONLY:
        return getattr(torch.optim, name)
    return get_class(OmegaConf.load(CONF_DIR / "optimizer" / f"{name}.yaml")._target_)


def test_every_lr_linear_optimizer_is_checked_here():
    classes = [_class(name) for name in PACKABLE + TORCH_ONLY]
    names = {c.__name__ if c.__module__.split(".")[0] == "torch" else f"{c.__module__}.{c.__name__}" for c in classes}
    assert names | {"Adam", "SGD"} == set(LR_LINEAR)  # Adam and SGD: tests/test_packed.py


@pytest.mark.parametrize("name", PACKABLE + TORCH_ONLY)
def test_the_step_is_lr_times_the_unit_lr_step(name):
    """What packing relies on: stepping a zero buffer at LR 1 and scaling by lr is the optimizer's own step at lr,
    over several steps of the same gradients (so the state, which must not read the LR, matters too)."""
    cls, kwargs = _class(name), {}
    if name in TORCH_ONLY:
        kwargs = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 7, generator=gen) for _ in range(6)]
    p0 = torch.randn(5, 7, generator=gen)
    for lr in (1e-3, 0.3):
        direct = p0.clone().requires_grad_()
        opt = cls([direct], lr=lr, **kwargs)
        packed, buffer = p0.clone(), torch.zeros_like(p0, requires_grad=True)
        unit = cls([buffer], lr=1.0, **kwargs)
        for g in grads:
            direct.grad = g.clone()
            opt.step()
            buffer.grad = g.clone()
            unit.step()
            with torch.no_grad():
                packed += lr * buffer
                buffer.zero_()
        torch.testing.assert_close(direct.detach(), packed, rtol=1e-6, atol=1e-6)


# LRs from slow to divergent, so that points leave the pack at different steps and the stack shrinks under the rest
GRID = [(0.003, 0), (0.03, 0), (0.03, 1), (30.0, 1)]


def _grid(make_cfg, store, name, packed):
    cfgs = [make_cfg(f"paths.store={store}", "task.size=512", f"optimizer.lr={lr}", f"seed={seed}",
                     "protocol.max_steps=200", *_overrides(name)) for lr, seed in GRID]
    summaries = run_points(cfgs) if packed else [run(cfg) for cfg in cfgs]
    table = load_grid(store, "manual").sort_values(["lr", "seed", "target_loss"]).reset_index(drop=True)
    return summaries, table


# Packing changes the order of float operations, so points agree to rounding, not bit for bit. A sign update maps a
# rounding-level change of a gradient element near zero to a full step of the other sign (tests/test_packed.py allows
# Adam (0, 0) 1e-3 for that); on these short runs the sign optimizers agree as tightly as the rest.
@pytest.mark.parametrize("name", PACKABLE + TORCH_ONLY)
def test_packed_points_equal_the_same_points_one_by_one(make_cfg, tmp_path, name):
    summaries, packed = _grid(make_cfg, tmp_path / "packed", name, packed=True)
    _, alone = _grid(make_cfg, tmp_path / "alone", name, packed=False)
    assert {s["pack"]["points"] for s in summaries} == {len(GRID)}  # all trained in one pack
    assert len(set(packed.status)) >= 2  # points left the pack at different steps
    pd.testing.assert_frame_equal(packed[COMPARED], alone[COMPARED], check_exact=False, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_run_py_sweep_over_the_family_finishes(tmp_path):
    """A tiny surge grid (2 batch sizes) for each new optimizer, through run.py and its default packed launcher:
    adafactor's points fall back to one by one, the rest train packed."""
    out = subprocess.run([sys.executable, "run.py", "-m", "task=synthetic_images", "model=tiny_mlp",
                          f"optimizer={','.join(NEW)}", "batch=4,16", "optimizer.lr=0.01,0.03",
                          "protocol.targets=[1.1]", "protocol.k=2", "protocol.probe.size=128",
                          "protocol.max_steps=1500", "threads=1", "device=cpu", "experiment_name=family",
                          f"paths.store={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    table = load_grid(tmp_path, "family")
    assert sorted(set(table.optimizer)) == sorted(NEW)
    assert len(table) == len(NEW) * 2 * 2 and set(table.status) <= {"done", "capped", "diverged"}
    assert (table.status == "done").sum() >= 18, table[["optimizer", "batch_size", "lr", "status"]]
    assert "optimizer=adafactor batch=4" in log and "one by one (optimizer Adafactor is not one whose step" in log
    assert log.count("points of B=4 train together") == len(PACKABLE)  # the rest packed, a pack per optimizer
