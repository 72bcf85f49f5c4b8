"""Backbones and heads.

ResNet18 is torchvision's. Two stems:
- CIFAR stem (solo-learn `solo/methods/base.py`): conv1 becomes a 3x3, stride 1, padding 2 conv
  without bias and the max-pool is removed. The padding of 2 (a 32 px input leaves conv1 at
  34x34) is solo-learn's choice, followed here because the paper's small-dataset numbers come from
  solo-learn.
- Standard stem (7x7 stride 2 + max-pool) for STL-10 (96 px) and ImageNet.
`width` scales every stage (64 = the standard ResNet18; the CPU demo uses 32).
"""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as torchvision_resnet18
from torchvision.models.resnet import BasicBlock


def _init_like_torchvision(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def resnet18(*, width: int = 64, cifar_stem: bool = False, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet18 without its classifier (`fc` is Identity); returns (N, 8*width) features."""
    net = torchvision_resnet18()
    if width != 64:
        # torchvision fixes the stage widths at 64..512; rebuild the stages at the requested width
        # with torchvision's own block builder and initialisation.
        net.inplanes = width
        net.layer1 = net._make_layer(BasicBlock, width, 2)
        net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
        net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
        net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
        net.bn1 = nn.BatchNorm2d(width)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3 or width != 64:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    net.num_features = 8 * width
    _init_like_torchvision(net)
    return net


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3,
        last_bn: bool = False) -> nn.Sequential:
    """Linear -> BN -> ReLU repeated (num_layers - 1) times, then a Linear (optionally + BN).

    FroSSL's projector (authors' configs): mlp(512, 2048, 1024, num_layers=3).
    """
    if num_layers < 1:
        raise ValueError(f"mlp needs num_layers >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def build_backbone(model_cfg) -> nn.Module:
    if model_cfg.backbone != "resnet18":
        raise ValueError(f"unknown backbone {model_cfg.backbone!r}")
    return resnet18(width=model_cfg.width, cifar_stem=model_cfg.cifar_stem,
                    in_channels=model_cfg.in_channels)

