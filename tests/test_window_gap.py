"""reports/window_gap.py on two stores the test makes: the start gap, its link to the drop, and the compute ratio."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synthetic

ROOT = Path(__file__).resolve().parents[1]


def store(path: Path, gap_per_lr: float, wall_s: float) -> None:
    """A synthetic store whose windows start ``gap_per_lr * lr / max(lr)`` below the target, drops shrunk by it."""
    frame = synthetic.table(batch_sizes=[4, 64], lrs=np.geomspace(1e-4, 1e-2, 5), seeds=3, rng=1)
    gap = gap_per_lr * frame["lr"] / frame["lr"].max()
    frame["loss_at_target"] = frame["target_loss"] - gap
    frame["loss_drop_after_k"] -= gap  # lower on the curve, where it falls more slowly
    synthetic.write_store(path, "quickstart", frame)
    for summary_file in path.glob("quickstart/*/summary.json"):  # each point alone, as a run of wall_s seconds
        summary = json.loads(summary_file.read_text())
        summary["wall_s"] = wall_s
        summary_file.write_text(json.dumps(summary))


def test_window_gap_compares_two_stores(tmp_path):
    store(tmp_path / "before", gap_per_lr=0.2, wall_s=1.0)
    store(tmp_path / "after", gap_per_lr=0.0, wall_s=1.5)
    out = subprocess.run([sys.executable, str(ROOT / "reports" / "window_gap.py"), str(tmp_path / "before"),
                          str(tmp_path / "after")], cwd=tmp_path, capture_output=True, text=True, check=True)
    result = json.loads((tmp_path / "reports" / "figures" / "window_gap_quickstart.json").read_text())
    summary = result["summary"]
    assert summary["max_gap"]["before"] == pytest.approx(0.2) and summary["max_gap"]["after"] == 0.0
    assert summary["mean_gap"]["before"] > 0.05 and summary["mean_gap"]["after"] == 0.0
    assert summary["compute_ratio"] == 1.5 and summary["runs"] == {"before": 30, "after": 30}
    lo, hi = summary["gap_drop_correlation_range"]["before"]
    assert hi < 0  # a window that starts lower measures a smaller drop
    assert len(result["points"]) == 10 and "wrote" in out.stdout


def test_window_gap_names_an_empty_store(tmp_path):
    store(tmp_path / "before", gap_per_lr=0.2, wall_s=1.0)
    out = subprocess.run([sys.executable, str(ROOT / "reports" / "window_gap.py"), str(tmp_path / "before"),
                          str(tmp_path / "nothing")], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "holds no finished runs" in out.stderr
