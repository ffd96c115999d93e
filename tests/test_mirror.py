"""The W&B mirror through the real wandb library (offline), and that its failures never cost a run or a metric."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surge_repro import mirror
from surge_repro.mirror import resolve_mode
from surge_repro.point import signature
from surge_repro.run import train


def leet(run: Path, *args: str) -> str:
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", *args, str(run)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def inspect(run_dir: Path) -> dict:
    """The offline run's summary, config and state, as wandb itself reads them back from its run file."""
    (run,) = list((run_dir / "wandb").glob("offline-run-*"))
    return json.loads(leet(run, "--summary", "--json"))


def history(run: Path) -> list[dict]:
    """The offline run's history rows ({key: value}, with _step), read back from its run file."""
    rows = []
    for line in leet(run, "--json").splitlines():
        record = json.loads(line)
        if record.get("type") == "history":
            rows.append(record["history"]["item"])
    return rows


def check_mirrored(run_dir: Path, summary: dict, experiment: str) -> list[dict]:
    """What a W&B user must find for one point: its run id, flat per-target keys equal to summary.json's, and a
    history with the probe loss at every probe and each target's crossing at S."""
    record = inspect(run_dir)
    assert record["state"] == "finished" and record["name"] == run_dir.name
    mark = json.loads((run_dir / "mirror.json").read_text())
    assert mark["id"] == mirror.run_id(experiment, run_dir.name) and mark["mode"] == "offline"
    for rec in summary["targets"]:
        key = f"target/{rec['target']:g}/"
        assert record["summary"][key + "loss_drop"] == pytest.approx(rec["loss_drop"])
        assert record["summary"][key + "steps"] == rec["steps"]
        assert record["summary"][key + "examples"] == rec["examples"]
    assert "targets" not in record["summary"]  # no list-valued key
    (run,) = list((run_dir / "wandb").glob("offline-run-*"))
    rows = history(run)
    probes = [r for r in rows if "probe_loss" in r]
    assert len(probes) == summary["probes"]  # every probe (the loss before the first step is initial_loss)
    for rec in summary["targets"]:
        (crossing,) = [r for r in rows if f"crossing/{rec['target']:g}" in r]
        assert crossing["_step"] == rec["steps"] and crossing[f"crossing/{rec['target']:g}"] == rec["probe_loss"]
    return rows


@pytest.mark.slow
def test_a_run_is_mirrored_offline_with_config_flat_keys_and_probe_history(make_cfg):
    cfg = make_cfg("logger=wandb", "logger.mode=offline", "progress.log_every=5")
    summary = train.run(cfg)
    run_dir = Path(cfg.paths.store) / cfg.experiment_name / signature(cfg)
    record = inspect(run_dir)
    assert record["project"] == "surge_repro"
    assert record["config"]["batch"] == 16 and record["config"]["optimizer.lr"] == 0.01
    assert record["summary"]["status"] == "done" and record["summary"]["steps"] == summary["steps"]
    metric_lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert record["summary"]["_step"] == json.loads(metric_lines[-1])["step"]
    check_mirrored(run_dir, summary, cfg.experiment_name)


@pytest.mark.slow
def test_points_already_in_the_store_are_mirrored_once(make_cfg, capsys):
    cfgs = [make_cfg(f"optimizer.lr={lr}") for lr in (0.01, 0.02)]  # trained without W&B
    summaries = [train.run(cfg) for cfg in cfgs]
    store, experiment = cfgs[0].paths.store, cfgs[0].experiment_name
    assert mirror.main([store, experiment, "--mode", "offline"]) == 0
    out = capsys.readouterr().out
    assert f"{experiment}: 2 point(s) mirrored" in out and "wandb sync" in out
    for cfg, summary in zip(cfgs, summaries):
        run_dir = Path(store) / experiment / signature(cfg)
        rows = check_mirrored(run_dir, summary, experiment)
        metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["loss"] for r in rows if "loss" in r] == pytest.approx([m["loss"] for m in metrics])
    assert mirror.main([store, experiment, "--mode", "offline"]) == 0  # idempotent: nothing new
    assert "0 point(s) mirrored, 2 already mirrored" in capsys.readouterr().out
    assert len(list(Path(store).glob("*/*/wandb/offline-run-*"))) == 2


def test_summary_and_history_keys_are_flat_scalars():
    summary = {"status": "capped", "steps": 40, "examples_seen": 640, "wall_s": 1.5, "targets": [
        {"target": 1.0, "steps": 12, "examples": 192, "loss_drop": 0.05, "probe_loss": 0.99, "b_simple": 3.0},
        {"target": 0.5, "steps": None, "examples": None, "loss_drop": None}]}
    keys = mirror.summary_keys(summary)
    assert keys["target/1/loss_drop"] == 0.05 and keys["target/1/examples"] == 192 and keys["target/1/reached"]
    assert keys["target/0.5/steps"] is None and keys["target/0.5/reached"] is False
    assert not any(isinstance(v, (list, dict)) for v in keys.values())
    events = [{"event": "target", "target": 1.0, "probe_loss": 0.99},
              {"event": "after_k", "window": 1, "target": 1.0, "probe_loss_after_k": 0.94},
              {"event": "after_k", "window": 2, "target": 1.0, "probe_loss_after_k": 0.9}]
    assert mirror.history_keys(events) == {"crossing/1": 0.99, "window/1": 0.94}
    assert mirror.run_id("fig2b", "b1-lr0.0001-s0-f06be98dc2") == "fig2b-b1-lr0.0001-s0-f06be98dc2"
    assert mirror.run_id("my/exp", "b1:x") == "my_exp-b1_x"


