"""Trunks (backbones) built from torchvision architectures.

A trunk maps a normalised image to two feature maps: ``low`` at stride 4 (for the
DeepLabV3+ decoder) and ``high`` at the output stride (8 or 16). ImageNet weights are
optional: ``none``, ``imagenet`` (torchvision's weights API, needs the internet) or a path
to a state_dict of the torchvision classification model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or do not fit the trunk."""


class Trunk(nn.Module):
    """Runs ``stem`` to stride 4 (``low``) and ``body`` on to the output stride (``high``)."""

    def __init__(self, stem: nn.Module, body: nn.Module, low_channels: int, high_channels: int, output_stride: int):
        super().__init__()
        self.stem = stem
        self.body = body
        self.low_channels = low_channels
        self.high_channels = high_channels
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.stem(x)
        return {"low": low, "high": self.body(low)}


_WEIGHTS = {
    "mobilenetv3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
}
TRUNKS = tuple(_WEIGHTS)


def _load_pretrained(classifier: nn.Module, trunk: str, pretrained: str) -> None:
    """Load ImageNet weights into the torchvision classification model before it is cut."""
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        weights = models.get_weight(_WEIGHTS[trunk])
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # network errors surface as URLError, OSError, RuntimeError...
            raise PretrainedWeightsError(
                f"model.pretrained=imagenet: could not download {_WEIGHTS[trunk]} from {weights.url} "
                f"({type(err).__name__}: {err}). Without internet access, download the file elsewhere and set "
                "model.pretrained to its path, or use model.pretrained=none."
            ) from None
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained: {pretrained} is neither 'none', 'imagenet' nor an existing file"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise PretrainedWeightsError(
                f"model.pretrained: {path} is not a loadable state_dict ({type(err).__name__}: {err})"
            ) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    try:
        result = classifier.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).split("\n\t")[1:2] or [str(err)[:200]]
        raise PretrainedWeightsError(
            f"model.pretrained: the weights do not fit trunk {trunk}: {first[0]}; "
            f"is this a state_dict of torchvision's {trunk}?"
        ) from None
    trunk_missing = [k for k in result.missing_keys if not k.startswith(("classifier", "fc", "layer4"))]
    if trunk_missing:
        raise PretrainedWeightsError(
            f"model.pretrained: the weights do not fit trunk {trunk}: {len(trunk_missing)} missing tensors "
            f"(e.g. {trunk_missing[:3]}); is this a state_dict of torchvision's {trunk}?"
        )


def build_trunk(name: str, output_stride: int = 16, pretrained: str = "none") -> Trunk:
    """A trunk by name.

    - ``resnet18``: ResNet-18 cut after layer3 (stride 16, 256 channels): the CPU default,
      fastest to train from scratch here;
    - ``mobilenetv3_large``: torchvision's dilated MobileNetV3-Large (stride 16);
    - ``resnet50``: dilated ResNet-50 (stride 8 or 16), the paper's ablation trunk.
    """
    if name == "mobilenetv3_large":
        if output_stride != 16:
            raise ValueError("mobilenetv3_large: output_stride must be 16")
        net = models.mobilenet_v3_large(weights=None, dilated=True)
        _load_pretrained(net, name, pretrained)
        return Trunk(net.features[:4], net.features[4:], 24, 960, 16)
    if name == "resnet18":
        if output_stride != 16:
            raise ValueError("resnet18: output_stride must be 16")
        net = models.resnet18(weights=None)
        _load_pretrained(net, name, pretrained)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return Trunk(stem, nn.Sequential(net.layer2, net.layer3), 64, 256, 16)
    if name == "resnet50":
        dilate = [False, output_stride == 8, True]
        net = models.resnet50(weights=None, replace_stride_with_dilation=dilate)
        _load_pretrained(net, name, pretrained)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return Trunk(stem, nn.Sequential(net.layer2, net.layer3, net.layer4), 256, 2048, output_stride)
    raise ValueError(f"unknown trunk {name!r}; choose one of {TRUNKS}")
