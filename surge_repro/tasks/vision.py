"""Image classification tasks: Fashion-MNIST (the paper's CNN workload), CIFAR-10/100 (the suite's ViT workload),
Tiny-ImageNet (the paper's ResNet-18 workload) and a synthetic sibling for tests; and their prepare steps.

Builders read local files only and never download: ``python -m surge_repro.tasks.prepare task=<name>`` fetches data.
Each builder takes its dimensions from the task config and checks them against the data, so a config that promises
the model other dimensions than the data has fails before training. CIFAR and Tiny-ImageNet stay uint8 in memory and
are normalised per channel (the training set's own mean and std) as batches are taken (``TensorTask``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from surge_repro.tasks import DataError, TensorTask, fingerprint
from surge_repro.tasks.fingerprint import DataFiles

log = logging.getLogger("surge_repro")

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _prepare_hint(root: Path, task: str = "fashion_mnist") -> str:
    return f"Run: python -m surge_repro.tasks.prepare task={task} paths.data={root}"


@functools.lru_cache(maxsize=2)
def _fashion_mnist_train(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images as N x 1 x 28 x 28 floats (zero mean, unit variance overall) and their labels. The
    normalisation's mean and std come from exact integer sums of the pixels (``_pixel_stats``), so the floats a point
    trains on are the same bytes whatever the thread count (a float reduction's order depends on it).

    Cached: a multirun's points share the process (Hydra's basic launcher) and load the files once.
    """
    from torchvision import (
        datasets,  # torchvision reads the idx files; importing it costs a second, so only here
    )

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
    mean, std = _pixel_stats(images.unsqueeze(1))  # one channel: zero mean, unit variance overall
    x = (images.float().div_(255.0) - float(mean[0]) / 255.0) / (float(std[0]) / 255.0)
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
                  num_classes: int = 10, size: int | None = 60_000, batch_unit: str = "examples") -> TensorTask:
    """Fashion-MNIST's training set; ``size``: the training examples the task expects (the release's 60,000; None
    accepts any count)."""
    _check_unit(name, batch_unit)
    root_path = Path(root).expanduser().resolve()
    inputs, labels = _fashion_mnist_train(str(root_path))
    _check_dims(name, inputs, labels, in_chans, img_size, num_classes)
    _check_size(name, len(labels), size, root_path / "FashionMNIST" / "raw", _prepare_hint(root_path))
    return TensorTask(name, inputs, labels)


def _check_size(name: str, found: int, size: int | None, where: Path, hint: str) -> None:
    """A dataset whose count of training examples is not the task's is another dataset (a subset, a foreign file
    under the release's name): refused before it can train points under the task's name."""
    if size is not None and found != size:
        raise DataError(f"task {name} expects {size:,} training examples; the data in {where} have {found:,}. "
                        f"{hint} force=true (or, for a knowingly different set, task.size={found})")


def data_files(builder: str, task) -> DataFiles | None:
    """The files each builder of this module trains on (``fingerprint.locate``); None for generated data."""
    root = Path(str(task.root)).expanduser().resolve() if "root" in task else None
    if builder == "fashion_mnist":
        return DataFiles(root / "FashionMNIST" / "raw", list(FASHION_MNIST_FILES[:2]), "fashion_mnist")
    if builder == "cifar":
        cls = _cifar_class(int(task.num_classes), bool(task.get("verify_md5", True)))
        return DataFiles(root / cls.base_folder, [f for f, _ in cls.train_list], _cifar_names(int(task.num_classes))[1])
    if builder == "tiny_imagenet":  # the decoded cache is what trains; its record sits beside it
        return DataFiles(root, [TINY_CACHE], "tiny_imagenet", record=f"{TINY_CACHE}.fingerprint.json")
    return None


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
        fashion_mnist(root=str(root_path), size=None)  # reads and checks them
        fingerprint.read(raw, list(FASHION_MNIST_FILES[:2]))  # recorded once; hashed again only if they changed
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
    fashion_mnist(root=str(root_path), size=None)
    fingerprint.write(raw, list(FASHION_MNIST_FILES[:2]))
    return f"Fashion-MNIST {how} into {raw}"


