"""The store: point directories, locks, atomic summaries, resumable relaunches, the tidy table, full disks."""

import errno
import json
import os

import pytest

from surge_repro.store import COLUMNS, PointDir, StoreError, load_grid, status_counts


def finished_summary(sig, status="done", drop=0.1):
    return {"status": status, "experiment": "e", "signature": sig,
            "point": {"task": "t", "model": "m", "optimizer": "adam", "batch_size": 4, "batch_unit": "examples",
                      "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "seed": 0, "k": 10},
            "targets": [{"target": 1.0, "steps": 12, "examples": 48, "probe_loss": 0.99, "probe_loss_after_k": 0.9,
                         "loss_drop": drop, "estimate": 1.0, "estimate_after_k": 0.95, "reached": True},
                        {"target": 0.5, "steps": None, "examples": None, "probe_loss": None,
                         "probe_loss_after_k": None, "loss_drop": None, "estimate": None,
                         "estimate_after_k": None, "reached": False}],
            "steps": 30, "examples_seen": 120, "wall_s": 1.5, "provenance": {"git_sha": "abc", "git_dirty": False}}


def test_round_trip_and_tidy_table(tmp_path):
    p = PointDir(tmp_path, "e", "sig1")
    assert p.status() == "missing"
    with p.claim() as ok:
        assert ok
        p.begin("a: 1\n")
        p.append("metrics", {"step": 1, "loss": 2.0})
        p.append("events", {"event": "target"})
        assert p.status() == "incomplete"  # our own lock is not "running elsewhere"
        p.write_summary(finished_summary("sig1"))
    assert p.status() == "done"
    assert [json.loads(x) for x in (p.path / "metrics.jsonl").read_text().splitlines()] == [{"step": 1, "loss": 2.0}]
    table = load_grid(tmp_path, "e")
    assert list(table.columns) == COLUMNS
    assert len(table) == 2  # one row per (run x target)
    hit, miss = table.iloc[0], table.iloc[1]
    assert hit.reached and hit.steps_to_target == 12 and hit.examples_to_target == 48
    assert hit.loss_drop_after_k == pytest.approx(0.1) and hit.estimate_drop_after_k == pytest.approx(0.05)
    assert not miss.reached and miss.steps_to_target != miss.steps_to_target  # NaN, never a made-up S
    assert str(table.batch_size.dtype) == "Int64" and table.lr.dtype == float


def test_a_divergence_inside_the_window_reads_as_minus_infinity(tmp_path):
    s = finished_summary("sig", status="diverged", drop=None)
    p = PointDir(tmp_path, "e", "sig")
    p.path.mkdir(parents=True)
    (p.path / "summary.json").write_text(json.dumps(s))
    assert load_grid(tmp_path, "e").loss_drop_after_k.iloc[0] == float("-inf")


def test_lock_is_exclusive_and_shows_as_running(tmp_path):
    p, q = PointDir(tmp_path, "e", "s"), PointDir(tmp_path, "e", "s")
    with p.claim() as first:
        assert first
        assert q.status() == "running"
        with q.claim() as second:
            assert not second
    assert q.status() == "incomplete"  # the holder went away without a summary: a killed run


def test_a_rerun_keeps_the_earlier_attempt(tmp_path):
    p = PointDir(tmp_path, "e", "s")
    with p.claim():
        p.begin("x: 1\n")
        p.append("metrics", {"step": 1})
    with p.claim():
        p.begin("x: 1\n")
        p.append("metrics", {"step": 1})
        p.append("metrics", {"step": 2})
    assert (p.path / "attempts" / "0" / "metrics.jsonl").read_text().count("\n") == 1
    assert (p.path / "metrics.jsonl").read_text().count("\n") == 2


def test_summary_is_atomic(tmp_path, monkeypatch):
    p = PointDir(tmp_path, "e", "s")
    with p.claim():
        p.begin("")
        p.write_summary(finished_summary("s", status="failed"))

        def crash(*a, **k):
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            p.write_summary(finished_summary("s"))
    assert p.summary()["status"] == "failed"  # the old summary, whole
    assert [f.name for f in p.path.iterdir() if f.name.endswith(".tmp")] == []


def test_full_disk_gives_a_clear_error_and_keeps_finished_points(tmp_path, monkeypatch):
    done = PointDir(tmp_path, "e", "done")
    with done.claim():
        done.begin("")
        done.write_summary(finished_summary("done"))
    before = (done.path / "summary.json").read_text()
    p = PointDir(tmp_path, "e", "new")
    real_open = open

    def full(path, mode="r", *a, **k):
        if "a" in mode and str(path).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full)
    with p.claim():
        p.begin("")
        with pytest.raises(StoreError, match="No space left on device.*Free space.*finished points are kept"):
            p.append("metrics", {"step": 1})
    monkeypatch.undo()
    assert (done.path / "summary.json").read_text() == before
    assert status_counts(tmp_path, "e") == {"done": 1, "incomplete": 1}


NO_POINT = '{"status": "done", "experiment": "e", "signature": "s", "point": {}, "targets": []}'


@pytest.mark.parametrize("text", ['{"status": "do', '{"status": "done"}', '[1, 2]', NO_POINT])
def test_an_unreadable_or_incomplete_summary_is_corrupt_the_point_runs_again_and_reports_skip_it(tmp_path, caplog,
                                                                                             text):
    good = PointDir(tmp_path, "e", "good")
    good.path.mkdir(parents=True)
    (good.path / "summary.json").write_text(json.dumps(finished_summary("good")))
    p = PointDir(tmp_path, "e", "s")
    p.path.mkdir(parents=True)
    (p.path / "summary.json").write_text(text)
    assert p.status() == "corrupt" and p.summary() is None  # not "done" forever: a relaunch runs it again
    table = load_grid(tmp_path, "e")  # no KeyError: 'point'; the sound point is read, the corrupt one named
    assert set(table.signature) == {"good"} and "1 corrupt summary.json left out" in caplog.text
    assert status_counts(tmp_path, "e") == {"done": 1, "corrupt": 1}
    with p.claim():
        p.begin("x: 1\n")  # the relaunch: the bad summary is kept aside, never read again
    assert (p.path / "attempts" / "0" / "summary.json").read_text() == text and p.status() == "incomplete"
