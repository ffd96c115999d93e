"""Every number trustworthy: identity, integrity and security of points and store, and the failures that must not
look like success (README, "What can go wrong"). Each test reproduces a fault as a user or an adversary would meet
it; the fits' own faults (no-reach optima, edges, ties, intervals at few seeds) are in tests/test_fit_trust.py."""

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from test_checkpoint import LONG, Preempted, preempt_at, same_run  # noqa: F401  (preempt_at: a fixture)
from test_data import write_fashion_mnist

from surge_repro.point import signature
from surge_repro.run import checkpoint
from surge_repro.run.train import run, run_points
from surge_repro.store import (
    PointDir,
    StoreError,
    disk_errors,
    load_grid,
    status_counts,
)
from surge_repro.tasks import DataError
from surge_repro.tasks.vision import (
    _fashion_mnist_train,
    fashion_mnist,
    prepare_fashion_mnist,
)

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env=None, timeout=600):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    return out.returncode, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------------------- security
class RunsCode:
    """A pickle that runs a shell command when it is loaded: what an adversary with write access to a shared store
    would put there."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_runs_code_is_never_unpickled_by_status_or_a_relaunch(make_cfg, tmp_path, caplog):
    cfg = make_cfg()
    first = run(cfg)
    point = Path(cfg.paths.store) / "manual" / first["signature"]
    (point / "summary.json").unlink()
    marker = tmp_path / "owned"
    torch.save({"version": checkpoint.VERSION, "step": 5, "run": RunsCode(marker)}, point / "checkpoint.pt")
    (point / "checkpoint.json").write_text(json.dumps({"step": 5, "mode": None, "pack": None}))
    code, out = cli("-m", "surge_repro.launch.status", *TINY, f"paths.store={cfg.paths.store}")
    assert code == 1 and "incomplete" in out and "checkpoint at step 5" in out, out
    assert not marker.exists()  # the read-only status ran nothing
    again = run(cfg)  # the relaunch refuses the file like a corrupt one, keeps it, starts over
    assert not marker.exists()
    assert "checkpoint refused" in caplog.text and again["resumed_at"] == []
    assert again["status"] == first["status"] and again["targets"] == first["targets"]
    assert (point / "attempts" / "0" / "checkpoint.pt").exists()


def test_a_checkpoint_holds_plain_data_only(make_cfg, preempt_at):  # noqa: F811
    cfg = make_cfg(*LONG)
    point = PointDir(cfg.paths.store, "manual", signature(cfg))
    preempt_at(point.path / "metrics.jsonl", 200)
    with pytest.raises(Preempted):
        run(cfg)
    state = torch.load(point.path / "checkpoint.pt", weights_only=True)  # would raise on any pickled object
    assert state["run"]["tracker"]["records"] and state["mode"] == {"packed": False, "threads": 1, "device": "cpu"}


# ------------------------------------------------------------------------------------------------------- identity
@pytest.mark.slow
def test_a_report_refuses_to_merge_grids_that_differ_and_names_the_keys(tmp_path):
    store, figures = tmp_path / "store", tmp_path / "fig"
    sweep = ["run.py", "-m", "+experiment=smoke", "experiment_name=mix", "optimizer.lr=0.003,0.01", "batch=8,32",
             "seed=0,1", f"paths.store={store}", f"hydra.sweep.dir={tmp_path}/mr"]
    assert cli(*sweep)[0] == 0 and cli(*sweep, "protocol.max_steps=40")[0] == 0
    assert len(load_grid(store, "mix")) == 2 * 16  # both grids are in the store, as data
    report = ["reports/fig2_cnn5_fmnist.py", "+experiment=smoke", "experiment_name=mix", f"paths.store={store}",
              f"paths.figures={figures}", "report.n_boot=20"]
    code, out = cli(*report)
    assert code == 2 and "2 grids" in out and "protocol.max_steps: 3000 (8 points), 40 (8 points)" in out, out
    assert "Traceback" not in out and not (figures / "mix.json").exists()
    code, out = cli(*report, 'report.select=["protocol.max_steps=40"]')
    assert code == 0, out
    numbers = json.loads((figures / "mix.json").read_text())
    assert {t["n_runs"] for t in numbers["targets"]} == {8}  # one grid: 2 B x 2 LR x 2 seeds


def test_the_data_are_part_of_a_points_identity_and_a_foreign_dataset_is_refused(make_cfg, tmp_path, caplog):
    debian, data = tmp_path / "debian", tmp_path / "data"
    write_fashion_mnist(debian, n=600, gz=True)
    _fashion_mnist_train.cache_clear()
    prepare_fashion_mnist(str(data), debian=debian)
    raw = data / "FashionMNIST" / "raw"
    record = json.loads((raw / "fingerprint.json").read_text())  # written at prepare time, beside the files
    assert set(record["files"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"}
    cfg = make_cfg("task=fashion_mnist", "task.size=600", "model=tiny_mlp", f"paths.data={data}", "batch=16",
                   "optimizer.lr=1e-3", "protocol.targets=[2.2]", "protocol.k=2", "protocol.max_steps=200",
                   "threads=1", "device=cpu", tiny=False)
    first = run(cfg)
    assert first["identity"]["data"] == f"sha256:{record['sha256'][:16]}"
    write_fashion_mnist(raw, n=600, seed=1)  # other images under the release's names, as valid idx files
    _fashion_mnist_train.cache_clear()
    assert signature(cfg) != first["signature"]  # another point: not "already done"
    assert "changed since they were fingerprinted" in caplog.text
    second = run(cfg)
    assert second["signature"] != first["signature"] and status_counts(cfg.paths.store, "manual") == {"done": 2}
    write_fashion_mnist(raw, n=100, seed=2)  # a subset: not the dataset the task names
    _fashion_mnist_train.cache_clear()
    with pytest.raises(DataError, match="expects 600 training examples; the data in .* have 100"):
        run(cfg)
    assert status_counts(cfg.paths.store, "manual") == {"done": 2}
    _fashion_mnist_train.cache_clear()


def test_the_bytes_a_point_trains_on_do_not_depend_on_the_thread_count(tmp_path):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n=20_000)
    threads, inputs = torch.get_num_threads(), []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            _fashion_mnist_train.cache_clear()
            inputs.append(fashion_mnist(root=str(tmp_path), size=None).inputs)
    finally:
        torch.set_num_threads(threads)
        _fashion_mnist_train.cache_clear()
    assert torch.equal(inputs[0], inputs[1])  # bit for bit; a float reduction differed by 1.2e-7
    assert abs(float(inputs[0].mean())) < 1e-4 and abs(float(inputs[0].std()) - 1) < 1e-3


@pytest.mark.slow
def test_a_relaunch_keeps_a_point_in_the_thread_count_it_trained_with(make_cfg, tmp_path, preempt_at):  # noqa: F811
    # the CNN's convolutions split their sums by thread count: another count is another rounding
    args = ["task.img_size=28", "model=cnn5", "model.channels=[4,8]", "optimizer.lr=3e-4", "protocol.targets=[1.2]",
            "protocol.max_steps=1500", "checkpoint.every_s=1e9", "progress.log_every=10", "threads=1"]
    want = run(make_cfg(*args, f"paths.store={tmp_path / 'reference'}"))
    cfg = make_cfg(*args)
    point = Path(cfg.paths.store) / "manual" / signature(cfg)
    preempt_at(point / "metrics.jsonl", 100)
    with pytest.raises(Preempted):
        run(cfg)
    assert json.loads((point / "checkpoint.json").read_text())["mode"]["threads"] == 1
    got = run(make_cfg(*args[:-1], "threads=2"))  # the relaunch asks for 2 threads
    assert got["mode"] == {"packed": False, "threads": 1, "device": "cpu"} and got["mode_changes"] == []
    same_run(got, want)


def test_a_relaunch_keeps_a_checkpointed_pack_in_one_unit(make_cfg, preempt_at, monkeypatch):  # noqa: F811
    from surge_repro.launch.launcher import PackedLauncher

    lrs = [1e-4, 1.5e-4, 2e-4, 2.5e-4, 3e-4, 3.5e-4]
    cfgs = {f"optimizer.lr={lr}": make_cfg(*LONG, f"optimizer.lr={lr}") for lr in lrs}
    packed = [cfgs[f"optimizer.lr={lr}"] for lr in lrs[::2]]  # jobs 0, 2, 4 trained as one pack, then stopped
    point = Path(packed[0].paths.store) / "manual" / signature(packed[0])
    preempt_at(point / "metrics.jsonl", 200)
    with pytest.raises(Preempted):
        run_points(packed)
    launcher = PackedLauncher(n_jobs=2, pack="always")
    monkeypatch.setattr(launcher, "_group_configs", lambda group, jobs, first: [cfgs[jobs[i][0]] for i in group])
    units, _, _ = launcher.plan([[f"optimizer.lr={lr}"] for lr in lrs], 0, workers=2)
    assert [0, 2, 4] in units  # resumed together, row for row: bit for bit (tests/test_checkpoint.py)
    assert sorted(i for u in units for i in u) == list(range(6))


def test_points_run_one_by_one_start_in_the_sweeps_order_seed_outermost(make_cfg, monkeypatch):
    from surge_repro.launch.launcher import PackedLauncher

    jobs = [[f"seed={s}", f"batch={b}"] for s in (0, 1, 2) for b in (4, 8)]  # as the experiments sweep: seed first
    cfgs = {tuple(j): make_cfg(*j) for j in jobs}
    launcher = PackedLauncher(n_jobs=2, pack="never")
    monkeypatch.setattr(launcher, "_group_configs", lambda group, js, first: [cfgs[tuple(js[i])] for i in group])
    units, _, _ = launcher.plan(jobs, 0, workers=2)
    assert units == [[0], [1], [2], [3], [4], [5]]  # grouped by batch size, seed 2 of B = 4 would come before B = 8


# ---------------------------------------------------------------------------------- failures that look like success
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["launcher=packed", "launcher=local"])
def test_a_sweep_with_failed_points_exits_non_zero_and_names_them_all(tmp_path, launcher):
    # a model with 2 outputs on 4 classes: its loss fails on the first batch
    code, out = cli("run.py", "-m", "+experiment=smoke", launcher, "model.num_classes=2", "optimizer.lr=0.003,0.03",
                    "batch=8", f"paths.store={tmp_path}", f"hydra.sweep.dir={tmp_path}/mr")
    assert code != 0 and "2 of 2 point(s) of the sweep failed" in out, out
    assert "optimizer.lr=0.003" in out and "optimizer.lr=0.03" in out and "Traceback" not in out
    assert status_counts(tmp_path, "smoke") == {"failed": 2}  # kept as failed; a relaunch runs them again


@pytest.mark.slow
def test_a_single_failed_point_exits_non_zero(tmp_path):
    code, out = cli("run.py", *TINY, "model.num_classes=2", f"paths.store={tmp_path}")
    assert code != 0 and "error: the point failed: IndexError" in out, out


@pytest.mark.slow
def test_a_sweep_checks_every_point_before_any_runs_with_a_single_runs_messages(tmp_path):
    common = ["+experiment=smoke", f"paths.store={tmp_path}", f"hydra.sweep.dir={tmp_path}/mr"]
    code, out = cli("run.py", "-m", *common, "batch=0,8")
    assert code != 0 and "batch must be an integer > 0, got 0. Fix: batch=8" in out and "No point" in out, out
    assert not (tmp_path / "smoke").exists()  # batch 8 did not train first
    code, out = cli("run.py", "-m", *common, "optimizer.lr=1e-3,abc", "batch=8")
    single = cli("run.py", *common, "optimizer.lr=abc", "batch=8")[1]
    message = "optimizer.lr must be a number > 0, got 'abc'. Fix: optimizer.lr=3e-4"
    assert code != 0 and message in out and message in single and "Unknown format code" not in out, out
    code, out = cli("run.py", "-m", *common, "batch=4096")  # larger than the 2,048 examples
    assert code != 0 and "batch=4096 exceeds the 2048 training examples" in out, out
    assert not (tmp_path / "smoke").exists()


def test_torchs_failed_write_is_named_as_the_full_disk_it_is(tmp_path):
    class Full:  # a file on a full disk: its writes fail with ENOSPC, and torch.save reports its own error
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    with pytest.raises(StoreError, match="No space left on device; .* MiB free .* Free space"):
        with disk_errors(tmp_path / "checkpoint.pt"):
            torch.save({"x": torch.zeros(1000)}, Full())


@pytest.fixture
def small_disk(tmp_path):
    """A 60 kB file system (tmpfs): big enough for a few point directories, too small for their checkpoints."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_sweep_into_a_full_disk_stops_with_the_fix_and_keeps_what_is_done(small_disk, tmp_path):
    code, out = cli("run.py", "-m", "+experiment=smoke", f"paths.store={small_disk}/store", "checkpoint.every_s=0",
                    f"hydra.sweep.dir={tmp_path}/mr")
    assert code != 0 and "No space left on device" in out and "MiB free on its file system" in out, out
    assert "The sweep stopped" in out and "inline_container" not in out.split("error:")[-1]
    counts = status_counts(small_disk / "store", "smoke")
    assert "failed" not in counts  # not recorded as results: incomplete, resumed once there is room
    assert not list((small_disk / "store").rglob("*.tmp"))


