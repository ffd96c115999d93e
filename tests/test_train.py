"""One point end to end on the CPU: the files it leaves, relaunch skipping, divergence, the cap, failures."""

import json

import pytest

from surge_repro.point import signature
from surge_repro.run import train
from surge_repro.store import PointDir, load_grid


def point_dir(cfg):
    return PointDir(cfg.paths.store, cfg.experiment_name, signature(cfg))


def test_a_point_trains_to_its_targets_and_writes_the_store(make_cfg):
    cfg = make_cfg()
    summary = train.run(cfg)
    assert summary["status"] == "done"
    p = point_dir(cfg)
    assert {f.name for f in p.path.iterdir()} >= {"config.yaml", "metrics.jsonl", "events.jsonl", "summary.json"}
    events = [json.loads(x) for x in (p.path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("target") == 2 and [e["event"] for e in events].count("after_k") == 2
    for rec in summary["targets"]:
        assert rec["reached"] and rec["probe_loss"] <= rec["target"]
        assert rec["examples"] == rec["steps"] * 16
        assert rec["loss_drop"] == pytest.approx(rec["probe_loss"] - rec["probe_loss_after_k"])
    metrics = [json.loads(x) for x in (p.path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == summary["steps"] and all(m["lr"] == 0.01 for m in metrics)
    prov = summary["provenance"]
    assert {"git_sha", "git_dirty", "versions", "device", "hostname"} <= set(prov) and "torch" in prov["versions"]
    assert summary["point"]["batch_size"] == 16 and summary["point"]["beta2"] == 0.999
    assert len(load_grid(cfg.paths.store, cfg.experiment_name)) == 2


def test_relaunch_skips_a_finished_point(make_cfg):
    cfg = make_cfg()
    first = train.run(cfg)
    mtime = (point_dir(cfg).path / "summary.json").stat().st_mtime_ns
    again = train.run(cfg)
    assert again == first and (point_dir(cfg).path / "summary.json").stat().st_mtime_ns == mtime


def test_same_seed_same_result_different_seed_different_path(make_cfg):
    a = train.run(make_cfg("experiment_name=a"))
    b = train.run(make_cfg("experiment_name=b"))
    c = train.run(make_cfg("experiment_name=c", "seed=1"))
    assert a["targets"] == b["targets"]
    assert a["targets"] != c["targets"]


def test_divergence_is_kept_as_data(make_cfg):
    cfg = make_cfg("optimizer.lr=50.0")
    summary = train.run(cfg)
    assert summary["status"] == "diverged"
    assert point_dir(cfg).status() == "diverged" and train.run(cfg)["status"] == "diverged"  # final: skipped
    events = (point_dir(cfg).path / "events.jsonl").read_text()
    assert '"event": "diverged"' in events


def test_unreachable_target_is_capped_without_a_made_up_s(make_cfg):
    summary = train.run(make_cfg("protocol.targets=[1.0,0.0001]", "protocol.max_steps=150"))
    assert summary["status"] == "capped" and summary["steps"] <= 150 + 3
    low = [r for r in summary["targets"] if r["target"] == 0.0001][0]
    assert low["steps"] is None and low["examples"] is None and not low["reached"]


def test_a_failed_run_is_recorded_and_rerun_on_relaunch(make_cfg, monkeypatch):
    cfg = make_cfg()
    from surge_repro.tasks import TensorTask

    real_loss, calls = TensorTask.loss, {"n": 0}

    def flaky(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return real_loss(model, batch)

    monkeypatch.setattr(TensorTask, "loss", staticmethod(flaky))
    failed = train.run(cfg)
    assert failed["status"] == "failed" and "illegal memory access" in failed["error"]
    assert point_dir(cfg).status() == "failed"
    monkeypatch.setattr(TensorTask, "loss", staticmethod(real_loss))
    assert train.run(cfg)["status"] == "done"
    assert (point_dir(cfg).path / "attempts" / "0" / "summary.json").exists()  # the failure is kept


def test_a_killed_run_is_rerun_from_scratch(make_cfg):
    cfg = make_cfg()
    p = point_dir(cfg)
    with p.claim():  # what a killed process leaves: config and partial metrics, no summary
        p.begin("partial: true\n")
        p.append("metrics", {"step": 1, "loss": 9.9})
    assert p.status() == "incomplete"
    assert train.run(cfg)["status"] == "done"
    assert "9.9" in (p.path / "attempts" / "0" / "metrics.jsonl").read_text()


def test_missing_data_fails_before_the_store_is_touched(make_cfg, tmp_path):
    from surge_repro.tasks import DataError

    cfg = make_cfg("task=fashion_mnist", "model=cnn5", f"paths.data={tmp_path}/empty", tiny=False)
    cfg.batch, cfg.optimizer.lr = 4, 1e-3
    with pytest.raises(DataError, match="python -m surge_repro.tasks.prepare task=fashion_mnist"):
        train.run(cfg)
    assert not (tmp_path / "store").exists()


def test_the_probe_of_a_batchnorm_model_uses_batch_statistics_and_leaves_the_running_ones(make_cfg):
    import torch
    from torch.func import functional_call

    from surge_repro.config import build
    from surge_repro.run.engines import probe_model

    task = build(make_cfg().task)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 4))
    probe_batch = task.probe(512, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = probe_model(model, task, probe_batch)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running stats untouched
    assert model.training
    scratch = {k: v.clone() for k, v in model.named_buffers()}  # train mode by hand, chunk by chunk as the probe
    chunks = [task.loss(lambda x: functional_call(model, scratch, (x,)), (probe_batch[0][i:i + 256],
                                                                          probe_batch[1][i:i + 256]))
              for i in (0, 256)]
    assert value == pytest.approx(float(sum(chunks)) / 2, rel=1e-6)
    model.eval()
    assert abs(task.loss(model, probe_batch).item() - value) > 1e-3  # not the running statistics' loss
