"""Targets from a pilot (surge_repro.analysis.targets): on a store of probe-loss curves whose reachability is known in
closed form, the proposal is reached by every batch size with K steps to spare, the caps and the stall rule are laid on
the curves, an unreachable current target is named, and bad input gets an error that names the fix."""

import json
import re

import numpy as np
import pytest

from surge_repro.analysis import targets as tg

L0, K = 2.3, 10
CAPS = tg.Caps(k=K, max_steps=3000, max_examples=200_000, patience=20_000)  # the quickstart's protocol
# (B, lr) -> (floor, descent per step, flat steps before it): loss = max(floor, L0 - rate * (step - flat))
RUNS = {(1, 1e-3): (0.5, 0.002, 0), (1, 4e-3): (0.8, 0.01, 0),
        (16, 1e-3): (0.9, 0.01, 0), (16, 4e-3): (0.7, 0.02, 0),
        (16, 1.6e-2): (0.2, 0.05, 2000),  # a plateau of 32,000 examples: stalled (patience 20,000) before its fall
        (256, 1e-3): (1.5, 0.01, 0),
        (256, 4e-3): (0.3, (L0 - 1.25) / 771, 0)}  # at the example cap (step 771 + K) still at 1.25: its deepest
WORST = 0.002  # seed 1 runs this much above seed 0 everywhere: a cell's deepest level is its worst seed's


def loss(b, lr, seed, steps):
    floor, rate, flat = RUNS[b, lr]
    return np.maximum(floor, L0 - rate * np.maximum(steps - flat, 0)) + WORST * seed


def write_run(store, experiment, b, lr, seed, last=4000):
    """A point as run.py leaves it, probed every step to ``last`` (a pilot run under looser caps than CAPS)."""
    sig = f"b{b}-lr{lr:g}-s{seed}"
    folder = store / experiment / sig
    folder.mkdir(parents=True)
    steps = np.arange(0, last + 1)
    values = loss(b, lr, seed, steps)
    with open(folder / "metrics.jsonl", "w") as f:
        for s, v in zip(steps[1:], values[1:]):
            f.write(json.dumps({"step": int(s), "examples": int(s * b), "loss": float(v), "probe_loss": float(v)})
                    + "\n")
    summary = {"status": "capped", "experiment": experiment, "signature": sig, "initial_loss": float(values[0]),
               "point": {"task": "fashion_mnist", "model": "cnn5", "optimizer": "adam", "batch_size": b, "lr": lr,
                         "seed": seed, "k": K},
               "targets": [], "steps": last}
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def pilot(tmp_path):
    store = tmp_path / "store"
    for b, lr in RUNS:
        for seed in (0, 1):
            write_run(store, "quickstart", b, lr, seed)
    return store


# the deepest level each B reaches with every seed and K to spare, in closed form: B = 1 at LR 1e-3 (0.5 at step 900),
# B = 16 at 4e-3 (0.7 at step 80; 1.6e-2 stalls on its plateau), B = 256 at 4e-3 (1.25 at the example cap)
DEEPEST = {1: 0.5 + WORST, 16: 0.7 + WORST, 256: 1.25 + WORST}


def test_the_caps_and_the_stall_are_laid_on_the_pilots_curves(pilot):
    curves = {(c.batch_size, c.lr, c.seed): c for c in tg.read_pilot(pilot, "quickstart")}
    assert len(curves) == 2 * len(RUNS) and all(c.dense for c in curves.values())
    at_cap = curves[256, 4e-3, 0]
    # the example cap: a run at B = 256 makes steps 1 .. 782 (781 * 256 < 200,000); K fits after step 771 at most
    assert at_cap.steps[tg.seen(at_cap, CAPS)].max() == 782
    assert at_cap.steps[tg.with_room(at_cap, CAPS)].max() == 771
    assert tg.deepest(at_cap, CAPS) == pytest.approx(1.25)
    # 1.3 is crossed at step 735, 1.245 at 775 (within the cap, without room for K), 1.2 only after the cap (808)
    steps, room = tg.crossings(at_cap, [1.3, 1.245, 1.2], CAPS)
    assert steps[:2].tolist() == [735, 775] and room.tolist() == [True, False, False] and np.isnan(steps[2])
    plateau = curves[16, 1.6e-2, 0]  # the pilot's curve falls to 0.2 after its plateau; the experiment's stalls first
    assert plateau.loss.min() == pytest.approx(0.2) and tg.deepest(plateau, CAPS) == pytest.approx(L0)
    by_b = tg.deepest_by_batch(list(curves.values()), CAPS)
    assert by_b["deepest"].to_dict() == pytest.approx(DEEPEST)
    assert by_b.loc[256, "lr"] == 4e-3


