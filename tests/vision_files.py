"""Small datasets written in the real on-disk formats, for tests: CIFAR-10/100's python pickles (the keys, meta files
and folder names of the official archives) and Tiny-ImageNet's JPEG tree (wnids.txt, words.txt, per-class boxes,
val/val_annotations.txt). The loaders under test read them through torchvision and PIL exactly as the real data."""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# per-channel pixel ranges that differ, so that a per-channel normalisation is told apart from a global one
CHANNEL_RANGES = ((0, 100), (100, 200), (50, 250))


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """n x 3 x 32 x 32 uint8, each channel in its own range."""
    return np.stack([rng.integers(lo, hi, (n, 32, 32)) for lo, hi in CHANNEL_RANGES], axis=1).astype(np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles (Python 2 cPickle)


def write_cifar(root: Path, num_classes: int = 10, per_file: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (``cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta) or CIFAR-100
    (``cifar-100-python``: train, test, meta) under ``root``, with ``per_file`` images per training batch file.
    Returns the training images (N x 3 x 32 x 32, in file order) and labels."""
    rng = np.random.default_rng(seed)
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        train_files, test_file, label_key = [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"
    else:
        folder = root / "cifar-100-python"
        train_files, test_file, label_key = ["train"], "test", "fine_labels"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in train_files + [test_file]:
        n = per_file if name != "train" else 5 * per_file
        x, y = _images(rng, n), rng.integers(0, num_classes, n)
        entry = {"batch_label": f"{name} batch", "data": x.reshape(n, 3072), label_key: y.tolist(),
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        if num_classes == 100:
            entry["coarse_labels"] = (y // 5).tolist()
        _dump(folder / name, entry)
        if name != test_file:
            images.append(x)
            labels.append(y)
    if num_classes == 10:
        _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                        "num_cases_per_batch": per_file, "num_vis": 3072})
    else:
        _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return np.concatenate(images), np.concatenate(labels)


def cifar_archive(root: Path, target: Path, num_classes: int = 10) -> Path:
    """The official archive's layout (one top folder in a .tar.gz) of the CIFAR files under ``root``."""
    folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    with tarfile.open(target, "w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    return target


TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
GREY = (1, 3)  # (class, k) of the one greyscale JPEG, as Tiny-ImageNet has a few hundred


def tiny_color(label: int, k: int) -> tuple[int, int, int]:
    """The flat colour of training image k of class ``label`` (flat colours survive JPEG almost exactly)."""
    if (label, k) == GREY:
        return 128, 128, 128
    return 20 + 70 * label, 230 - 15 * k, 40 + 13 * k


def write_tiny_imagenet(root: Path, per_class: int = 12, wnids: tuple[str, ...] = TINY_WNIDS) -> Path:
    """The official tree under ``root/tiny-imagenet-200``; ``per_class`` >= 11 puts image 10 after image 9 only in
    numeric order. Returns the folder."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    words = [f"{w}\tclass {i}, thing {i}" for i, w in enumerate(wnids)] + ["n00001740\tentity"]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    for label, wnid in enumerate(wnids):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for k in range(per_class):
            name = f"{wnid}_{k}.JPEG"
            if (label, k) == GREY:
                Image.new("L", (64, 64), 128).save(images / name, "JPEG", quality=95)
            else:
                Image.new("RGB", (64, 64), tiny_color(label, k)).save(images / name, "JPEG", quality=95)
            boxes.append(f"{name}\t{k}\t{k}\t{40 + k}\t{50 + k}")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    annotations = []
    for i, wnid in enumerate(wnids):
        Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(base / "val" / "images" / f"val_{i}.JPEG", "JPEG")
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return base


def tiny_expected(per_class: int = 12, wnids: tuple[str, ...] = TINY_WNIDS) -> tuple[np.ndarray, np.ndarray]:
    """The training images the loader should return (N x 3, one flat colour each) and their labels, in order."""
    pairs = [(label, k) for label in range(len(wnids)) for k in range(per_class)]
    return np.array([tiny_color(*p) for p in pairs]), np.array([label for label, _ in pairs])


def tiny_archive(base: Path, target: Path) -> Path:
    """The official archive's layout: tiny-imagenet-200/... in a zip."""
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(base.rglob("*")):
            zf.write(path, Path("tiny-imagenet-200") / path.relative_to(base))
    return target
