"""Heads: DeepLabV3+ segmentation head, auxiliary head, HMSA attention head, and the
explicit (Chen et al.) scale-attention head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """conv (no bias) -> BN -> ReLU, 'same' padding."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False); the identity when the size already matches."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 + three dilated 3x3 branches (+ image pooling)."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int], pooling: bool = True):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, r) for r in rates])
        self.pool = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            if pooling else None
        )
        n = len(self.branches) + (1 if pooling else 0)
        self.project = conv_bn_relu(n * cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        if self.pool is not None:
            outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the high features, fused with projected low-level (stride 4) features.

    ``decode`` returns the decoder features (ASPP channels + low-level channels, 304 with
    the paper's sizes) that both the classifier and the attention head read.
    """

    def __init__(self, low_in: int, high_in: int, num_classes: int, aspp_channels: int = 256,
                 rates: tuple[int, int, int] = (12, 24, 36), pooling: bool = True,
                 low_channels: int = 48, decoder_channels: int = 256):
        super().__init__()
        self.aspp = ASPP(high_in, aspp_channels, rates, pooling)
        self.low_project = conv_bn_relu(low_in, low_channels, 1)
        self.out_channels = aspp_channels + low_channels
        self.classifier = nn.Sequential(
            conv_bn_relu(self.out_channels, decoder_channels),
            conv_bn_relu(decoder_channels, decoder_channels),
            nn.Conv2d(decoder_channels, num_classes, 1),
        )

    def decode(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder features at stride 4."""
        low = self.low_project(feats["low"])
        high = resize(self.aspp(feats["high"]), low.shape[-2:])
        return torch.cat([high, low], dim=1)

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        """Class logits at stride 4 from decoder features."""
        return self.classifier(decoded)


class AuxHead(nn.Module):
    """Auxiliary classifier on the trunk's high features (deep supervision)."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, channels), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class AttentionHead(nn.Module):
    """HMSA attention: conv3x3-BN-ReLU, conv3x3-BN-ReLU, (dropout), conv1x1 -> 1, sigmoid."""

    def __init__(self, cin: int, channels: int = 256, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(cin, channels),
            conv_bn_relu(channels, channels),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(channels, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


class ScaleAttentionHead(nn.Module):
    """Explicit attention (Chen et al. 2016): N scale weights from concatenated features."""

    def __init__(self, cin: int, num_scales: int, channels: int = 256):
        super().__init__()
        self.num_scales = num_scales
        self.body = nn.Sequential(conv_bn_relu(cin * num_scales, channels), nn.Conv2d(channels, num_scales, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Softmax weights over scales, shape (B, N, h, w), from features already at one size."""
        return torch.softmax(self.body(torch.cat(features, dim=1)), dim=1)
