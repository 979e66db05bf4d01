"""Wide ResNet WRN-d-k for 32x32 images (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

torchvision has no CIFAR WRN, so it is written here. Layout (the paper's Table 1, pre-activation basic blocks):
``conv3x3(3 -> 16)``, three groups of ``n = (d - 4) / 6`` blocks with widths ``16k, 32k, 64k`` (strides 1, 2, 2),
each block ``BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3`` plus a 1x1 projection shortcut when the shape changes,
then ``BN-ReLU``, global average pooling and a linear classifier ``fc``. WRN-28-10 has 36.5M parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class WideBasic(nn.Module):
    """Pre-activation block: ``x + conv(relu(bn(conv(relu(bn(x))))))``, shortcut projected when shapes differ."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # the projection shortcut acts on the pre-activated input (as in the authors' code)
        short = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.dropout(F.relu(self.bn2(o))))
        return o + short


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``; input (B, 3, 32, 32) -> logits (B, num_classes)."""

    def __init__(self, num_classes: int, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WRN widen_factor must be a positive integer, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WRN dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        layers, c_in = [], widths[0]
        for g, stride in enumerate((1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(WideBasic(c_in, widths[g + 1], stride if i == 0 else 1, dropout))
                c_in = widths[g + 1]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        o = F.relu(self.bn(o))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))
