"""The classifiers of the evaluation protocol: ConvNet-6, ResNet-10-AP, ResNet-18, and
the soft-label protocol's torchvision ResNet-18 with batch norm ("resnet18bn", in
`dmgd.evaluation.resnet`).

The first three use instance norm (`GroupNorm(C, C, affine=True)`, no batch statistics). `build_model`
picks the ImageNet variant for inputs of at least 64 px, else the small-input variant,
which downsamples only while maps stay at least 2x2 (instance norm over a 1x1 map zeroes
every feature). The layouts, per size, are in docs/evaluation.md ("The classifiers").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmgd.errors import DmgdError
from dmgd.evaluation.config import IMAGENET_MIN_SIZE

MODELS = ("convnet", "resnet10ap", "resnet18")  # instance norm
BN_MODELS = ("resnet18bn",)  # batch norm: the soft protocol's teacher and ImageNet student
ALL_MODELS = MODELS + BN_MODELS
DISPLAY_NAMES = {"convnet": "ConvNet-6", "resnet10ap": "ResNet-10-AP", "resnet18": "ResNet-18",
                 "resnet18bn": "ResNet-18 (batch norm, torchvision's)"}


class ModelError(DmgdError):
    pass


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels, channels, affine=True)


class ConvNet(nn.Module):
    """`depth` blocks conv3x3(width) -> IN -> ReLU -> AvgPool(2) (small inputs: pooling only
    while the map stays >= 2x2); a linear head on the flattened map."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, depth: int = 6,
                 width: int = 128, imagenet: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, channels = image_size, in_channels
        self.pools: list[bool] = []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), _norm(width), nn.ReLU(inplace=True)]
            pool = size // 2 >= (1 if imagenet else 2)
            if pool:
                layers.append(nn.AvgPool2d(2, 2))
                size //= 2
            self.pools.append(pool)
            channels = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, size, size)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class APBlock(nn.Module):
    """ResNet-AP's BasicBlock: stride-1 convolutions, AvgPool(2) to downsample."""

    def __init__(self, in_planes: int, planes: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=False)
        self.norm1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.norm2 = _norm(planes)
        self.shortcut = nn.Sequential()
        if downsample or in_planes != planes:
            parts: list[nn.Module] = [nn.Conv2d(in_planes, planes, 1, 1, bias=False)]
            if downsample:
                parts.append(nn.AvgPool2d(2, 2))
            parts.append(_norm(planes))
            self.shortcut = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        if self.downsample:
            out = F.avg_pool2d(out, 2, 2)
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Block(nn.Module):
    """torchvision's BasicBlock with instance norm: a strided 3x3 convolution downsamples."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.norm1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.norm2 = _norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), _norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _resnet_stem(in_channels: int, width: int, size: int, imagenet: bool,
                 avgpool_blocks: bool) -> tuple[list[nn.Module], int]:
    """The stem's layers and the size of the map it produces."""
    if imagenet and avgpool_blocks:  # ResNet-AP: 7x7 stride-1 stem + AvgPool(4)
        stem = [nn.Conv2d(in_channels, width, 7, 1, 3, bias=False), _norm(width), nn.ReLU(inplace=True),
                nn.AvgPool2d(4, 4)]
        return stem, size // 4
    if imagenet:  # torchvision: 7x7 stride-2 stem + MaxPool(3, 2)
        stem = [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), _norm(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1)]
        return stem, ((size + 1) // 2 + 1) // 2
    # small inputs: 3x3 stride-1 stem, no stem pooling
    return [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), _norm(width), nn.ReLU(inplace=True)], size


class ResNet(nn.Module):
    """ResNet-AP (`avgpool_blocks`: APBlocks) or torchvision's ResNet (Blocks) with instance
    norm; small inputs: 3x3 stem, a stage downsamples only while the map stays >= 2x2."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, layers: tuple[int, ...],
                 avgpool_blocks: bool, imagenet: bool, width: int = 64) -> None:
        super().__init__()
        stem, size = _resnet_stem(in_channels, width, image_size, imagenet, avgpool_blocks)
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        in_planes = width
        self.downsamples: list[bool] = []
        for stage, count in enumerate(layers):
            planes = width * 2 ** stage
            down = stage > 0 and size // 2 >= (1 if imagenet else 2)
            self.downsamples.append(down)
            for b in range(count):
                first = b == 0 and down
                if avgpool_blocks:
                    blocks.append(APBlock(in_planes, planes, first))
                else:
                    blocks.append(Block(in_planes, planes, 2 if first else 1))
                in_planes = planes
            if down:
                size = size // 2 if avgpool_blocks else (size + 1) // 2
        self.layers = nn.Sequential(*blocks)
        self.feature_shape = (in_planes, size, size)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(x.mean((2, 3)))


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, *, seed: int | None = None) -> nn.Module:
    """A freshly initialised classifier: the ImageNet variant for inputs of at least 64 px,
    the small-input variant below (see the module doc). seed: seeds torch's global
    generator right before the weights are drawn (None: draw from it as it is)."""
    if name not in ALL_MODELS:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(ALL_MODELS)}")
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, not {num_classes}")
    if image_size < 2:
        raise ModelError(f"images of {image_size} px are too small to classify")
    imagenet = image_size >= IMAGENET_MIN_SIZE
    if seed is not None:
        torch.manual_seed(int(seed))
    if name == "convnet":
        return ConvNet(num_classes, in_channels, image_size, imagenet=imagenet)
    if name == "resnet10ap":
        return ResNet(num_classes, in_channels, image_size, (1, 1, 1, 1), avgpool_blocks=True, imagenet=imagenet)
    if name == "resnet18bn":
        from dmgd.evaluation.resnet import TorchvisionResNet18

        return TorchvisionResNet18(num_classes, in_channels, imagenet=imagenet)
    return ResNet(num_classes, in_channels, image_size, (2, 2, 2, 2), avgpool_blocks=False, imagenet=imagenet)


def describe(name: str, image_size: int) -> str:
    """One line: which variant `build_model` picks for this input size."""
    if name == "resnet18bn":
        stem = "7x7 stride-2 stem + max pool" if image_size >= IMAGENET_MIN_SIZE else "3x3 stride-1 stem, no pool"
        return f"{DISPLAY_NAMES[name]}, {stem}, {image_size}x{image_size} input"
    if image_size >= IMAGENET_MIN_SIZE:
        variant = "ImageNet variant"
    elif name == "convnet":
        variant = "small-input variant (pooling only while maps stay >= 2x2)"
    else:
        variant = "small-input variant (3x3 stem, downsampling only while maps stay >= 2x2)"
    return f"{DISPLAY_NAMES.get(name, name)}, instance norm, {variant}, {image_size}x{image_size} input"
