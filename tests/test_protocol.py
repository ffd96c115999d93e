"""The protocol on scripted loss sequences: crossings, the K extra steps, divergence, targets never reached."""

import math
import random

import pytest

from surge_repro.run.protocol import CAPPED, DIVERGED, DONE, TargetTracker


def drive(tracker, losses, probe_losses=None):
    """Feed minibatch losses (and, per step, the probe loss the model would have); return events and probe steps."""
    probe_losses = probe_losses or losses
    events, probed = [], []
    for step, loss in enumerate(losses, start=1):
        if tracker.finished:
            break

        def probe(step=step):
            probed.append(step)
            return probe_losses[step - 1]

        events += tracker.update(step, loss, probe)
    return events, probed


def linear(start, slope, n):
    return [round(start - slope * i, 10) for i in range(1, n + 1)]  # round: 2 - 0.001 * 100 is 1.9


def test_crossing_is_the_first_step_at_or_below_target_and_drop_spans_k_steps():
    losses = linear(2.0, 0.01, 400)  # step s has loss 2 - 0.01 s: 1.5 at s = 50, 1.0 at s = 100
    t = TargetTracker(targets=[1.0, 1.5], k=10, batch_size=4, initial_loss=2.0, probe_every=64, probe_min_gap=4)
    events, probed = drive(t, losses)
    assert t.status == DONE
    hi, lo = t.records[1.5], t.records[1.0]
    assert (hi.steps, lo.steps) == (50, 100)  # exact, although probes are sparse
    assert lo.examples == 400  # E = B * S
    assert lo.probe_loss == pytest.approx(1.0) and lo.probe_loss_after_k == pytest.approx(0.9)
    assert lo.loss_drop == pytest.approx(0.1)  # over exactly K = 10 steps
    assert [e["event"] for e in events] == ["target", "after_k", "target", "after_k"]
    assert len(probed) < 55  # sparse far from the targets: far fewer probes than the 110 steps
    assert (hi.previous_probe, lo.previous_probe) == (49, 99)  # every step probed near each target
    assert probed[-1] == 110  # the run stops once the last window closes


def sigmoid_fall(n, plateau, width, noise=0.0, seed=0):
    """A loss that sits near 2.3 for ``plateau`` steps, then falls to 0.3 over about ``width`` steps: the shape of
    early training that a sparse schedule overshoots (its gap grew on the plateau). ``noise``: iid per-step noise."""
    rng = random.Random(seed)
    return [0.3 + 2.0 / (1 + math.exp(min(50.0, (s - plateau) / width))) + noise * rng.gauss(0, 1)
            for s in range(1, n + 1)]


def at_target(probe, rec, k):
    """The drop of the window that starts at the target's level, from the probe curve itself (1-based steps)."""
    p, s = rec.previous_probe, rec.steps
    f = (probe[p - 1] - rec.target) / (probe[p - 1] - probe[s - 1])
    start = (1 - f) * probe[p - 1] + f * probe[s - 1]
    assert start == pytest.approx(rec.target)  # the interpolated window starts exactly at the target
    return start - ((1 - f) * probe[p + k - 1] + f * probe[s + k - 1])


