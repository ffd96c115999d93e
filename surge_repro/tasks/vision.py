"""Image classification tasks: Fashion-MNIST (the paper's CNN workload) and a synthetic sibling for tests.

Builders read local files only and never download: ``python -m surge_repro.tasks.prepare task=<name>`` fetches data.
Each builder takes its dimensions from the task config and checks them against the data, so a config that promises
the model other dimensions than the data has fails before training.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from surge_repro.tasks import DataError, TensorTask

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _prepare_hint(root: Path) -> str:
    return f"Run: python -m surge_repro.tasks.prepare task=fashion_mnist paths.data={root}"


@functools.lru_cache(maxsize=2)
def _fashion_mnist_train(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60,000 training images as N x 1 x 28 x 28 floats (zero mean, unit variance overall) and their labels.

    Cached: a multirun's points share the process (Hydra's basic launcher) and load the files once.
    """
    from torchvision import datasets  # torchvision reads the idx files; importing it costs a second, so only here

    raw = Path(root) / "FashionMNIST" / "raw"
    missing = [f for f in FASHION_MNIST_FILES[:2] if not (raw / f).is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST is missing from {raw} ({', '.join(missing)}). {_prepare_hint(Path(root))}")
    try:
        ds = datasets.FashionMNIST(root, train=True, download=False)
        images, labels = ds.data, ds.targets
    except Exception as err:  # torchvision raises assorted errors on truncated or foreign files
        raise DataError(f"Fashion-MNIST files in {raw} are unreadable ({type(err).__name__}: {err}). "
                        f"{_prepare_hint(Path(root))} force=true") from err
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1] or int(labels.max()) > 9:
        raise DataError(f"Fashion-MNIST in {raw} has images {tuple(images.shape)} and labels {tuple(labels.shape)}, "
                        f"expected (60000, 28, 28) and (60000,). {_prepare_hint(Path(root))} force=true")
    x = images.float().div_(255.0)
    x = (x - x.mean()) / x.std()
    return x.unsqueeze(1).contiguous(), labels.long()


def _check_dims(name: str, inputs: torch.Tensor, labels: torch.Tensor, in_chans: int, img_size: int,
                num_classes: int) -> None:
    got = (inputs.shape[1], inputs.shape[2], int(labels.max()) + 1)
    if got[0] != in_chans or got[1] != img_size or got[2] > num_classes:
        raise ValueError(f"task {name}: config says in_chans={in_chans}, img_size={img_size}, "
                         f"num_classes={num_classes}; the data has {got[0]} channels, {got[1]} pixels, "
                         f"{got[2]} classes")


def _check_unit(name: str, batch_unit: str) -> None:
    if batch_unit != "examples":
        raise ValueError(f"task {name} counts batches in examples (images), not {batch_unit}. "
                         f"Fix: task.batch_unit=examples")


def fashion_mnist(*, root: str, name: str = "fashion_mnist", in_chans: int = 1, img_size: int = 28,
                  num_classes: int = 10, batch_unit: str = "examples") -> TensorTask:
    _check_unit(name, batch_unit)
    inputs, labels = _fashion_mnist_train(str(Path(root).expanduser().resolve()))
    _check_dims(name, inputs, labels, in_chans, img_size, num_classes)
    return TensorTask(name, inputs, labels)


def prepare_fashion_mnist(root: str, force: bool = False,
                          debian: str | Path = "/usr/share/datasets/fashion-mnist") -> str:
    """Fill ``root/FashionMNIST/raw`` from Debian's dataset-fashion-mnist package if installed, else by torchvision's
    download. Returns what it did. Writes into a temporary folder first, so a failure leaves no half-written files."""
    import gzip
    import shutil
    import tempfile

    root_path = Path(root).expanduser().resolve()
    raw = root_path / "FashionMNIST" / "raw"
    if not force and all((raw / f).is_file() for f in FASHION_MNIST_FILES):
        _fashion_mnist_train.cache_clear()
        fashion_mnist(root=str(root_path))  # reads and checks them
        return f"Fashion-MNIST already in {raw}"
    raw.parent.mkdir(parents=True, exist_ok=True)
    debian = Path(debian)
    with tempfile.TemporaryDirectory(dir=raw.parent) as tmp:
        if all((debian / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES):
            for f in FASHION_MNIST_FILES:
                with gzip.open(debian / f"{f}.gz") as src, open(Path(tmp) / f, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            how = f"unpacked from Debian's dataset-fashion-mnist ({debian})"
        else:
            from torchvision import datasets

            try:
                for train in (True, False):
                    datasets.FashionMNIST(tmp, train=train, download=True)
            except Exception as err:
                raise DataError(
                    f"could not download Fashion-MNIST ({type(err).__name__}: {err}). Without network, install "
                    f"Debian's copy (apt-get install dataset-fashion-mnist) and run this again, or put the four idx "
                    f"files ({', '.join(FASHION_MNIST_FILES)}) into {raw}.") from err
            for f in FASHION_MNIST_FILES:
                shutil.move(str(Path(tmp) / "FashionMNIST" / "raw" / f), Path(tmp) / f)
            how = "downloaded by torchvision"
        raw.mkdir(exist_ok=True)
        for f in FASHION_MNIST_FILES:
            (Path(tmp) / f).replace(raw / f)
    _fashion_mnist_train.cache_clear()
    fashion_mnist(root=str(root_path))
    return f"Fashion-MNIST {how} into {raw}"


def synthetic_images(*, name: str = "synthetic_images", size: int = 2048, in_chans: int = 1, img_size: int = 8,
                     num_classes: int = 4, data_seed: int = 0, batch_unit: str = "examples") -> TensorTask:
    """Gaussian images labelled by a fixed random linear teacher: learnable, instant, no files. For tests."""
    _check_unit(name, batch_unit)
    gen = torch.Generator().manual_seed(data_seed)
    inputs = torch.randn(size, in_chans, img_size, img_size, generator=gen)
    teacher = torch.randn(in_chans * img_size * img_size, num_classes, generator=gen)
    labels = (inputs.flatten(1) @ teacher).argmax(1)
    return TensorTask(name, inputs, labels)
