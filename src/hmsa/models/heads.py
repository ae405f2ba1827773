"""Heads: DeepLabV3+ and OCR segmentation heads, the auxiliary head, the HMSA attention
head, and the explicit (Chen et al.) scale-attention head.

A segmentation head's ``decode(feats)`` returns the features its classifier reads (the
attention heads read them too) and its own auxiliary logits, or None when the model's
``AuxHead`` provides them."""

from __future__ import annotations

from collections.abc import Sequence

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


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """The input size of one scale: round(H*s) x round(W*s), at least 1 pixel."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


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

    def decode(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        """Decoder features at stride 4 (no auxiliary logits of its own: see ``AuxHead``)."""
        low = self.low_project(feats["low"])
        high = resize(self.aspp(feats["high"]), low.shape[-2:])
        return torch.cat([high, low], dim=1), None

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
    """Explicit attention: N scale weights from the scales' concatenated features.

    ``form`` chen (Chen et al. 2016): conv3x3-BN-ReLU, conv1x1, softmax over the scales, so
    the weights sum to 1. ``form`` authors (the HMSA authors' baseline, paper section 5):
    conv3x3-ReLU, conv1x1, both without bias, and the raw outputs used as weights."""

    def __init__(self, cin: int, num_scales: int, channels: int = 256, form: str = "chen"):
        super().__init__()
        if form not in ("chen", "authors"):
            raise ValueError(f"model.explicit_head: {form!r} is not one of 'chen', 'authors'")
        self.num_scales = num_scales
        self.form = form
        if form == "chen":
            self.body = nn.Sequential(conv_bn_relu(cin * num_scales, channels), nn.Conv2d(channels, num_scales, 1))
        else:
            self.body = nn.Sequential(nn.Conv2d(cin * num_scales, channels, 3, padding=1, bias=False),
                                      nn.ReLU(inplace=True), nn.Conv2d(channels, num_scales, 1, bias=False))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Weights over scales, shape (B, N, h, w), from features already at one size."""
        weights = self.body(torch.cat(features, dim=1))
        return torch.softmax(weights, dim=1) if self.form == "chen" else weights


def object_representations(pixels: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """OCR's object-region representations: for each class k, the mean of the pixel
    features weighted by the soft object region softmax_over_pixels(region_logits[k]).

    pixels (B, C, H, W), region_logits (B, K, H, W) -> (B, C, K)."""
    regions = torch.softmax(region_logits.flatten(2).float(), dim=2).to(pixels.dtype)  # (B, K, HW)
    return torch.bmm(pixels.flatten(2), regions.transpose(1, 2))


class OCRHead(nn.Module):
    """Object-contextual representations (Yuan, Chen, Wang 2020) on the trunk's ``high`` features.

    1. soft object regions: an auxiliary classifier (1x1 conv-BN-ReLU, 1x1 conv) whose
       logits are also the auxiliary output (weight ``aux_weight``, 0.4, in the loss);
    2. pixel representations: 3x3 conv-BN-ReLU to ``mid`` channels;
    3. object-region representations: the region-weighted means of the pixel representations;
    4. pixel-region relation: softmax over classes of query(pixel) . key(object) / sqrt(key);
    5. the augmented representation: the relation-weighted object values brought back to
       ``mid`` channels, concatenated with the pixel representation, 1x1 conv-BN-ReLU and
       dropout. The classifier and the HMSA attention head read it (``out_channels`` = mid).
    """

    def __init__(self, cin: int, num_classes: int, mid: int = 512, key: int = 256, dropout: float = 0.05):
        super().__init__()
        self.key_channels = key
        self.out_channels = mid
        self.soft_regions = nn.Sequential(conv_bn_relu(cin, cin, 1), nn.Conv2d(cin, num_classes, 1))
        self.pixel_in = conv_bn_relu(cin, mid, 3)
        self.query = nn.Sequential(conv_bn_relu(mid, key, 1), conv_bn_relu(key, key, 1))
        self.key = nn.Sequential(conv_bn_relu(mid, key, 1), conv_bn_relu(key, key, 1))
        self.value = conv_bn_relu(mid, key, 1)
        self.context_out = conv_bn_relu(key, mid, 1)
        self.augment = nn.Sequential(conv_bn_relu(2 * mid, mid, 1), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(mid, num_classes, 1)

    def contextual(self, pixels: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        """Steps 3-5: the augmented representation (B, mid, H, W)."""
        b, _, h, w = pixels.shape
        objects = object_representations(pixels, region_logits).unsqueeze(-1)  # (B, mid, K, 1)
        query = self.query(pixels).flatten(2).transpose(1, 2)  # (B, HW, key)
        keys = self.key(objects).flatten(2)  # (B, key, K)
        values = self.value(objects).flatten(2).transpose(1, 2)  # (B, K, key)
        relation = torch.softmax(torch.bmm(query, keys).float() * self.key_channels ** -0.5, dim=-1).to(values.dtype)
        context = torch.bmm(relation, values).transpose(1, 2).reshape(b, -1, h, w)
        return self.augment(torch.cat([self.context_out(context), pixels], dim=1))

    def decode(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented representation and the soft-object-region (auxiliary) logits."""
        region_logits = self.soft_regions(feats["high"])
        return self.contextual(self.pixel_in(feats["high"]), region_logits), region_logits

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        """Class logits from the augmented representation."""
        return self.classifier(decoded)