def test_the_proposal_is_reached_by_every_batch_size_and_spread_evenly_from_the_initial_loss(pilot):
    curves = tg.read_pilot(pilot, "quickstart")
    levels = tg.propose(curves, CAPS, n=5)
    assert len(levels) == 5 and levels == sorted(levels, reverse=True)
    assert 1.252 <= levels[-1] <= 1.26  # the deepest that B = 256 reaches, rounded up to 0.01
    assert np.diff(levels) == pytest.approx(np.full(4, (levels[-1] - L0 - WORST / 2) / 5), abs=0.011)
    assert levels[0] < L0 - 0.1 and all(level >= d for level in levels for d in DEEPEST.values())
    best = tg.best_by_batch(tg.reach(curves, levels, CAPS))
    assert best.reachable.all() and not tg.unreachable(best)
    deeper = tg.best_by_batch(tg.reach(curves, [levels[-1] - 0.01], CAPS))  # a step deeper: B = 256 cannot
    assert list(tg.unreachable(deeper).values()) == [[256]]
    assert tg.propose(curves, CAPS, n=2)[-1] == levels[-1]


def test_the_command_prints_the_override_and_names_an_unreachable_current_target(pilot, capsys):
    assert tg.main(["+experiment=quickstart", f"paths.store={pilot}", "n=4"]) == 0
    out = capsys.readouterr().out
    proposed = [float(v) for v in re.search(r"^protocol\.targets=\[(.*)\]$", out, re.M).group(1).split(",")]
    assert proposed == tg.propose(tg.read_pilot(pilot, "quickstart"), CAPS, 4)
    # the quickstart's targets are 1.4, 1.2, 1.0: B = 256 gets to 1.25 within its example cap
    assert "unreachable" in out and "1.2 at B = 256; 1 at B = 256" in out
    assert "1.4 at" not in out
    current = out.split("current targets")[1]
    row = re.search(r"^1\.2 .*$", current, re.M).group(0).split()
    # 4 of 7 cells: both of B = 1's, 2 of B = 16's (1.6e-2 stalls), none of B = 256's; none crossed without room
    assert row[1] == "4/7" and row[4] == "-" and row[5] == "yes", row


def test_a_pilot_written_before_metrics_held_probe_losses_is_read_from_its_summaries(tmp_path):
    folder = tmp_path / "store" / "old" / "b8-lr0.001-s0"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 100, "examples": 800, "loss": 1.9}) + "\n")
    rec = {"target": 1.5, "steps": 300, "probe_loss": 1.49, "previous_probe": 299, "previous_probe_loss": 1.51,
           "probe_loss_after_k": 1.40, "reached": True}
    (folder / "summary.json").write_text(json.dumps({
        "status": "done", "experiment": "old", "signature": "b8-lr0.001-s0", "initial_loss": 2.3, "steps": 310,
        "point": {"task": "t", "model": "m", "optimizer": "adam", "batch_size": 8, "lr": 1e-3, "seed": 0, "k": 10},
        "targets": [rec]}))
    (curve,) = tg.read_pilot(tmp_path / "store", "old")
    assert not curve.dense and curve.status == "done"
    assert curve.steps.tolist() == [0, 299, 300, 310] and curve.loss.tolist() == [2.3, 1.51, 1.49, 1.40]
    # 2,392 examples between the start and the probe before S: no stall is read into the gap of a sparse curve
    assert tg.deepest(curve, tg.Caps(k=10, max_steps=3000, max_examples=10**6, patience=1000)) == 1.40


@pytest.mark.parametrize("args, says", [
    (["+experiment=quickstart"], "no finished pilot runs of quickstart"),
    (["+experiment=no_such_grid"], "Fix: +experiment=<one of"),
    (["+experiment=quickstart", "paths.store=MISSING"], "no store at"),
    (["+experiment=quickstart", "seeds=a"], "Fix: n=5 seeds=0,1,2,3"),
])
def test_bad_input_gets_an_error_that_names_the_fix(tmp_path, capsys, args, says):
    (tmp_path / "store").mkdir()
    args = [a.replace("MISSING", str(tmp_path / "none")) for a in args]
    assert tg.main([f"paths.store={tmp_path / 'store'}", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "usage:" in err, err
    if "pilot" in says:
        assert "holds: no experiments" in err and "python run.py -m +experiment=quickstart rounds=1" in err


def test_a_pilot_that_never_leaves_the_initial_loss_is_refused_with_the_batch_size_named(pilot):
    curves = [c for c in tg.read_pilot(pilot, "quickstart") if (c.batch_size, c.lr) != (256, 4e-3)]
    for c in curves:
        if c.batch_size == 256:
            c.loss[:] = L0 + 0.001 * c.seed  # B = 256's other LR, flat at the initial loss
    with pytest.raises(ValueError, match=r"at B = 256 no LR.*Fix: widen the LR grid"):
        tg.propose(curves, CAPS, n=5)


def test_the_stall_rule_is_the_protocols():
    from surge_repro.analysis import targets
    from surge_repro.run import protocol

    assert targets.NEW_BEST == protocol.NEW_BEST
