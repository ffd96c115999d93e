"""Small in-house models: the paper's "5-layer CNN" and a tiny MLP for tests.

Both take the task's dimensions by keyword, in timm's names (``in_chans``, ``img_size``, ``num_classes``), so a model
config interpolates them from the task config and the resolved config shows them.
"""

import torch
from torch import nn


class CNN5(nn.Module):
    """LeNet-5's five weight layers with ReLU and max-pooling: conv5x5(6) - conv5x5(16) - fc120 - fc84 - fc.

    The paper says only "5-layer CNN". LeNet-5 is the five-weight-layer CNN (two convolutions, three fully connected
    layers) and the common reading of that phrase for (Fashion-)MNIST. ReLU and max-pooling replace LeNet's tanh and
    average pooling, as in every modern LeNet. No BatchNorm, no dropout: the loss of a run depends on its batch only
    through the gradient noise the paper studies. 61,706 parameters at 1x28x28 with 10 classes.
    """

    def __init__(self, *, in_chans: int, img_size: int, num_classes: int,
                 channels: tuple[int, int] = (6, 16), hidden: tuple[int, int] = (120, 84)):
        super().__init__()
        c1, c2 = channels
        side = ((img_size // 2) - 4) // 2  # conv1 keeps the size (padding 2), pool halves, conv2 trims 4, pool halves
        if side < 1:
            raise ValueError(f"CNN5 needs images of at least 10x10 pixels, got img_size={img_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden[0]), nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TinyMLP(nn.Module):
    """One hidden layer: a model that trains in milliseconds, for tests and smoke runs."""

    def __init__(self, *, in_chans: int, img_size: int, num_classes: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * img_size * img_size, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
