"""The command lines as a user meets them: every one answers --help, and the suite installed from its wheel runs a
sweep, its status and its report from a directory that is not the repository."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIS = [["run.py"], ["-m", "surge_repro.launch.status"], ["-m", "surge_repro.store"], ["-m", "surge_repro.mirror"],
        ["-m", "surge_repro.analysis.budget"], ["-m", "surge_repro.analysis.targets"],
        ["-m", "surge_repro.tasks.prepare"]] + \
       [[f"reports/{p.name}"] for p in sorted((ROOT / "reports").glob("*.py"))]


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> tuple[int, str]:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS, ids=lambda c: c[-1])
def test_every_command_line_answers_help(cli):
    code, text = run([sys.executable, *cli, "--help"], ROOT, 120)
    assert code == 0, text
    assert "usage" in text.lower() or "powered by hydra" in text.lower(), text[:300]
    assert "Traceback" not in text


@pytest.mark.slow
def test_the_wheel_installs_and_runs_a_sweep_a_status_and_a_report_from_any_directory(tmp_path):
    source = tmp_path / "source"  # a copy of what the wheel is built from: the build leaves build/ where it runs
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    for part in ("surge_repro", "hydra_plugins"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    code, text = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                      str(tmp_path / "dist"), str(source)], tmp_path)
    assert code == 0, text
    (wheel,) = (tmp_path / "dist").glob("surge_repro-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "surge_repro/conf/config.yaml" in names and "surge_repro/conf/experiment/smoke.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)[0] == 0
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)[1]
                .strip())
    # the dependencies come from this environment (no network here); a path line runs none of its .pth files, so
    # the editable install of the source tree stays invisible to the new environment
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code, text = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                      str(wheel)], tmp_path)
    assert code == 0, text
    work = tmp_path / "elsewhere"
    work.mkdir()
    code, where = run([str(python), "-c", "import surge_repro; print(surge_repro.__file__)"], work)
    assert code == 0 and where.strip().startswith(str(site)), where
    code, text = run([str(bin_dir / "surge-run"), "-m", "+experiment=smoke"], work)
    assert code == 0, text
    assert "6 of 6 points finished" in text and (work / "store" / "smoke").is_dir()
    code, text = run([str(bin_dir / "surge-status"), "+experiment=smoke"], work)
    assert code == 0 and "6 points in the sweep: 4 done, 2 diverged" in text, text
    code, text = run([str(bin_dir / "surge-report"), "fig2_cnn5_fmnist", "+experiment=smoke", "report.n_boot=50"],
                     work)
    assert code == 0, text
    numbers = json.loads((work / "reports" / "figures" / "smoke.json").read_text())
    assert numbers["points"] == {"done": 4, "diverged": 2}
    code, text = run([str(bin_dir / "surge-report"), "--help"], work)
    assert code == 0 and "fig2_cnn5_fmnist" in text


OVERRIDE_TOOLS = [["-m", "surge_repro.launch.status"], ["-m", "surge_repro.analysis.budget"],
                  ["-m", "surge_repro.analysis.targets"],
                  ["-m", "surge_repro.tasks.prepare"], ["reports/fig2_cnn5_fmnist.py"], ["reports/index.py"],
                  ["reports/ground_truth.py"]]


@pytest.mark.slow
@pytest.mark.parametrize("cli", OVERRIDE_TOOLS, ids=lambda c: c[-1])
def test_the_override_tools_complete_overrides_with_hydras_completion(cli):
    code, script = run([sys.executable, *cli, "-sc", "install=bash"], ROOT, 120)
    assert code == 0 and "hydra_bash_completion" in script, script[-500:]
    env = {**os.environ, "COMP_LINE": f"python {cli[-1]} report.crit"}
    out = subprocess.run([sys.executable, *cli, "-sc", "query=bash"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and "report.criterion=" in out.stdout.split(), out.stdout + out.stderr