def test_an_unreachable_wandb_server_is_asked_once_and_its_wait_is_not_training_time(make_cfg, monkeypatch):
    import time

    from surge_repro import mirror

    monkeypatch.delenv("WANDB_MODE", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # credentials, and no server: a cluster node without network
    monkeypatch.setenv("WANDB_BASE_URL", closed)
    mirror._answers.cache_clear()
    nodes = [make_cfg("logger=wandb").logger for _ in range(3)]
    mirror.decide(nodes)
    assert [n.mode for n in nodes] == ["offline"] * 3
    mirror._answers.cache_clear()

    cfgs = [make_cfg(f"optimizer.lr={lr}", "protocol.max_steps=300") for lr in (0.01, 0.02, 0.03)]
    reference = run_points(cfgs)
    real_init = mirror.Mirror._init

    def slow_init(self, *args):  # wandb's init waiting on a server: 2 s per run, inside the pack's training
        time.sleep(2.0)
        real_init(self, *args)

    monkeypatch.setattr(mirror.Mirror, "_init", slow_init)
    cfgs = [make_cfg(f"optimizer.lr={lr}", "protocol.max_steps=300", "logger=wandb", "logger.mode=offline",
                     "experiment_name=slow") for lr in (0.01, 0.02, 0.03)]
    slow = run_points(cfgs)
    # before: the first point's wall_s held the two later points' 4 s of W&B init
    assert slow[0]["wall_s"] < reference[0]["wall_s"] + 1.5, (slow[0]["wall_s"], reference[0]["wall_s"])
    assert all(list((Path(c.paths.store) / "slow" / s["signature"] / "wandb").glob("offline-run-*"))
               for c, s in zip(cfgs, slow))


# ------------------------------------------------------------------------------------------------- small but real
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_stored_files_respect_the_umask_so_a_shared_store_is_readable(make_cfg, preempt_at, mask):  # noqa: F811
    old = os.umask(mask)
    try:
        cfg = make_cfg(*LONG)
        point = Path(cfg.paths.store) / "manual" / signature(cfg)
        preempt_at(point / "metrics.jsonl", 100)
        with pytest.raises(Preempted):
            run(cfg)
        files = [point / n for n in ("config.yaml", "checkpoint.pt", "checkpoint.json", "metrics.jsonl")]
        run(cfg)
        files = [f for f in files if f.exists()] + [point / "summary.json"]
    finally:
        os.umask(old)
    assert files and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o666 & ~mask}


