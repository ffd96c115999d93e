"""The W&B mirror through the real wandb library (offline), and that its failures never cost a run or a metric."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surge_repro.mirror import resolve_mode
from surge_repro.point import signature
from surge_repro.run import train


def inspect(run_dir: Path) -> dict:
    wandb_cli = Path(sys.executable).with_name("wandb")
    (run,) = list((run_dir / "wandb").glob("offline-run-*"))
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_run_is_mirrored_offline_with_config_and_summary(make_cfg):
    cfg = make_cfg("logger=wandb", "logger.mode=offline", "progress.log_every=5")
    summary = train.run(cfg)
    run_dir = Path(cfg.paths.store) / cfg.experiment_name / signature(cfg)
    record = inspect(run_dir)
    assert record["name"] == signature(cfg) and record["project"] == "surge_repro"
    assert record["state"] == "finished"
    assert record["config"]["batch"] == 16 and record["config"]["optimizer.lr"] == 0.01
    assert record["summary"]["status"] == "done" and record["summary"]["steps"] == summary["steps"]
    metric_lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert record["summary"]["_step"] == json.loads(metric_lines[-1])["step"]


def test_a_failing_wandb_never_fails_the_run_or_loses_a_metric(make_cfg, monkeypatch):
    import wandb

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("could not reach api.wandb.ai (simulated)")

    monkeypatch.setattr(wandb, "init", unreachable)
    cfg = make_cfg("logger=wandb", "logger.mode=online", "progress.log_every=1")
    summary = train.run(cfg)
    assert summary["status"] == "done"
    lines = (Path(cfg.paths.store) / cfg.experiment_name / signature(cfg) / "metrics.jsonl").read_text()
    assert len(lines.splitlines()) == summary["steps"]  # every step logged to the store


def serve(handler_cls):
    """A local HTTP server on a free port, in a thread; yields its URL."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def test_mode_auto_goes_online_only_with_credentials_and_a_server_that_answers(monkeypatch, tmp_path, caplog):
    import http.server
    import socket

    from surge_repro import mirror

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    mirror._answers.cache_clear()
    server, url = serve(http.server.BaseHTTPRequestHandler)  # answers every request with an error: it is there
    monkeypatch.setenv("WANDB_BASE_URL", url)
    assert resolve_mode("auto") == "offline"  # no credentials
    (tmp_path / ".netrc").write_text("machine 127.0.0.1\n  login user\n  password abc\n")
    os.chmod(tmp_path / ".netrc", 0o600)
    assert resolve_mode("auto") == "online"
    server.shutdown()
    with socket.socket() as s:  # a port nobody listens on: no network, as on a cluster node
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("WANDB_BASE_URL", closed)
    assert [resolve_mode("auto", 1.0) for _ in range(3)] == ["offline"] * 3
    assert caplog.text.count("does not answer") == 1  # asked once per process, warned once
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled" and resolve_mode("online") == "disabled"
    mirror._answers.cache_clear()


@pytest.mark.slow
def test_wandb_breaking_mid_run_is_survived(make_cfg, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    calls = {"n": 0}
    real_log = Run.log

    def breaks_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("wandb-core went away (simulated)")
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", breaks_on_third)
    cfg = make_cfg("logger=wandb", "logger.mode=offline", "progress.log_every=1")
    summary = train.run(cfg)
    assert summary["status"] == "done" and calls["n"] == 3  # the mirror went quiet after the failure
    assert "W&B mirror: log failed" in caplog.text
    lines = (Path(cfg.paths.store) / cfg.experiment_name / signature(cfg) / "metrics.jsonl").read_text()
    assert len(lines.splitlines()) == summary["steps"]


@pytest.mark.slow
def test_the_report_logs_figure_and_numbers_to_the_experiments_group(tmp_path):
    import synthetic

    from surge_repro.config import compose
    from surge_repro.report.render import render

    synthetic.write_store(tmp_path / "store", "smoke", synthetic.table(seeds=2, rng=0))
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "logger=wandb", "logger.mode=offline", "report.n_boot=20"])
    render(cfg, "test")
    record = inspect(tmp_path / "fig")
    assert record["name"] == "report-smoke" and record["summary"]["figure"]["_type"] == "image-file"
    assert record["summary"]["target_1.b_noise"] > 0  # the fitted numbers, flattened
