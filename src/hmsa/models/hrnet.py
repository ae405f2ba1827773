"""HRNetV2 trunks (Wang et al., "Deep High-Resolution Representation Learning", 2019).

A stride-4 stem, then four stages that keep one branch per resolution (strides 4, 8, 16,
32, one more branch per stage) and exchange information between all branches at the end
of every module. HRNetV2's representation is every branch upsampled to stride 4 and
concatenated: 720 channels for W48 (48+96+192+384), 270 for W18-small (18+36+72+144).

Module names follow the HRNet papers' public ImageNet checkpoints (``conv1``, ``layer1``,
``transition1``, ``stage2.0.branches.0.0.conv1``, ``stage2.0.fuse_layers.0.1``...), so that
a state_dict of the classification network loads with ``model.pretrained: <path>``; its
classification-only tensors (``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``modules`` high-resolution modules, ``blocks`` residual blocks and
    ``channels`` per branch."""

    modules: int
    blocks: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetSpec:
    layer1_blocks: int  # Bottlenecks of stage 1 (64 planes -> 256 channels)
    stages: tuple[StageSpec, StageSpec, StageSpec]


SPECS = {
    # HRNetV2-W18-Small-v2: the CPU-sized one
    "hrnet_w18_small": HRNetSpec(2, (
        StageSpec(1, (2, 2), (18, 36)),
        StageSpec(3, (2, 2, 2), (18, 36, 72)),
        StageSpec(2, (2, 2, 2, 2), (18, 36, 72, 144)),
    )),
    # HRNetV2-W48: the paper's trunk
    "hrnet_w48": HRNetSpec(4, (
        StageSpec(1, (4, 4), (48, 96)),
        StageSpec(4, (4, 4, 4), (48, 96, 192)),
        StageSpec(3, (4, 4, 4, 4), (48, 96, 192, 384)),
    )),
}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _upsample(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class HighResolutionModule(nn.Module):
    """Residual blocks on each branch, then every branch gets the sum of all branches
    brought to its resolution: 1x1 conv + upsampling from lower resolutions, strided 3x3
    convs from higher ones."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(n))) for c, n in zip(channels, blocks)
        )
        fuse = []
        for i, ci in enumerate(channels):
            row: list[nn.Module | None] = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(_conv_bn(cj, ci, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:  # i - j strided convs; channels change at the last one, no ReLU after it
                    steps = [_conv_bn(cj, cj, 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(cj, ci, 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                total = total + (_upsample(y, xs[i].shape[-2:]) if j > i else y)
            out.append(self.relu(total))
        return out


def _transition(cins: tuple[int, ...], couts: tuple[int, ...]) -> nn.ModuleList:
    """Adapts the branches of one stage to the next: a 3x3 conv where the width changes,
    nothing where it does not, and a new half-resolution branch from the lowest one."""
    layers: list[nn.Module | None] = []
    for k, cout in enumerate(couts):
        if k < len(cins):
            layers.append(_conv_bn(cins[k], cout, 3) if cins[k] != cout else None)
        else:
            layers.append(nn.Sequential(_conv_bn(cins[-1], cout, 3, 2)))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2 as a trunk: ``low`` and ``high`` are both the concatenated stride-4
    representation (the OCR head reads ``high``; DeepLabV3+ would read both)."""

    output_stride = 4

    def __init__(self, spec: HRNetSpec):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.layer1 = nn.Sequential(
            Bottleneck(64, 64, downsample=down), *(Bottleneck(256, 64) for _ in range(spec.layer1_blocks - 1))
        )
        previous: tuple[int, ...] = (256,)
        for number, stage in enumerate(spec.stages, start=2):
            self.add_module(f"transition{number - 1}", _transition(previous, stage.channels))
            self.add_module(f"stage{number}", nn.Sequential(
                *(HighResolutionModule(stage.channels, stage.blocks) for _ in range(stage.modules))
            ))
            previous = stage.channels
        self.low_channels = self.high_channels = sum(previous)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(x)]
        for number in (2, 3, 4):
            transition = getattr(self, f"transition{number - 1}")
            xs = [
                (layer(xs[min(k, len(xs) - 1)]) if layer is not None else xs[k])
                for k, layer in enumerate(transition)
            ]
            xs = getattr(self, f"stage{number}")(xs)
        size = xs[0].shape[-2:]
        features = torch.cat([xs[0]] + [_upsample(x, size) for x in xs[1:]], dim=1)
        return {"low": features, "high": features}


def build_hrnet(name: str) -> HRNet:
    """HRNetV2 by name: ``hrnet_w18_small`` or ``hrnet_w48``."""
    return HRNet(SPECS[name])
