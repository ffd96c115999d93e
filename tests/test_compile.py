"""Compiled steps (the ``compile`` key, surge_repro/run/engines.py): a compiled point or pack trains to the same S,
losses and drops as eager, a pack that shrinks compiles a bounded number of times, and compiling is not part of a
point's identity. torch.compile's ``aot_eager`` backend (graph capture and AOTAutograd, no generated code) keeps the
in-process tests fast; the slow tier runs inductor, the code generator compile=default uses."""

import pandas as pd
import pytest
import torch
from torch._dynamo.utils import counters

from surge_repro.config import build
from surge_repro.point import signature
from surge_repro.run.engines import Pack, Single, compile_mode
from surge_repro.run.train import run, run_points
from surge_repro.store import load_grid

# the paper's CNN, narrowed to train in seconds on the tests' synthetic images (16x16), and a target it reaches
CNN = ["model=cnn5", "task.img_size=16", "model.channels=[4,8]", "model.hidden=[32,16]", "protocol.targets=[1.25]",
       "protocol.k=3", "protocol.max_steps=300", "task.size=512"]
# per optimizer, LRs that reach the target at different steps and one that diverges, so that points leave the pack
# at different steps and the compiled stack shrinks under the rest (and runs padded: ``Pack._losses``)
LRS = {"adam": (0.002, 0.003, 0.005, 30.0), "adam_sign": (0.003, 0.005, 0.01, 30.0),
       "signsgd": (0.002, 0.003, 0.005, 30.0), "sgd_momentum": (0.01, 0.03, 0.05, 30.0)}
OVERRIDES = {"adam": (), "adam_sign": ("optimizer=adam_sign",), "signsgd": ("optimizer=signsgd",),
             "sgd_momentum": ("optimizer=sgd", "optimizer.momentum=0.9")}
GRID = [(lr, seed) for lr in LRS["adam"] for seed in (0, 1)]
COMPARED = ["status", "steps", "reached", "steps_to_target", "loss_at_target", "loss_after_k", "loss_drop_after_k"]


def grid_table(make_cfg, store, optimizer, packed, *extra):
    cfgs = [make_cfg(f"paths.store={store}", f"optimizer.lr={lr}", f"seed={seed}", *CNN, *OVERRIDES[optimizer],
                     *extra) for lr in LRS[optimizer] for seed in (0, 1)]
    summaries = run_points(cfgs) if packed else [run(cfg) for cfg in cfgs]
    return summaries, load_grid(store, "manual").sort_values(["lr", "seed", "target_loss"]).reset_index(drop=True)


# sign descent two ways: Adam with betas (0, 0) and signSGD; SGD with momentum (optimizer state that is not Adam's)
# the fast tier: Adam and signSGD packed (a shrinking, padded stack) and Adam one by one; the slow tier: the rest
@pytest.mark.parametrize("optimizer, packed", [
    ("adam", True), ("signsgd", True), ("adam", False),
    *[pytest.param(name, True, marks=pytest.mark.slow) for name in ("adam_sign", "sgd_momentum")],
    *[pytest.param(name, False, marks=pytest.mark.slow) for name in ("adam_sign", "signsgd", "sgd_momentum")],
], ids=lambda v: {True: "packed", False: "one_by_one"}.get(v, v) if isinstance(v, bool) else v)
def test_compiled_points_equal_eager_points_through_the_protocol(make_cfg, tmp_path, optimizer, packed):
    summaries, compiled = grid_table(make_cfg, tmp_path / "compiled", optimizer, packed, "compile=aot_eager")
    eager_summaries, eager = grid_table(make_cfg, tmp_path / "eager", optimizer, packed)
    assert "diverged" in set(compiled.status) and len(set(compiled.steps)) >= 3  # the pack shrank
    # the tolerance tests/test_packed.py gives packing: capture may reorder float operations as packing does
    pd.testing.assert_frame_equal(compiled[COMPARED], eager[COMPARED], check_exact=False, rtol=0, atol=1e-5)
    assert list(compiled.signature) == list(eager.signature)  # compiling is not part of a point's identity
    assert all(s["mode"]["compile"] == "aot_eager" for s in summaries)  # summary.json says how it trained
    assert all("compile" not in s["mode"] for s in eager_summaries)  # eager modes read as before the key


def test_a_shrinking_pack_compiles_log2_times_and_each_row_keeps_its_numbers(make_cfg):
    cfgs = [make_cfg(f"optimizer.lr={lr}", f"seed={seed}", *CNN) for lr, seed in GRID]
    task = build(cfgs[0].task)
    eager = Pack.build(cfgs, task, torch.device("cpu"))
    packed = Pack.build([make_cfg(f"optimizer.lr={lr}", f"seed={seed}", "compile=aot_eager", *CNN)
                         for lr, seed in GRID], task, torch.device("cpu"))
    counters.clear()
    gen = torch.Generator().manual_seed(0)
    for rows in range(len(GRID), 0, -1):  # one point leaves per step, from the middle of the stack: 8 sizes
        batch = task.take(torch.randint(0, len(task), (rows, 16), generator=gen))
        torch.testing.assert_close(packed.train_step(batch), eager.train_step(batch), rtol=0, atol=1e-6)
        keep = [r for r in range(rows) if r != rows // 2]
        if keep:
            packed.keep(keep)
            eager.keep(keep)
    assert packed.sizes == [8, 4, 2, 1]  # log2(8) + 1 graphs, not one per size
    assert counters["stats"]["unique_graphs"] == 4
    for name, value in eager.params.items():
        torch.testing.assert_close(packed.params[name], value, rtol=0, atol=1e-6)


def test_compile_is_a_nuisance_key_and_a_bad_mode_names_the_fix(make_cfg):
    assert signature(make_cfg("compile=default")) == signature(make_cfg())
    assert compile_mode(make_cfg()) == "off" and compile_mode(make_cfg("compile=false")) == "off"
    with pytest.raises(ValueError, match="Fix: compile= one of off, aot_eager, default"):
        Single(make_cfg("compile=fast"), build(make_cfg().task), torch.device("cpu"))


@pytest.mark.slow
def test_inductor_steps_equal_eager_steps(make_cfg):
    """compile=default: inductor's generated kernels (needs a C++ compiler), one point and a shrinking pack."""
    task = build(make_cfg(*CNN).task)
    eager, packed = (Pack.build([make_cfg(f"optimizer.lr={lr}", f"seed={seed}", f"compile={mode}", *CNN)
                                 for lr, seed in GRID[:4]], task, torch.device("cpu")) for mode in ("off", "default"))
    gen = torch.Generator().manual_seed(0)
    for rows in (4, 4, 3, 3, 2):  # 3 rows run padded in the graph for 4
        if rows < len(packed.point_lrs):
            packed.keep(list(range(rows)))
            eager.keep(list(range(rows)))
        batch = task.take(torch.randint(0, len(task), (rows, 16), generator=gen))
        torch.testing.assert_close(packed.train_step(batch), eager.train_step(batch), rtol=0, atol=1e-5)
    assert packed.sizes == [4, 2]
    one, alone = (Single(make_cfg(f"compile={mode}", *CNN), task, torch.device("cpu")) for mode in ("default", "off"))
    for _ in range(3):
        batch = task.take(torch.randint(0, len(task), (16,), generator=gen))
        torch.testing.assert_close(one.train_step(batch), alone.train_step(batch), rtol=0, atol=1e-5)
