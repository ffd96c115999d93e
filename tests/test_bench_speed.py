"""reports/bench_speed.py --device-check: its CPU version (--quick) end to end, the JSON it writes (every target of
issue 18 with a value or an explicit "not measured", and PASS/FAIL as the thresholds say), and the hook that reads
compiled-against-eager ratios from reports/bench_compile.py's ``compare_compiled``."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "reports" / "bench_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "device_check.json"
    run = subprocess.run([sys.executable, "reports/bench_speed.py", "--device-check", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text()), run.stdout


def test_the_quick_device_check_reports_every_target(check):
    result, stdout = check
    rows = {r["key"]: r for r in result["targets"]}
    keys = ["packed_vs_sequential", "fig2_100_seeds", "lm_bf16_mfu"]
    assert set(keys + [f"compiled/{k}" for k in keys] + [f"compiled_vs_eager/{k}" for k in keys]) <= set(rows)
    assert all("--quick" in rows[f"compiled/{k}"]["why"] for k in keys)  # compiling takes longer than the check
    for row in rows.values():
        assert row["status"] in ("PASS", "FAIL", "not measured", "measured")
        if row["value"] is None:  # a missing number says so, and why
            assert row["status"] == "not measured" and row["why"]
        elif row["threshold"] is None:
            assert row["status"] == "measured"
        else:
            passed = row["value"] >= row["threshold"] if row["sense"] == ">=" else row["value"] <= row["threshold"]
            assert row["status"] == ("PASS" if passed else "FAIL")
        assert row["what"] in stdout and row["status"] in stdout
    assert [r["threshold"] for r in (rows[k] for k in keys)] == [10.0, 30.0, 40.0]
    assert [r["sense"] for r in (rows[k] for k in keys)] == [">=", "<=", ">="]
    # the values are the measured parts' numbers: the worst ratio at B <= 64, the two panels' minutes
    small = [r["ratio"] for r in result["cnn"] if r["batch"] <= 64]
    assert [r["batch"] for r in result["cnn"]] == [1, 4, 16, 64] and rows["packed_vs_sequential"]["value"] == min(small)
    fig2 = result["fig2_projection"]
    assert fig2["fig2b"]["points"] == 12 * 18 * 100 and fig2["fig2c"]["points"] == 12 * 15 * 100
    assert "committed tables' round" in fig2["fig2b"]["steps_from"]  # the steps of a measured round, not the cap
    assert rows["fig2_100_seeds"]["value"] == pytest.approx((fig2["fig2b"]["seconds"] + fig2["fig2c"]["seconds"]) / 60)
    if not torch.cuda.is_available():  # bf16 MFU is the GPU's: on a CPU the LM runs in float32 and says so
        assert result["lm"]["precision"] == "fp32" and rows["lm_bf16_mfu"]["status"] == "not measured"
    assert "time budget: 480 s" in stdout and result["seconds"]["total"] < result["budget_s"]


def test_verdicts_follow_the_thresholds(bench):
    assert bench.verdict(10.0, 10.0, ">=") == "PASS" and bench.verdict(9.99, 10.0, ">=") == "FAIL"
    assert bench.verdict(30.0, 30.0, "<=") == "PASS" and bench.verdict(30.5, 30.0, "<=") == "FAIL"
    assert bench.verdict(None, 40.0, ">=") == "not measured" and bench.verdict(1.7, None, ">=") == "measured"


FAKE_TIMES = """
def compare_compiled(device, pack_batches, points, single_batches, window, out):
    # step times in ms as a linear function of B: a pack of P costs 40 + B, one point 2 + B / 8; compiled, half
    rows = []
    for kind, b in [("pack", b) for b in pack_batches] + [("single", b) for b in single_batches]:
        eager = 40.0 + b if kind == "pack" else 2.0 + b / 8
        rows.append({"kind": kind, "batch": b, "points": points, "eager_ms_per_step": eager,
                     "compiled_ms_per_step": eager / 2, "ratio": 2.0})
    return rows
