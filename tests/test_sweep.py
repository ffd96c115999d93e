"""A real Hydra multirun of the smoke grid through run.py, relaunched; and the report drawn from what it stored."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from surge_repro.store import load_grid, status_counts

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.slow
def test_multirun_fills_the_store_and_a_relaunch_skips_it(tmp_path):
    store, figures = tmp_path / "store", tmp_path / "figures"
    common = [f"paths.store={store}", f"hydra.sweep.dir={tmp_path}/multirun"]
    code, log = run("run.py", "-m", "+experiment=smoke", *common)
    assert code == 0, log
    assert "sweep of 6 points" in log and "6 of 6 points finished" in log
    assert status_counts(store, "smoke") == {"done": 4, "diverged": 2}  # the LR of 30 diverges at both B
    sweep_log = (tmp_path / "multirun" / "sweep.log").read_text()  # n_jobs=1: the units run in this process
    assert "6 of 6 points finished" in sweep_log and "target 1 reached" in sweep_log
    assert "[surge_repro" in log and "[HYDRA] launching" not in log  # the suite's lines in its own format
    table = load_grid(store, "smoke")
    assert len(table) == 6 * 2 and set(table.target_loss) == {1.0, 0.8}
    assert table[table.status == "done"].reached.all()

    code, log = run("run.py", "-m", "+experiment=smoke", *common)
    assert code == 0 and log.count("already final in the store") == 2  # nothing reruns (a line per batch size)
    assert "launching 0 job(s)" in log
    assert "target 1 reached" not in log

    code, log = run("reports/fig2_cnn5_fmnist.py", "+experiment=smoke", f"paths.store={store}",
                    f"paths.figures={figures}")
    assert code == 0, log
    assert (figures / "smoke.png").stat().st_size > 10_000
    numbers = json.loads((figures / "smoke.json").read_text())
    assert numbers["points"] == {"done": 4, "diverged": 2}
    assert [t["target"] for t in numbers["targets"]] == [1.0, 0.8]
    assert "B_noise =" in log and "eps_max" in log and "figure:" in log


@pytest.mark.slow
def test_sweeping_any_axis_from_the_command_line(tmp_path):
    code, log = run("run.py", "-m", "task=synthetic_images", "model=tiny_mlp", "optimizer=sgd,adam_sign",
                    "batch=8", "optimizer.lr=0.05", "protocol.targets=[1.1]", "protocol.k=2",
                    "protocol.probe.size=128", "experiment_name=axes", f"paths.store={tmp_path}",
                    f"hydra.sweep.dir={tmp_path}/multirun")
    assert code == 0, log
    table = load_grid(tmp_path, "axes")
    assert sorted(table.optimizer) == ["adam_sign", "sgd"]
    assert table.set_index("optimizer").beta1.to_dict()["adam_sign"] == 0.0


@pytest.mark.slow
def test_a_sweep_over_missing_data_fails_once_at_the_start(tmp_path):
    code, log = run("run.py", "-m", "+experiment=fig2b_cnn5_fmnist_small_bs", "rounds=1",
                    f"paths.data={tmp_path}/nodata", f"paths.store={tmp_path}/store",
                    f"hydra.sweep.dir={tmp_path}/multirun")
    assert code != 0
    assert "python -m surge_repro.tasks.prepare task=fashion_mnist" in log
    assert "launching" not in log.lower() and not (tmp_path / "store").exists()


@pytest.mark.slow
def test_gpus_gives_one_worker_per_gpu_each_pinned_to_its_own(tmp_path):
    """On a CPU machine the workers train on the CPU, but each runs with its own CUDA_VISIBLE_DEVICES, as on a
    machine with these GPUs: every point's provenance names the GPU its worker was pinned to."""
    store = tmp_path / "store"
    code, log = run("run.py", "-m", "+experiment=smoke", "batch=8,16", "device=cpu", "hydra.launcher.gpus=[3,5]",
                    "hydra.launcher.pack=never", f"paths.store={store}", f"hydra.sweep.dir={tmp_path}/multirun")
    assert code == 0, log
    assert "one worker per GPU, pinned by CUDA_VISIBLE_DEVICES: 3, 5" in log and "6 of 6 points finished" in log
    pinned = [json.loads(p.read_text())["provenance"]["cuda_visible_devices"]
              for p in (store / "smoke").glob("*/summary.json")]
    assert len(pinned) == 6 and set(pinned) == {"3", "5"}  # both workers trained, each on its own GPU only


def test_gpus_names_what_this_machine_can_give(monkeypatch):
    from surge_repro.launch.launcher import gpu_ids

    assert gpu_ids([0, 3]) == ["0", "3"]  # named ids are taken as given
    with pytest.raises(ValueError, match="name each GPU once"):
        gpu_ids([1, 1])
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"torch sees 0 GPU\(s\) here. Fix: leave hydra.launcher.gpus unset"):
        gpu_ids("auto")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # an allocation's GPUs: the workers get those ids
    assert gpu_ids("auto") == ["4", "6"] and gpu_ids(1) == ["4"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_ids("auto") == ["0", "1"]
    with pytest.raises(ValueError, match="ask for at most 2"):
        gpu_ids(3)
    with pytest.raises(ValueError, match="auto, a number of GPUs or a list"):
        gpu_ids("all")


def test_sacct_lines_give_each_array_tasks_state():
    from surge_repro.launch.status import task_states

    lines = "57_0|COMPLETED\n57_1|CANCELLED by 0\n57_[2-4,7%256]|PENDING\n57_5|RUNNING\n58|COMPLETED\n"
    assert task_states(lines) == {("57", 0): "COMPLETED", ("57", 1): "CANCELLED", ("57", 2): "PENDING",
                                  ("57", 3): "PENDING", ("57", 4): "PENDING", ("57", 7): "PENDING",
                                  ("57", 5): "RUNNING"}