@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("plateau, width", [(300, 20), (2000, 100), (40, 3), (800, 60)])
def test_the_window_starts_at_the_first_step_at_or_below_each_target(batch_size, plateau, width):
    probe = sigmoid_fall(6000, plateau, width)
    targets = [1.8, 1.4, 1.2, 1.0]
    t = TargetTracker(targets=targets, k=10, batch_size=batch_size, initial_loss=2.3, probe_every=2048,
                      probe_min_gap=8)
    _, probed = drive(t, probe)
    gap = max(1, 8 // batch_size)  # probes near a target: every min_gap = 8 examples, at least every step
    for target in targets:
        first = next(s for s, v in enumerate(probe, start=1) if v <= target)
        rec = t.records[target]
        if gap == 1:
            assert (rec.steps, rec.previous_probe) == (first, first - 1), target
        else:  # S is the first probe at or below: at most gap - 1 steps late
            assert first <= rec.steps < first + gap and rec.steps - rec.previous_probe <= gap, target
        assert rec.loss_drop == pytest.approx(probe[rec.steps - 1] - probe[rec.steps + 9])  # the paper's, from S
        assert rec.loss_drop_at_target == pytest.approx(at_target(probe, rec, 10))
    assert len(probed) < 0.1 * t.records[1.0].steps + 80  # still sparse on the plateau


def test_on_a_noisy_curve_every_window_still_starts_at_the_target():
    # iid noise of 0.02 per step against a fall of 0.01 per step: the first step at or below a target is a dip of
    # the noise, which sparse probes may miss; the interpolated window starts at the target's level all the same
    probe = sigmoid_fall(6000, 2000, 100, noise=0.02)
    t = TargetTracker(targets=[1.8, 1.4, 1.2, 1.0], k=10, batch_size=1, initial_loss=2.3, probe_every=2048,
                      probe_min_gap=8)
    _, probed = drive(t, probe)
    for rec in t.records.values():
        assert 1 <= rec.steps - rec.previous_probe <= 10
        assert rec.loss_drop_at_target == pytest.approx(at_target(probe, rec, 10))
    assert len(probed) < 0.2 * t.records[1.0].steps


def test_noise_that_makes_a_far_target_look_near_costs_a_few_probes_not_a_dense_approach():
    # late in training at B = 1 the fall per step is far below the noise: a pair of probes a few steps apart often
    # calls the next target near; the close probes must find it is not and go sparse again for good
    rng = random.Random(0)
    probe = [0.55 + 1.75 / (1 + s / 300) ** 0.7 + 0.02 * rng.gauss(0, 1) for s in range(1, 12000)]
    t = TargetTracker(targets=[1.5, 1.2, 1.0, 0.8, 0.6], k=10, batch_size=1, initial_loss=2.3, probe_every=2048,
                      probe_min_gap=8, max_steps=11900)
    _, probed = drive(t, probe)
    assert t.records[0.8].reached and len(probed) < 0.1 * t.records[0.8].steps  # 222 probes for 4187 steps


def test_a_target_the_initial_loss_already_meets_is_reached_at_step_zero():
    # the one-step theory's setting: the K steps start from the initial state (the ground-truth workload)
    losses = linear(2.0, 0.01, 400)
    t = TargetTracker(targets=[2.0, 1.5], k=1, batch_size=4, initial_loss=2.0, probe_every=64, probe_min_gap=4)
    assert [e["event"] for e in t.start_events] == ["target"] and t.start_events[0]["steps"] == 0
    events, probed = drive(t, losses)
    top = t.records[2.0]
    assert (top.steps, top.examples, top.estimate) == (0, 0, None)
    assert top.probe_loss == 2.0 and top.loss_drop == pytest.approx(0.01)  # the first step's drop: 2 -> 1.99
    assert 1 in probed and t.records[1.5].steps == 50 and t.status == DONE
    below = TargetTracker(targets=[1.5], k=1, batch_size=4, initial_loss=2.0)
    assert below.start_events == [] and not below.records[1.5].reached


def test_targets_are_measured_on_the_probe_not_on_noisy_minibatch_losses():
    n = 300
    probe = linear(2.0, 0.01, n)
    noisy = [p + (0.8 if i % 2 else -0.8) for i, p in enumerate(probe)]  # minibatch losses jump +-0.8
    t = TargetTracker(targets=[1.2], k=5, batch_size=1, initial_loss=2.0, probe_every=32, probe_min_gap=1)
    drive(t, noisy, probe)
    assert t.records[1.2].steps == 80
    assert t.records[1.2].loss_drop == pytest.approx(0.05)


def test_several_targets_can_be_crossed_at_once_and_windows_overlap():
    losses = [2.0] * 20 + [0.5] * 40  # a cliff: both targets fall at step 21
    t = TargetTracker(targets=[1.5, 1.0], k=5, batch_size=8, initial_loss=2.0, probe_every=8, probe_min_gap=8)
    drive(t, losses)
    assert t.records[1.5].steps == t.records[1.0].steps == 21
    assert t.status == DONE


def test_never_reached_target_records_no_steps_and_status_capped():
    losses = linear(2.0, 0.001, 500)  # reaches 1.5 at step 500, never 1.0
    t = TargetTracker(targets=[1.9, 1.0], k=10, batch_size=2, initial_loss=2.0, probe_min_gap=2, max_steps=300)
    events, _ = drive(t, losses)
    assert t.status == CAPPED
    assert t.records[1.9].steps == 100 and t.records[1.9].measured
    assert t.records[1.0].steps is None and t.records[1.0].examples is None
    assert events[-1] == {"event": "capped", "step": 300, "reason": "step or example cap",
                          "targets_not_reached": [1.0]}


def test_a_window_open_at_the_cap_is_completed_first():
    losses = linear(2.0, 0.01, 400)
    t = TargetTracker(targets=[1.5], k=20, batch_size=1, initial_loss=2.0, probe_every=1, max_steps=55)
    drive(t, losses)
    assert t.status == DONE and t.records[1.5].steps == 50
    assert t.records[1.5].loss_drop == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_loss_diverges_and_keeps_earlier_crossings(bad):
    losses = linear(2.0, 0.01, 60) + [bad] + [0.1] * 100
    t = TargetTracker(targets=[1.5, 1.0], k=30, batch_size=1, initial_loss=2.0, probe_every=1)
    events, _ = drive(t, losses)
    assert t.status == DIVERGED
    assert events[-1]["event"] == "diverged" and events[-1]["step"] == 61
    assert t.records[1.5].steps == 50 and not t.records[1.5].measured  # its window was cut by the divergence
    assert not t.records[1.0].reached


def test_runaway_loss_diverges():
    losses = [2.0] * 10 + [50.0] * 50
    t = TargetTracker(targets=[1.0], k=5, batch_size=64, initial_loss=2.3, diverge_factor=3.0)
    drive(t, losses)
    assert t.status == DIVERGED


def test_update_after_finish_is_an_error():
    t = TargetTracker(targets=[1.0], k=1, batch_size=1, initial_loss=2.0, probe_every=1)
    drive(t, [0.5, 0.4])
    with pytest.raises(RuntimeError):
        t.update(3, 0.3, lambda: 0.3)


def test_a_stalled_run_is_capped_early():
    losses = linear(2.3, 0.01, 30) + [2.0] * 100_000  # an LR that kills every unit: the loss goes flat
    t = TargetTracker(targets=[1.0], k=5, batch_size=16, initial_loss=2.3, probe_every=256, patience=4096)
    events, _ = drive(t, losses)
    assert t.status == CAPPED and "no new best loss in 4096 examples" in events[-1]["reason"]
    assert 4096 <= events[-1]["step"] * 16 <= 2 * 4096 + 30 * 16


def test_several_windows_measure_the_mean_drop_and_keep_the_first_as_the_papers():
    losses = [round(2.0 - 0.01 * s + (0.02 if s == 110 else 0.0), 10) for s in range(1, 400)]  # a bump at S + K
    t = TargetTracker(targets=[1.0], k=10, windows=3, batch_size=4, initial_loss=2.0, probe_every=64,
                      probe_min_gap=4)
    events, probed = drive(t, losses)
    rec = t.records[1.0]
    assert t.status == DONE and rec.steps == 100
    assert rec.window_losses == pytest.approx([0.92, 0.8, 0.7])  # at S + K, S + 2K, S + 3K
    assert rec.loss_drop == pytest.approx(0.08)  # the paper's: the first window, bump included
    assert rec.loss_drop_mean == pytest.approx(0.1)  # (1.0 - 0.7) / 3
    assert [e.get("window") for e in events if e["event"] == "after_k"] == [1, 2, 3]
    assert probed[-1] == 130  # the run ends when the last window closes


def test_divergence_in_a_later_window_keeps_the_first_drop_but_no_mean():
    losses = linear(2.0, 0.01, 115) + [math.nan]
    t = TargetTracker(targets=[1.0], k=10, windows=2, batch_size=4, initial_loss=2.0, probe_every=64,
                      probe_min_gap=4)
    drive(t, losses)
    rec = t.records[1.0]
    assert t.status == DIVERGED and rec.loss_drop == pytest.approx(0.1) and rec.loss_drop_mean is None