def test_the_mirror_command_names_its_fixes(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        mirror.main([str(tmp_path / "nowhere")])
    assert err.value.code == 2 and "is not a store directory" in capsys.readouterr().err
    (tmp_path / "store" / "quickstart").mkdir(parents=True)
    with pytest.raises(SystemExit):
        mirror.main([str(tmp_path / "store"), "fig9"])
    assert "it holds: quickstart" in capsys.readouterr().err


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
def test_the_report_logs_figure_numbers_tables_and_artifact_to_the_experiments_group(tmp_path):
    import pandas as pd
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
    optima = pd.read_csv(tmp_path / "fig" / "smoke.optima.csv")
    numbers = json.loads((tmp_path / "fig" / "smoke.json").read_text())
    drop = optima[optima.criterion == "drop"]
    expected = [x for t in numbers["targets"] for x in t["lr_opt"]]  # the JSON keeps 6 digits
    assert list(drop.lr_opt) == pytest.approx(expected, rel=1e-5, nan_ok=True)
    assert set(drop.verdict) == {t["verdict"]["verdict"] for t in numbers["targets"]}
    grid = pd.read_csv(tmp_path / "fig" / "smoke.csv.gz")
    for key, frame, column in (("grid", grid, "loss_drop_after_k"), ("optima", optima, "lr_opt_lo")):
        table = record["summary"][key]
        assert table["_type"] == "table-file" and table["nrows"] == len(frame)
        (logged,) = list((tmp_path / "fig" / "wandb").glob(f"offline-run-*/files/{table['path']}"))
        written = json.loads(logged.read_text())  # the Table's own file, as W&B will show it
        assert len(written["data"]) == len(frame) and written["columns"] == list(frame.columns)
        assert column in written["columns"]
    b_noise = record["summary"]["b_noise"]
    assert b_noise["_type"] == "table-file" and b_noise["nrows"] == len(numbers["targets"]) * 2  # both criteria
    (run,) = list((tmp_path / "fig" / "wandb").glob("offline-run-*"))
    artifacts = [json.loads(x) for x in leet(run, "--json").splitlines() if '"artifact"' in x]
    manifest = json.dumps(artifacts)
    assert "report-smoke" in manifest and all(n in manifest for n in ("smoke.json", "smoke.png", "smoke.csv.gz"))


@pytest.mark.slow
def test_offline_the_report_writes_its_w_and_b_report_spec_which_rebuilds_the_same_report(tmp_path):
    import synthetic

    from surge_repro.config import compose
    from surge_repro.report import wandb_report
    from surge_repro.report.render import render

    synthetic.write_store(tmp_path / "store", "smoke", synthetic.table(seeds=2, rng=0))
    cfg = compose(["+experiment=smoke", f"paths.store={tmp_path / 'store'}", f"paths.figures={tmp_path / 'fig'}",
                   "logger=wandb", "logger.mode=offline", "logger.entity=lab", "report.n_boot=20"])
    render(cfg, "test")
    path = tmp_path / "fig" / "smoke.wandb_report.json"
    tree = json.loads(path.read_text())
    assert tree["type"] == "Report" and tree["project"] == "surge_repro" and tree["entity"] == "lab"
    grids = [b for b in tree["blocks"] if b["type"] == "PanelGrid"]
    (report_run,), (points,) = (g["runsets"] for g in grids)
    assert report_run["filters"] == "Name == 'report-smoke'"  # the run render logs the figure and Tables to
    assert points["filters"] == "Group == 'smoke' and JobType == 'train'"  # one W&B run per point
    panels = {p["type"]: p for p in grids[0]["panels"] if p["type"] != "CustomChart"}
    assert panels["MediaBrowser"]["media_keys"] == ["figure"]  # the heatmaps
    assert panels["WeavePanelSummaryTable"]["table_name"] == "optima"
    charts = {c["query"]["summaryTable"]["tableKey"]: c["chart_fields"] for c in grids[0]["panels"]
              if c["type"] == "CustomChart"}
    assert charts == {"optima": {"x": "batch_size", "y": "lr_opt"}, "b_noise": {"x": "target_loss", "y": "b_noise"}}
    scatter = [p for p in grids[1]["panels"] if p["type"] == "ScatterPlot"]
    targets = [t["target"] for t in json.loads((tmp_path / "fig" / "smoke.json").read_text())["targets"]]
    assert [p["y"]["name"] for p in scatter] == [f"target/{t:g}/loss_drop" for t in targets]  # summary_keys'
    assert all(p["x"]["name"] == "optimizer.lr" for p in scatter)
    rebuilt = wandb_report.rebuild(tree)
    assert type(rebuilt).__name__ == "Report" and wandb_report.spec(rebuilt) == tree