@pytest.mark.slow
def test_status_expands_a_sweep_exactly_as_run_py_does(tmp_path):
    args = ["+experiment=smoke", "batch=8", "experiment_name=stx", f"paths.store={tmp_path}"]
    code, out = cli("run.py", "-m", *args, f"hydra.sweep.dir={tmp_path}/mr")
    assert code == 0 and "sweep of 3 points" in out, out
    code, out = cli("-m", "surge_repro.launch.status", *args)
    assert code == 0 and "stx: 3 points in the sweep: 2 done, 1 diverged" in out, out  # not "6 points, 3 missing"


@pytest.mark.slow
def test_the_store_and_status_commands_answer_bad_input_with_usage_not_tracebacks(tmp_path):
    (tmp_path / "exp").mkdir()
    code, out = cli("-m", "surge_repro.store", "--help")
    assert code == 0 and "usage: python -m surge_repro.store" in out
    code, out = cli("-m", "surge_repro.store", str(tmp_path), "nope")
    assert code == 2 and "no experiment nope" in out and "exp" in out
    code, out = cli("-m", "surge_repro.store", str(tmp_path / "missing"))
    assert code == 2 and "not a store directory" in out
    code, out = cli("-m", "surge_repro.launch.status")
    assert code == 2 and "usage: python -m surge_repro.launch.status" in out and "Traceback" not in out
    file = tmp_path / "file"
    file.write_text("x")
    code, out = cli("-m", "surge_repro.launch.status", "+experiment=smoke", f"paths.store={file}")
    assert code == 2 and "is a file, not a store directory" in out and "Traceback" not in out
