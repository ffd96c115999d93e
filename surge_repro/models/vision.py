"""Vision models: ResNet-18 for Tiny-ImageNet's 64x64 images (the paper's Fig. 3 workload), torchvision's network
with a stem for small images (``conf/model/resnet18.yaml``). The ViT of the suite's own workload (``task=vit_cifar``)
needs no code here: ``conf/model/vit_tiny.yaml`` builds it straight from ``timm.create_model``.

Random weights; nothing is downloaded. Both are built by ``surge_repro.config.build``, inside the ``surge_repro``
package, whose import has installed the torchvision shim (``surge_repro/_torchvision_shim.py``) before torchvision or
timm load: the CUDA-built torchvision wheel, and timm with it, then import on a CPU-only torch too.

Compute per image, forward only, counted with ``torch.utils.flop_counter`` (a training step is about three times as
much): ResNet-18 at 64x64 with the ImageNet stem 0.30 GFLOP, with the 3x3 stem and the max-pool (the default here)
1.12 GFLOP, with the 3x3 stem and no max-pool 4.44 GFLOP; the ViT at 32x32 with 4x4 patches 0.69 GFLOP.
"""

from __future__ import annotations

from torch import nn

STEMS = ("conv3x3_maxpool", "conv3x3", "imagenet")  # resnet18's docstring compares them


def resnet18(*, in_chans: int, num_classes: int, stem: str = "conv3x3_maxpool") -> nn.Module:
    """torchvision's ResNet-18 (BatchNorm, basic blocks [2, 2, 2, 2], widths 64-512; 11.27 M parameters with 200
    classes) with a stem for small images.

    The paper gives no modification for 64x64 inputs. Its stem choices, on Tiny-ImageNet:

    - ``imagenet``: torchvision's own 7x7 stride-2 conv and 3x3 stride-2 max-pool. layer1 sees 16x16 and layer4 2x2:
      the first two layers throw away 15/16 of the pixels of an image that is already small.
    - ``conv3x3_maxpool`` (default): a 3x3 stride-1 conv, then the max-pool. layer1 to layer4 see 32, 16, 8 and 4
      pixels a side: exactly the feature maps of the standard CIFAR ResNet-18 on 32x32, the best-studied small-image
      ResNet, so the 64x64 images keep twice CIFAR's resolution up to the stem and the network behind it is the
      familiar one; 1.12 GFLOP per image.
    - ``conv3x3``: the CIFAR stem (no max-pool): layer1 at 64x64, four times the compute (4.44 GFLOP) of the
      default, for a workload the paper runs for 100 rounds of 99 points.
    """
    from torchvision.models import resnet18 as torchvision_resnet18

    if stem not in STEMS:
        raise ValueError(f"model.stem={stem!r}: choose one of {', '.join(STEMS)}. Fix: model.stem=conv3x3_maxpool")
    model = torchvision_resnet18(weights=None, num_classes=num_classes)
    if stem != "imagenet":
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if stem == "conv3x3":
        model.maxpool = nn.Identity()
    # the replaced conv gets torchvision's initialisation of every other conv, not nn.Conv2d's default
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model

