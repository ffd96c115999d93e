"""Tasks: the data a workload trains on, and its loss. The training loop sees only the ``Task`` protocol below.

Builders live in ``vision`` (Fashion-MNIST, CIFAR-10/100, Tiny-ImageNet, synthetic images), ``text`` (token
streams: Shakespeare, ELI5-Category, RedPajama) and ``quadratic`` (the noisy quadratic of the ground truth);
``prepare`` is the only code that downloads or converts data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Protocol, runtime_checkable

import torch
import torch.nn.functional as F


class DataError(RuntimeError):
    """Data missing or unreadable. The message names the command that fixes it."""


@runtime_checkable
class Task(Protocol):
    """What a task supplies to the training loop (``surge_repro.run.train``) and its step engines."""

    name: str
    batch_unit: str  # what ``batch`` counts: examples, sequences or tokens

    @property
    def labels(self) -> torch.Tensor:
        """The training labels (N x ...): where the data live, and how many examples there are."""

    def to(self, device: torch.device | str) -> "Task":
        """The task with its data on ``device``."""

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ValueError (naming the fix) for a batch size the data cannot serve."""

    def epoch_orders(self, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        """An endless sequence of random orders of the training set, one per epoch, drawn from ``seed``, from epoch
        ``start`` on: a point's data order is a function of its seed and its step."""

    def epoch_length(self, batch_size: int) -> int:
        """Batches per epoch (a batch never spans two epochs)."""

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The examples at ``index``, of any shape (a pack takes points x batch at once)."""

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, ...]:
        """One fixed batch of ``size`` training examples, drawn from ``seed``, on which the protocol measures loss."""

    def loss(self, model, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The mean training loss of ``batch`` under ``model`` (a scalar tensor)."""


@dataclass
class TensorTask:
    """Classification on tensors held in memory (on the CPU, or on the GPU after ``to``).

    ``inputs`` are either ready floats, or raw pixels (uint8: 4x less memory, which is what lets Tiny-ImageNet's 100k
    images sit on a GPU) with a per-channel ``mean`` and ``std`` in the same units, applied by ``take`` and ``probe``
    to the examples they hand out. ``epoch_size``: examples per epoch, each epoch a fresh random subset of the
    training set drawn without replacement (the paper's ResNet-18: "random 10k samples" of 100k); None: all of it.
    """

    name: str
    inputs: torch.Tensor  # N x C x H x W: float32 already normalised, or pixels that mean and std normalise
    labels: torch.Tensor  # N, int64
    batch_unit: str = "examples"
    mean: torch.Tensor | None = None  # C, in the units of inputs
    std: torch.Tensor | None = None   # C, in the units of inputs
    epoch_size: int | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"task {self.name}: give both mean and std, or neither")
        if self.mean is not None:  # shaped to broadcast over the trailing C x H x W of a batch of any leading shape
            self.mean = self.mean.to(torch.float32).reshape(-1, 1, 1)
            self.std = self.std.to(torch.float32).reshape(-1, 1, 1)
        if self.epoch_size is not None and not 0 < self.epoch_size <= len(self):
            raise ValueError(f"task {self.name}: epoch_size={self.epoch_size} must be in 1..{len(self)} (its training "
                             f"examples). Fix: task.epoch_size={len(self)} (or null for the whole set)")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "TensorTask":
        def move(t):
            return None if t is None else t.to(device)

        return replace(self, inputs=self.inputs.to(device), labels=self.labels.to(device), mean=move(self.mean),
                       std=move(self.std))

    def epoch_orders(self, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        """An endless sequence of random orders of the training set, one per epoch, drawn from ``seed``; from epoch
        ``start`` on (a resumed run draws the earlier ones again and drops them: the data position is a function
        of the seed and the step, so checkpoints need not store it). With ``epoch_size`` an epoch is the first
        ``epoch_size`` of a full permutation: a fresh random subset, without replacement, and the generator advances
        by one permutation per epoch either way, so resuming works the same."""
        gen = torch.Generator().manual_seed(seed)
        for _ in range(start):
            torch.randperm(len(self), generator=gen)
        size = self.epoch_size or len(self)
        while True:
            yield torch.randperm(len(self), generator=gen)[:size].to(self.labels.device)

    def epoch_length(self, batch_size: int) -> int:
        """Batches per epoch: a batch never spans two epochs, so the tail of an epoch shorter than a batch is
        skipped."""
        return (self.epoch_size or len(self)) // batch_size

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``index``, of any shape: a packed run takes points x batch at once."""
        inputs = self.inputs[index]
        if self.mean is not None:
            inputs = (inputs.to(torch.float32) - self.mean) / self.std
        return inputs, self.labels[index]

    def check_batch_size(self, batch_size: int) -> None:
        if self.epoch_size is not None and batch_size > self.epoch_size:
            raise ValueError(f"batch={batch_size} exceeds the {self.epoch_size} examples of an epoch of {self.name} "
                             f"(task.epoch_size). Fix: batch<={self.epoch_size}")
        if batch_size > len(self):
            raise ValueError(f"batch={batch_size} exceeds the {len(self)} training examples of {self.name}. "
                             f"Fix: batch<={len(self)}")

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epochs of a fresh random order drawn from ``seed`` (``epoch_orders``), cut into ``epoch_length`` batches of
        exactly ``batch_size`` examples. ``start``: batches already taken by the run (it resumes from a checkpoint);
        the next one is the one an uninterrupted run takes."""
        self.check_batch_size(batch_size)
        per_epoch = self.epoch_length(batch_size)
        offset = start % per_epoch
        for order in self.epoch_orders(seed, start // per_epoch):
            for i in range(offset, per_epoch):
                yield self.take(order[i * batch_size:(i + 1) * batch_size])
            offset = 0

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` training examples drawn once from ``seed`` (the whole set if it is smaller)."""
        gen = torch.Generator().manual_seed(seed)
        return self.take(torch.randperm(len(self), generator=gen)[:size].to(self.labels.device))

    @staticmethod
    def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels)