def synthetic_images(*, name: str = "synthetic_images", size: int = 2048, in_chans: int = 1, img_size: int = 8,
                     num_classes: int = 4, data_seed: int = 0, epoch_size: int | None = None,
                     batch_unit: str = "examples") -> TensorTask:
    """Gaussian images labelled by a fixed random linear teacher: learnable, instant, no files. For tests
    (``+task.epoch_size=N``: epochs of a random N of them, as Tiny-ImageNet's)."""
    _check_unit(name, batch_unit)
    gen = torch.Generator().manual_seed(data_seed)
    inputs = torch.randn(size, in_chans, img_size, img_size, generator=gen)
    teacher = torch.randn(in_chans * img_size * img_size, num_classes, generator=gen)
    labels = (inputs.flatten(1) @ teacher).argmax(1)
    return TensorTask(name, inputs, labels, epoch_size=epoch_size)


def _pixel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (population) of N x C x H x W uint8 pixels, from exact integer sums taken a chunk at a
    time (a float copy of all of Tiny-ImageNet would take 5 GB). Integer sums do not depend on the order of the
    additions, so the statistics, and every normalised float, are the same bytes whatever the thread count."""
    total = torch.zeros(images.shape[1], dtype=torch.int64)
    square = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.int64)
        total += x.sum((0, 2, 3))
        square += x.square().sum((0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = [t / count for t in total.tolist()]  # Python floats from exact integers: the same on every machine
    var = [max(0, q * count - t * t) / count ** 2 for q, t in zip(square.tolist(), total.tolist())]
    return torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64).sqrt()


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of natural images, as float32 (``TensorTask`` normalises with them)."""
    mean, std = _pixel_stats(images)
    if not bool((std > 0).all()):
        raise DataError(f"a channel of the {len(images)} training images is constant (std {std.tolist()}): these are "
                        f"not natural images")
    return mean.float(), std.float()


def _cifar_class(num_classes: int, verify_md5: bool = True) -> type:
    """torchvision's CIFAR10 (num_classes 10) or CIFAR100 (100, its fine labels). Without ``verify_md5``, a subclass
    whose expected checksums are None, which torchvision's check_integrity reads as "the file exists": for files that
    knowingly are not the official release (generated test files, a re-packed copy)."""
    from torchvision import datasets

    if num_classes not in (10, 100):
        raise ValueError(f"CIFAR comes with 10 or 100 classes, got num_classes={num_classes}. "
                         f"Fix: task=cifar10 or task=cifar100")
    cls = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
    if verify_md5:
        return cls
    return type(cls.__name__, (cls,), {"train_list": [[f, None] for f, _ in cls.train_list],
                                       "test_list": [[f, None] for f, _ in cls.test_list],
                                       "meta": {**cls.meta, "md5": None}})


def _cifar_names(num_classes: int) -> tuple[str, str]:
    """The dataset's name in messages and its prepare task."""
    return ("CIFAR-10", "cifar10") if num_classes == 10 else ("CIFAR-100", "cifar100")


def _cifar_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


