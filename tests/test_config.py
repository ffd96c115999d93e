"""Every config composes; Table 1's grids are exact; impossible values and unknown names fail with the fix named."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from surge_repro.config import CONF_DIR, ConfigError, build, validate
from surge_repro.launch.callbacks import sweep_size

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ROOT = Path(__file__).resolve().parent.parent


def sweep_values(cfg, key):
    return [float(v) for v in str(cfg.hydra.sweeper.params[key]).split(",")]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_validates_and_builds(make_cfg, experiment):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}", "batch=4", "optimizer.lr=1e-3"],
                      return_hydra_config=True)
    validate(cfg)
    assert cfg.experiment_name == experiment
    assert sweep_size(cfg) >= 1 and "seed" in cfg.hydra.sweeper.params
    text = (CONF_DIR / "experiment" / f"{experiment}.yaml").read_text()
    for field in ("command:", "points:", "cost:", "outcome:"):  # the header every experiment file carries
        assert field in text, f"{experiment}.yaml header lacks {field}"
    model = build(cfg.model)
    optimizer = build(cfg.optimizer)(model.parameters())
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_table1_cnn_grids_are_kept_and_extended_upward():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        b = compose("config", overrides=["+experiment=fig2b_cnn5_fmnist_small_bs"], return_hydra_config=True)
        c = compose("config", overrides=["+experiment=fig2c_cnn5_fmnist_large_bs"], return_hydra_config=True)
        few = compose("config", overrides=["+experiment=fig2b_cnn5_fmnist_small_bs", "rounds=3"],
                      return_hydra_config=True)
    table1 = [k * 1e-4 for k in range(1, 11)]  # then upward, where the fewest-steps optima lie (issue 14)
    upward = [1.5e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3, 1.2e-2, 1.6e-2]
    assert sweep_values(b, "optimizer.lr") == pytest.approx(table1 + upward)
    assert sweep_values(c, "optimizer.lr") == pytest.approx(table1 + [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2])
    assert sweep_values(b, "batch") == list(range(1, 13))
    assert sweep_values(c, "batch") == list(range(64, 1165, 100))
    assert b.optimizer.betas == [0.9, 0.999] and b.protocol.k == 10 and b.model.name == "cnn5"
    assert sweep_size(b) == 12 * 18 * 100 and sweep_size(c) == 12 * 15 * 100  # the paper's 100 rounds are seeds
    assert sweep_size(few) == 12 * 18 * 3



def test_fig5_is_table1s_moe_lattice_in_whole_sequences_and_the_small_grid_is_its_own_experiment():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        paper = compose("config", overrides=["+experiment=fig5_moe_redpajama"], return_hydra_config=True)
        small = compose("config", overrides=["+experiment=fig5_moe_redpajama_small"], return_hydra_config=True)
    seq = paper.task.seq_len
    assert seq == 512 and paper.task.batch_unit == "tokens" and paper.task.name == "redpajama"
    # Table 1: LR 2e-6 .. 6e-5 step 2e-6; B 192k + 1.2M k tokens (k, M = 1e3, 1e6) up to 12M: 10 values, each the
    # nearest whole number of sequences
    assert sweep_values(paper, "optimizer.lr") == pytest.approx([2e-6 * k for k in range(1, 31)], rel=1e-9)
    batches = sweep_values(paper, "batch")
    paper_b = [192_000 + 1_200_000 * k for k in range(10)]
    assert len(batches) == 10 and paper_b[-1] < 12_000_000 < paper_b[-1] + 1_200_000
    assert all(b % seq == 0 and abs(b - t) <= seq / 2 for b, t in zip(batches, paper_b))
    assert paper.rounds == 10 and sweep_size(paper) == 30 * 10 * 10 and paper.protocol.k == 300
    assert list(paper.optimizer.betas) == [0.9, 0.999] and paper.model.name == "moe_shared"
    # the counters count tokens: the EMA spans a step of the largest B, the closest probes one of the smallest
    assert paper.protocol.ema_examples >= batches[-1] and paper.protocol.probe.min_gap <= batches[0]
    assert paper.protocol.probe.size % seq == 0 and paper.protocol.patience >= 20 * batches[-1]
    assert paper.protocol.max_examples >= batches[-1] * (paper.protocol.k + 20)  # K steps at the largest B fit
    # the suite's scaled-down grid, kept under its own name (and store directory)
    assert small.experiment_name == "fig5_moe_redpajama_small" != paper.experiment_name
    assert sweep_values(small, "optimizer.lr") == pytest.approx([1.25e-4 * 2**k for k in range(6)], rel=1e-9)
    assert sweep_values(small, "batch") == [8192 * 2**k for k in range(6)] and sweep_size(small) == 6 * 6 * 3
    assert small.task.name == paper.task.name and small.model.name == paper.model.name and small.protocol.k == 300
    for name in ("fig5_moe_redpajama", "fig5_moe_redpajama_small"):  # the labels name the data the task loads
        text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert "RedPajama-Data-1T-Sample" in text and "192k to 11M" not in text

def test_cnn5_is_the_documented_size(make_cfg):
    model = build(make_cfg("task=fashion_mnist", "model=cnn5", tiny=False).model)
    assert sum(p.numel() for p in model.parameters()) == 61_706  # as conf/model/cnn5.yaml says


@pytest.mark.parametrize("override,message", [
    ("batch=0", "batch must be an integer > 0, got 0. Fix: batch=8"),
    ("batch=-3", "batch must be an integer > 0"),
    ("batch=2.5", "batch must be an integer > 0, got 2.5"),
    ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0. Fix: optimizer.lr=3e-4"),
    ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0"),
    ("protocol.k=0", "protocol.k must be an integer > 0, got 0. Fix: protocol.k=10"),
    ("protocol.targets=[]", "protocol.targets must be a non-empty list"),
    ("protocol.targets=[1.0,-2]", "protocol.targets must be a non-empty list of positive"),
    ("protocol.diverge_factor=0.5", "diverge_factor must be > 1"),
    ("experiment_name=a/b", "experiment_name must be a plain name"),
    ("device=gpu", "device must be auto, cpu, cuda or cuda:N"),
])
def test_impossible_values_name_the_fix(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        validate(make_cfg(override))


def test_unset_batch_size_says_how_to_set_it(make_cfg):
    with pytest.raises(ConfigError, match=r"batch is not set: add batch=<value>"):
        validate(make_cfg(tiny=False))


def test_unknown_keys_and_names_are_refused(make_cfg):
    with pytest.raises(ConfigCompositionException, match=r"(?s)model/resnet9000.*Available options in .model.:\s+cnn5"):
        make_cfg("model=resnet9000")
    with pytest.raises((ConfigCompositionException, ConfigAttributeError, ConfigKeyError), match="btach"):
        make_cfg("btach.size=3")


def run_py(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_run_py_refuses_bad_input_before_training(tmp_path):
    bad = run_py("task=synthetic_images", "model=tiny_mlp", "batch=0", "optimizer.lr=1e-3",
                 f"paths.store={tmp_path}")
    assert bad.returncode != 0 and "batch must be an integer > 0, got 0. Fix: batch=8" in bad.stderr
    unknown = run_py("optimizer.lrr=1", f"paths.store={tmp_path}")
    assert unknown.returncode != 0 and "Key 'lrr' is not in struct" in unknown.stderr
    missing = run_py("batch=4", "optimizer.lr=1e-3", f"paths.data={tmp_path}/nodata",
                     f"paths.store={tmp_path}")
    assert missing.returncode != 0
    assert f"python -m surge_repro.tasks.prepare task=fashion_mnist paths.data={tmp_path}/nodata" in missing.stderr
    assert not (tmp_path / "manual").exists()  # nothing written to the store


@pytest.mark.slow
def test_cfg_job_prints_the_resolved_point():
    out = run_py("--cfg", "job", "batch=8", "optimizer.lr=3e-4")
    assert out.returncode == 0
    assert "\nbatch: 8\n" in out.stdout and "lr: 0.0003" in out.stdout and "betas:" in out.stdout