"""


def test_compiled_steps_come_from_compare_compiled_when_it_is_there(bench, tmp_path):
    cpu = torch.device("cpu")
    assert bench.compiled_cnn(cpu, [1], 8, 0.05, 300, tmp_path / "absent.py") == ([], f"absent.py is not in {tmp_path}")
    module = tmp_path / "bench_compile.py"
    module.write_text(FAKE_TIMES)  # a stand-in whose times are known, for another script's timing function
    rows, why = bench.compiled_cnn(cpu, [1, 64], 8, 0.05, 300, module)
    assert why == "" and [(r["kind"], r["batch"]) for r in rows] == [("pack", 1), ("single", 1), ("pack", 64),
                                                                      ("single", 64)]
    (at1, at64) = bench.compiled_rows(rows, 8)
    assert at1["ratio"] == pytest.approx(8 * 1.0625 / 20.5) and at64["ratio"] == pytest.approx(8 * 5 / 52)
    rows, why = bench.compiled_cnn(cpu, [1, 64], 8, 0.05, 10, module)
    assert rows == [] and "too little of the 480 s budget" in why  # too little time left: no case starts
    module.write_text("def compare_compiled(device):\n    raise RuntimeError('no triton')\n")
    assert bench.compiled_cnn(cpu, [1], 8, 0.05, 300, module) == (
        [], "compare_compiled failed at pack B = 1: RuntimeError: no triton")


def test_targets_pass_and_fail_by_their_thresholds(bench):
    """check_targets on measurements whose verdicts are known: packing 12x eager (PASS) and 8x compiled (FAIL), the
    LM at 45% MFU eager (PASS) and 30% compiled (FAIL), Fig. 2 from step times that make it long (FAIL)."""
    def cnn(ratio):
        return [{"batch": b, "points": 8, "ratio": ratio, "pack_ms_per_step": 10.0, "seq_point_steps_per_s": 100.0,
                 "pack_point_steps_per_s": 100.0 * ratio} for b in (1, 64)]

    def lm(mfu, ms):
        return {"precision": "bf16", "mfu": mfu, "params": 81e6, "batch": 64, "seq": 512, "device": "H100",
                "ms_per_step": ms}

    result = {"cnn": cnn(12.0), "fig2_projection": bench.project_fig2(cnn(12.0), "examples"), "lm": lm(0.45, 300.0),
              "compiled": {"cnn": [{"kind": "pack", "batch": b, "ratio": 1.25 + b} for b in (1, 64, 256)],
                           "cnn_rows": cnn(8.0), "fig2_projection": {}, "lm": lm(0.30, 450.0), "why": ""}}
    rows = {r["key"]: r for r in bench.check_targets(result)}
    status = {k: r["status"] for k, r in rows.items()}
    assert status["packed_vs_sequential"] == "PASS" and status["compiled/packed_vs_sequential"] == "FAIL"
    assert status["lm_bf16_mfu"] == "PASS" and status["compiled/lm_bf16_mfu"] == "FAIL"
    assert rows["lm_bf16_mfu"]["value"] == pytest.approx(45.0)
    assert rows["compiled_vs_eager/lm_bf16_mfu"]["value"] == pytest.approx(300 / 450)
    assert status["compiled_vs_eager/packed_vs_sequential"] == "measured"  # a ratio the issue sets no threshold on
    assert rows["compiled_vs_eager/packed_vs_sequential"]["value"] == 2.25  # the packed step's, smallest at B <= 64
    minutes = rows["fig2_100_seeds"]["value"]  # 100 point-steps/s one by one: hours, not 30 minutes
    assert minutes > 30 and status["fig2_100_seeds"] == "FAIL"
    assert status["compiled/fig2_100_seeds"] == "not measured" and rows["compiled/fig2_100_seeds"]["why"]
    result["lm"]["precision"] = "fp32"  # a float32 LM is no measurement of the bf16 target
    assert {r["key"]: r["status"] for r in bench.check_targets(result)}["lm_bf16_mfu"] == "not measured"