@functools.lru_cache(maxsize=2)
def _cifar_train(root: str, num_classes: int, verify_md5: bool) -> tuple[torch.Tensor, ...]:
    """The 50,000 training images as N x 3 x 32 x 32 uint8, their labels, and the per-channel mean and std."""
    cls = _cifar_class(num_classes, verify_md5)
    label, task = _cifar_names(num_classes)
    folder = Path(root) / cls.base_folder
    hint = _prepare_hint(Path(root), task)
    missing = [f for f in _cifar_files(cls) if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{label} is missing from {folder} ({', '.join(missing)}). {hint}")
    try:
        ds = cls(root, train=True, download=False)  # checks the md5 of every file first (unless verify_md5=false)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # torchvision hands out N x H x W x C
        labels = torch.tensor(ds.targets, dtype=torch.long)
    except Exception as err:  # torchvision raises assorted errors on truncated, foreign or altered files
        raise DataError(f"{label} files in {folder} are unreadable or not the official release ({type(err).__name__}: "
                        f"{err}). {hint} force=true (task.verify_md5=false reads files that knowingly differ from "
                        f"the release)") from err
    if images.shape[1:] != (3, 32, 32) or labels.shape != images.shape[:1] or not bool(
            ((labels >= 0) & (labels < num_classes)).all()):
        raise DataError(f"{label} in {folder} has images {tuple(images.shape)} and labels {tuple(labels.shape)} in "
                        f"{int(labels.min())}..{int(labels.max())}, expected N x 3 x 32 x 32 and N labels in "
                        f"0..{num_classes - 1}. {hint} force=true")
    return (images, labels, *_channel_stats(images))


def cifar(*, root: str, name: str = "cifar10", in_chans: int = 3, img_size: int = 32, num_classes: int = 10,
          verify_md5: bool = True, epoch_size: int | None = None, size: int | None = 50_000,
          batch_unit: str = "examples") -> TensorTask:
    """CIFAR-10 (num_classes 10) or CIFAR-100 (num_classes 100, the fine labels): the training set, uint8, normalised
    per channel as batches are taken. ``size``: the training examples the task expects (None: any)."""
    _check_unit(name, batch_unit)
    root_path = Path(root).expanduser().resolve()
    images, labels, mean, std = _cifar_train(str(root_path), num_classes, bool(verify_md5))
    _check_dims(name, images, labels, in_chans, img_size, num_classes)
    _check_size(name, len(labels), size, root_path / _cifar_class(num_classes, verify_md5).base_folder,
                _prepare_hint(root_path, _cifar_names(num_classes)[1]))
    return TensorTask(name, images, labels, mean=mean, std=std, epoch_size=epoch_size)


def prepare_cifar(root: str, force: bool = False, num_classes: int = 10, verify_md5: bool = True) -> str:
    """Fill ``root/cifar-10-batches-py`` (or ``cifar-100-python``) by torchvision's download, or from the official
    archive if one lies in ``root`` (fetched by hand where there is no network). Works in a temporary folder and
    checks that the result loads before it replaces anything, so a failure leaves no half-written files."""
    from torchvision.datasets.utils import extract_archive

    cls = _cifar_class(num_classes, verify_md5)
    label, task = _cifar_names(num_classes)
    root_path = Path(root).expanduser().resolve()
    folder = root_path / cls.base_folder
    if not force and all((folder / f).is_file() for f in _cifar_files(cls)):
        _cifar_train.cache_clear()
        cifar(root=str(root_path), name=task, num_classes=num_classes, verify_md5=verify_md5, size=None)  # checks
        fingerprint.read(folder, [f for f, _ in cls.train_list])  # recorded once; hashed again only if changed
        return f"{label} already in {folder}"
    root_path.mkdir(parents=True, exist_ok=True)
    archive = root_path / cls.filename
    with tempfile.TemporaryDirectory(dir=root_path) as tmp:
        if archive.is_file():
            source, how = archive, f"extracted from {archive}"
            try:
                extract_archive(str(archive), tmp)
            except Exception as err:
                raise DataError(f"{archive} is not a readable archive ({type(err).__name__}: {err}). Delete it and "
                                f"run this again") from err
        else:
            source, how = cls.url, "downloaded by torchvision"
            try:
                cls(tmp, train=True, download=True)  # fetches the archive, checks its md5, extracts it
            except Exception as err:
                raise DataError(f"could not download {label} ({type(err).__name__}: {err}). Without network, fetch "
                                f"{cls.url} elsewhere, put it at {archive} and run this again.") from err
        try:
            cifar(root=tmp, name=task, num_classes=num_classes, verify_md5=verify_md5, size=None)
        except DataError as err:
            again = f"Delete {archive} and run this again" if source == archive else "Run this again"
            raise DataError(f"{label} from {source} does not load ({err.__cause__ or err}). {again}") from err
        finally:
            _cifar_train.cache_clear()
        if folder.exists():
            shutil.rmtree(folder)
        (Path(tmp) / cls.base_folder).replace(folder)
    cifar(root=str(root_path), name=task, num_classes=num_classes, verify_md5=verify_md5, size=None)
    fingerprint.write(folder, [f for f, _ in cls.train_list])
    return f"{label} {how} into {folder}"


def prepare_cifar10(root: str, force: bool = False, **kwargs) -> str:
    return prepare_cifar(root, force, num_classes=10, **kwargs)


def prepare_cifar100(root: str, force: bool = False, **kwargs) -> str:
    return prepare_cifar(root, force, num_classes=100, **kwargs)


# Tiny-ImageNet: the official archive's JPEG tree, decoded once into a uint8 tensor file ----------------------------

TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the archive at TINY_URL
TINY_CACHE = "tiny-imagenet-200-train.pt"     # in paths.data, beside the folder: 1.2 GB for the 100k images
TINY_CACHE_VERSION = 1


def _tiny_wnids(base: Path, hint: str) -> list[str]:
    path = base / "wnids.txt"
    if not path.is_file():
        raise DataError(f"Tiny-ImageNet is missing from {base} (no wnids.txt). {hint}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _image_number(path: Path) -> tuple[int, str]:
    """Sort key of ``<wnid>_<k>.JPEG``: by k as a number."""
    tail = path.stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1), path.name


def _tiny_decode(base: Path, missing: str, corrupt: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The training images ``train/<wnid>/images/*.JPEG`` as N x 3 x 64 x 64 uint8, labelled by the line of their
    wnid in wnids.txt, and the wnids. Decoded with PIL (torchvision's decoders need its C++ extension), in threads.
    ``missing`` and ``corrupt``: the fix that errors name, when files are missing and when they are unreadable."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    wnids = _tiny_wnids(base, missing)
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        found = sorted((base / "train" / wnid / "images").glob("*.JPEG"), key=_image_number)
        if not found:
            raise DataError(f"Tiny-ImageNet class {wnid} has no images in {base / 'train' / wnid / 'images'}. "
                            f"{corrupt}")
        files += found
        labels += [label] * len(found)
    images = torch.empty(len(files), 3, 64, 64, dtype=torch.uint8)

    def decode(i: int) -> str | None:
        try:
            with Image.open(files[i]) as image:
                pixels = np.array(image.convert("RGB"))  # some of the images are greyscale
        except Exception as err:  # PIL raises OSError on truncated files, UnidentifiedImageError on foreign ones
            return f"{files[i]} is unreadable ({type(err).__name__}: {err})"
        if pixels.shape != (64, 64, 3):
            return f"{files[i]} is {pixels.shape[1]}x{pixels.shape[0]} pixels, not 64x64"
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
        return None

    log.info("decoding %d Tiny-ImageNet training images from %s", len(files), base / "train")
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # PIL releases the GIL while it decodes
        problems = [p for p in pool.map(decode, range(len(files))) if p]
    if problems:
        raise DataError(f"{len(problems)} Tiny-ImageNet image(s) unreadable, e.g. {problems[0]}. {corrupt}")
    return images, torch.tensor(labels, dtype=torch.long), wnids


def _tiny_write_cache(root: Path, missing: str, corrupt: str) -> Path:
    """Decode the JPEG tree under ``root`` once into ``root/TINY_CACHE`` (written to a temporary name, then renamed:
    a reader never sees half a file)."""
    images, labels, wnids = _tiny_decode(root / TINY_FOLDER, missing, corrupt)
    mean, std = _channel_stats(images)
    cache = root / TINY_CACHE
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    torch.save({"version": TINY_CACHE_VERSION, "images": images, "labels": labels, "wnids": wnids, "mean": mean,
                "std": std}, tmp)
    os.replace(tmp, cache)
    log.info("Tiny-ImageNet: %d training images cached in %s", len(labels), cache)
    return cache


@functools.lru_cache(maxsize=1)
def _tiny_imagenet_train(root: str) -> tuple[torch.Tensor, ...]:
    """The training images (uint8, memory-mapped from the cache), labels, and per-channel mean and std. Writes the
    cache from the JPEG tree first if it is missing (once; minutes for the 100k images)."""
    root_path = Path(root)
    cache = root_path / TINY_CACHE
    hint = _prepare_hint(root_path, "tiny_imagenet")
    if not cache.is_file():
        _tiny_write_cache(root_path, hint, f"{hint} force=true")
    try:
        blob = torch.load(cache, mmap=True, weights_only=True)
        images, labels, wnids, mean, std = (blob[k] for k in ("images", "labels", "wnids", "mean", "std"))
        fits = (blob["version"] == TINY_CACHE_VERSION and images.dtype == torch.uint8
                and images.shape[1:] == (3, 64, 64) and labels.shape == images.shape[:1])
    except Exception as err:
        raise DataError(f"the Tiny-ImageNet cache {cache} is unreadable ({type(err).__name__}: {err}). "
                        f"{hint} force=true") from err
    if not fits:
        raise DataError(f"the Tiny-ImageNet cache {cache} is not in this version's format. {hint} force=true")
    if (root_path / TINY_FOLDER / "wnids.txt").is_file() and _tiny_wnids(root_path / TINY_FOLDER, hint) != wnids:
        raise DataError(f"the Tiny-ImageNet cache {cache} holds other classes than {TINY_FOLDER}/wnids.txt. "
                        f"{hint} force=true")
    return images, labels, mean, std


def tiny_imagenet(*, root: str, name: str = "tiny_imagenet", in_chans: int = 3, img_size: int = 64,
                  num_classes: int = 200, epoch_size: int | None = 10_000, size: int | None = 100_000,
                  batch_unit: str = "examples") -> TensorTask:
    """Tiny-ImageNet's 100,000 training images (200 classes of 500, 64x64), uint8, normalised per channel as batches
    are taken; each epoch a fresh random ``epoch_size`` of them (the paper: "random 10k samples"). ``size``: the
    training examples the task expects (None: any)."""
    _check_unit(name, batch_unit)
    root_path = Path(root).expanduser().resolve()
    images, labels, mean, std = _tiny_imagenet_train(str(root_path))
    _check_dims(name, images, labels, in_chans, img_size, num_classes)
    _check_size(name, len(labels), size, root_path / TINY_CACHE, _prepare_hint(root_path, "tiny_imagenet"))
    return TensorTask(name, images, labels, mean=mean, std=std, epoch_size=epoch_size)


def prepare_tiny_imagenet(root: str, force: bool = False, url: str = TINY_URL, md5: str = TINY_MD5) -> str:
    """Download the official archive (or use ``root/tiny-imagenet-200.zip`` if it is there), extract it into
    ``root/tiny-imagenet-200`` and decode the training images into ``root/TINY_CACHE``; all in a temporary folder
    first, checked before anything in ``root`` is replaced."""
    from torchvision.datasets.utils import download_url, extract_archive

    root_path = Path(root).expanduser().resolve()
    base, cache = root_path / TINY_FOLDER, root_path / TINY_CACHE
    if not force and (base / "wnids.txt").is_file():
        _tiny_imagenet_train.cache_clear()
        tiny_imagenet(root=str(root_path), epoch_size=None, size=None)  # reads the cache, writing it if missing
        fingerprint.read(root_path, [TINY_CACHE], f"{TINY_CACHE}.fingerprint.json")
        return f"Tiny-ImageNet already in {base} (training images cached in {cache})"
    root_path.mkdir(parents=True, exist_ok=True)
    archive = root_path / url.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(dir=root_path) as tmp:
        if archive.is_file():
            source, how = archive, f"extracted from {archive}"
        else:
            source, how = Path(tmp) / archive.name, f"downloaded from {url}"
            try:
                download_url(url, tmp, md5=md5)
            except Exception as err:
                raise DataError(f"could not download Tiny-ImageNet from {url} ({type(err).__name__}: {err}). Without "
                                f"network, fetch it elsewhere, put it at {archive} and run this again.") from err
        again = f"Delete {archive} and run this again" if source == archive else "Run this again"
        try:
            extract_archive(str(source), tmp)
        except Exception as err:
            raise DataError(f"{source} is not a readable archive ({type(err).__name__}: {err}). {again}") from err
        if not (Path(tmp) / TINY_FOLDER / "wnids.txt").is_file():
            raise DataError(f"{source} holds no {TINY_FOLDER}/wnids.txt: it is not the Tiny-ImageNet archive. {again}")
        _tiny_write_cache(Path(tmp), again, again)  # decodes and checks every training image before root is touched
        if base.exists():
            shutil.rmtree(base)
        (Path(tmp) / TINY_FOLDER).replace(base)
        (Path(tmp) / TINY_CACHE).replace(cache)
    _tiny_imagenet_train.cache_clear()
    tiny_imagenet(root=str(root_path), epoch_size=None, size=None)
    fingerprint.write(root_path, [TINY_CACHE], f"{TINY_CACHE}.fingerprint.json")
    return f"Tiny-ImageNet {how} into {base}; training images cached in {cache}"
