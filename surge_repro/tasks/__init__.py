"""Tasks: the data a workload trains on, and its loss. The training loop sees only this contract.

A task supplies ``batches(batch_size, seed)`` (an endless iterator of batches of exactly ``batch_size`` units),
``epoch_orders(seed)`` and ``take(index)`` (the same batches by index, for packed execution: ``surge_repro.packed``),
``probe(size, seed)`` (one fixed batch of training data on which the protocol measures loss drops), ``loss(model,
batch)`` (a scalar tensor: the mean training loss of the batch) and ``batch_unit`` (what ``batch`` counts).
Builders live in ``vision`` (one function per dataset); ``prepare`` is the only code that downloads or converts data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F


class DataError(RuntimeError):
    """Data missing or unreadable. The message names the command that fixes it."""


@dataclass
class TensorTask:
    """Classification on tensors held in memory (on the CPU, or on the GPU after ``to``)."""

    name: str
    inputs: torch.Tensor  # N x C x H x W, float32, normalised
    labels: torch.Tensor  # N, int64
    batch_unit: str = "examples"

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "TensorTask":
        return TensorTask(self.name, self.inputs.to(device), self.labels.to(device), self.batch_unit)

    def epoch_orders(self, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        """An endless sequence of random orders of the training set, one per epoch, drawn from ``seed``; from epoch
        ``start`` on (a resumed run draws the earlier ones again and drops them: the data position is a function
        of the seed and the step, so checkpoints need not store it)."""
        gen = torch.Generator().manual_seed(seed)
        for _ in range(start):
            torch.randperm(len(self), generator=gen)
        while True:
            yield torch.randperm(len(self), generator=gen).to(self.labels.device)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``index``, of any shape: a packed run takes points x batch at once."""
        return self.inputs[index], self.labels[index]

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size > len(self):
            raise ValueError(f"batch={batch_size} exceeds the {len(self)} training examples of {self.name}. "
                             f"Fix: batch<={len(self)}")

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epochs of a fresh random order drawn from ``seed``; a batch never spans two epochs, so each has exactly
        ``batch_size`` examples (the tail of an epoch shorter than a batch is skipped). ``start``: batches already
        taken by the run (it resumes from a checkpoint); the next one is the one an uninterrupted run takes."""
        self.check_batch_size(batch_size)
        per_epoch = len(self) // batch_size
        offset = start % per_epoch
        for order in self.epoch_orders(seed, start // per_epoch):
            for i in range(offset, per_epoch):
                yield self.take(order[i * batch_size:(i + 1) * batch_size])
            offset = 0

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` training examples drawn once from ``seed`` (the whole set if it is smaller)."""
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=gen)[:size].to(self.labels.device)
        return self.inputs[idx], self.labels[idx]

    @staticmethod
    def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels)
