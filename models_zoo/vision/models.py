"""Reference convolutional models of the paper's SciML workloads, written as plain PyTorch
(no lumos_fx in them): what a scientist hands to instrument().

``width`` scales every channel count, so tests run the same architectures small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class CosmoFlow(nn.Module):
    """CosmoFlow-style 3D CNN: conv-BN-LeakyReLU-pool blocks over a dark-matter density
    volume (redshift slices as channels), then a fully connected head regressing the
    cosmological parameters (Mathuriya et al., 2018)."""

    def __init__(self, in_channels: int = 4, size: int = 32, n_out: int = 4, width: float = 1.0,
                 blocks: int = 3) -> None:
        super().__init__()
        layers, c = [], in_channels
        for i in range(blocks):
            out = _w(16 * 2 ** i, width)
            layers += [nn.Conv3d(c, out, 3, padding=1), nn.BatchNorm3d(out), nn.LeakyReLU(0.3), nn.MaxPool3d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        flat = c * (size // 2 ** blocks) ** 3
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, _w(128, width)), nn.LeakyReLU(0.3),
                                  nn.Dropout(0.2), nn.Linear(_w(128, width), _w(64, width)), nn.LeakyReLU(0.3),
                                  nn.Linear(_w(64, width), n_out))

    def forward(self, x):
        return self.head(self.features(x))


class CNNClassifier(nn.Module):
    """Conv-BN-ReLU-pool blocks then a fully connected classifier (the DMS workload's
    "CNN + FC")."""

    def __init__(self, in_channels: int = 1, size: int = 32, n_classes: int = 3, width: float = 1.0,
                 blocks: int = 3) -> None:
        super().__init__()
        layers, c = [], in_channels
        for i in range(blocks):
            out = _w(32 * 2 ** i, width)
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * (size // 2 ** blocks) ** 2, _w(256, width)),
                                        nn.ReLU(), nn.Linear(_w(256, width), n_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with BatchNorm (as STEM-DL classifies crystal symmetry from diffraction
    images), global average pooling into a 2-layer classifier."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        layers, c = [], in_channels
        for v in _VGG11:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = _w(v, width)
                layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c, _w(512, width)), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                        nn.Linear(_w(512, width), n_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """2D U-Net (Ronneberger et al., 2015) with skip concatenations and transposed-conv
    upsampling, as EM-Denoise and SLSTR cloud masking use: per-pixel outputs."""

    def __init__(self, in_channels: int = 3, n_out: int = 2, width: float = 1.0, depth: int = 4) -> None:
        super().__init__()
        chans = [_w(64 * 2 ** i, width) for i in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, chans[0])])
        self.down.extend(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(chans[0], n_out, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.out(x)


class EncoderDecoder(nn.Module):
    """Convolutional autoencoder (the Optical damage workload): strided-conv encoder into a
    dense bottleneck, transposed-conv decoder back to the image."""

    def __init__(self, in_channels: int = 1, size: int = 32, latent: int = 64, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = _w(32, width), _w(64, width), _w(128, width)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU())
        self.side = size // 8
        self.c3 = c3
        self.to_latent = nn.Linear(c3 * self.side ** 2, latent)
        self.from_latent = nn.Linear(latent, c3 * self.side ** 2)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 2, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 2, stride=2), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, in_channels, 2, stride=2))

    def forward(self, x):
        h = self.encoder(x)
        z = self.to_latent(h.view(h.size(0), -1))
        h = F.relu(self.from_latent(z)).view(-1, self.c3, self.side, self.side)
        return self.decoder(h)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet (He et al., 2016) with the torchvision layout: 7x7 stem, four stages, global
    average pooling, a Linear classifier. ``resnet18()`` and ``resnet50()`` build the two
    reference depths."""

    def __init__(self, block, layers, in_channels: int = 3, n_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        c = _w(64, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        stages = []
        for i, n in enumerate(layers):
            planes = _w(64 * 2 ** i, width)
            blocks = []
            for j in range(n):
                blocks.append(block(c, planes, stride=2 if i > 0 and j == 0 else 1))
                c = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        h = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)


def reference_models(width: float = 1.0, size: int = 32) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (model, input shape without the batch) for every reference model."""
    return {
        "cosmoflow_3d": (CosmoFlow(size=size, width=width), (4, size, size, size)),
        "vgg11": (VGG11(width=width), (1, size, size)),
        "unet_2d": (UNet(width=width), (3, size, size)),
        "encoder_decoder": (EncoderDecoder(size=size, width=width), (1, size, size)),
        "resnet18": (resnet18(width=width, n_classes=10), (3, size, size)),
        "resnet50": (resnet50(width=width, n_classes=10), (3, size, size)),
    }
