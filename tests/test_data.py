"""Fashion-MNIST through torchvision's real loader, on small files written in the real idx format; prepare."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from surge_repro.run import train
from surge_repro.tasks import DataError
from surge_repro.tasks.vision import (
    FASHION_MNIST_FILES,
    _fashion_mnist_train,
    fashion_mnist,
    prepare_fashion_mnist,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx layout: a big-endian magic (0x08 = unsigned byte, then the number of dimensions), the sizes, the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(raw_dir, n=600, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(100) % 10}
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (raw_dir / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw_dir / name).write_bytes(data)
    return arrays


@pytest.fixture(autouse=True)
def fresh_cache():
    _fashion_mnist_train.cache_clear()
    yield
    _fashion_mnist_train.cache_clear()


def test_loader_reads_idx_files_through_torchvision(tmp_path):
    arrays = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    task = fashion_mnist(root=str(tmp_path), size=600)
    assert task.inputs.shape == (600, 1, 28, 28) and task.inputs.dtype == torch.float32
    assert task.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert abs(float(task.inputs.mean())) < 1e-4 and float(task.inputs.std()) == pytest.approx(1.0, abs=1e-3)
    x, y = next(task.batches(32, seed=0))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)


def test_batches_are_exact_seeded_and_epoch_shuffled(tmp_path):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n=100)
    task = fashion_mnist(root=str(tmp_path), size=100)
    a, b, c = task.batches(30, seed=1), task.batches(30, seed=1), task.batches(30, seed=2)
    first = [next(a)[1] for _ in range(6)]
    assert all(len(y) == 30 for y in first)  # 3 batches per epoch of 100: the 10 left over are skipped
    assert all(torch.equal(y, next(b)[1]) for y in first)
    assert not torch.equal(first[0], next(c)[1])
    with pytest.raises(ValueError, match="exceeds the 100 training examples"):
        next(task.batches(101, seed=0))
    for start in (2, 3, 4):  # a resumed run goes on with the batch an uninterrupted one takes, across epochs too
        resumed = task.batches(30, seed=1, start=start)
        assert all(torch.equal(y, next(resumed)[1]) for y in first[start:])


def test_missing_and_corrupt_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="python -m surge_repro.tasks.prepare task=fashion_mnist paths.data="):
        fashion_mnist(root=str(tmp_path))
    raw = tmp_path / "FashionMNIST" / "raw"
    write_fashion_mnist(raw)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: 16 + 28 * 28 * 10])  # truncated mid-file
    with pytest.raises(DataError, match="unreadable.*force=true"):
        fashion_mnist(root=str(tmp_path))


def test_config_dims_must_match_the_data(tmp_path):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    with pytest.raises(ValueError, match="img_size=32"):
        fashion_mnist(root=str(tmp_path), img_size=32)


def test_prepare_unpacks_debians_copy_and_is_idempotent(tmp_path):
    debian = tmp_path / "debian"
    arrays = write_fashion_mnist(debian, gz=True)
    data = tmp_path / "data"
    assert "Debian" in prepare_fashion_mnist(str(data), debian=debian)
    for name in FASHION_MNIST_FILES:
        assert (data / "FashionMNIST" / "raw" / name).read_bytes() == idx_bytes(arrays[name])
    assert "already" in prepare_fashion_mnist(str(data), debian=debian)
    (data / "FashionMNIST" / "raw" / FASHION_MNIST_FILES[0]).write_bytes(b"garbage")
    with pytest.raises(DataError, match="force=true"):
        prepare_fashion_mnist(str(data), debian=debian)
    assert "Debian" in prepare_fashion_mnist(str(data), force=True, debian=debian)


def test_prepare_without_a_source_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(str(tmp_path / "data"), debian=tmp_path / "nowhere")
    assert not any((tmp_path / "data" / "FashionMNIST").glob("raw/*"))  # nothing half-written


def test_prepare_cli_runs_through_hydra_overrides(tmp_path):
    out = subprocess.run([sys.executable, "-m", "surge_repro.tasks.prepare", "task=synthetic_images"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "nothing to prepare" in out.stdout


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_a_real_point_on_the_full_fashion_mnist(tmp_path, make_cfg):
    if not DEBIAN.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's dataset-fashion-mnist: .ci/setup installs it")
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    prepare_fashion_mnist(str(tmp_path / "data"), debian=DEBIAN)
    cfg = make_cfg("task=fashion_mnist", "model=cnn5", "batch=64", "optimizer.lr=2e-3", "device=cpu",
                   "protocol.targets=[1.4,1.0]", f"paths.data={tmp_path / 'data'}", tiny=False)
    assert len(fashion_mnist(root=str(tmp_path / "data"))) == 60_000
    summary = train.run(cfg)
    assert summary["status"] == "done"
    high, low = summary["targets"]
    assert 0 < high["steps"] < low["steps"] < 500  # the CNN learns Fashion-MNIST in tens of steps at B = 64
    assert abs(summary["initial_loss"] - 2.30) < 0.1  # ln 10 at initialisation
