import torch
from torchvision.models import resnet18 as tv_resnet18

from repro.models import mlp, resnet18


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_standard_resnet18_is_torchvisions_without_fc():
    ours, theirs = resnet18(), tv_resnet18()
    assert n_params(ours) == n_params(theirs) - n_params(theirs.fc)
    assert ours(torch.randn(2, 3, 96, 96)).shape == (2, 512)


def test_cifar_stem_matches_solo_learn():
    net = resnet18(cifar_stem=True)
    conv = net.conv1
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (2, 2), None)
    assert isinstance(net.maxpool, torch.nn.Identity)
    # 32 px in, conv1 leaves 34 x 34 (padding 2), no max-pool: layer4 runs at 5 x 5
    x = torch.randn(2, 3, 32, 32)
    stem = net.relu(net.bn1(net.conv1(x)))
    assert stem.shape[-2:] == (34, 34)
    assert net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(stem))))).shape[-2:] == (5, 5)


def test_width_scales_every_stage_and_one_channel_input():
    net = resnet18(width=32, cifar_stem=True, in_channels=1)
    assert net.num_features == 256
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 256)
    assert net.layer1[0].conv1.in_channels == 32 and net.layer4[0].conv1.out_channels == 256


def test_frossl_projector_shape():
    head = mlp(512, 2048, 1024, num_layers=3)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 2048), (2048, 2048), (2048, 1024)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head) == 2
    assert head(torch.randn(4, 512)).shape == (4, 1024)
