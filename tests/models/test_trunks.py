import urllib.error

import pytest
import torch
from torchvision import models

from hmsa.models import trunks
from hmsa.models.trunks import PretrainedWeightsError, build_trunk


@pytest.mark.parametrize("name, stride, channels", [("mobilenetv2", 16, (24, 320)), ("mobilenetv2", 8, (24, 320)), ("mobilenetv3_large", 16, (24, 960)), ("resnet18", 16, (64, 256)), ("resnet50", 8, (256, 2048)),
                                                    ("resnet50", 16, (256, 2048))])
def test_trunk_strides_and_channels(name, stride, channels):
    trunk = build_trunk(name, stride).eval()
    feats = trunk(torch.rand(1, 3, 64, 128))
    assert feats["low"].shape[1:] == (channels[0], 16, 32)
    assert feats["high"].shape[1:] == (channels[1], 64 // stride, 128 // stride)


def test_mobilenetv2_stride_8_keeps_the_weights_and_the_receptive_field_grows():
    """Stride 8 changes strides and dilations only: the same weights, the same features at
    1/8 where stride 16 subsamples them, and every later 3x3 convolution dilated 2 or 4."""
    torch.manual_seed(0)
    os16 = build_trunk("mobilenetv2", 16).eval()
    os8 = build_trunk("mobilenetv2", 8)
    os8.load_state_dict(os16.state_dict())
    os8.eval()
    dilations = [m.dilation[0] for m in os8.body.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    strides = [m.stride[0] for m in os8.body.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # body = features[4:18]: blocks 4-6 at 1/8, 7-13 (1/16 in MobileNetV2) dilated 2 after
    # block 7, 14-17 (1/32) dilated 4 after block 14; no stride-2 convolution after 1/8
    assert strides == [2] + [1] * 13
    assert dilations == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4]
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        low16, low8 = os16(x)["low"], os8(x)["low"]
    assert torch.equal(low16, low8)  # the stem is untouched


def test_imagenet_without_internet_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match="could not download .* set model.pretrained to its path"):
        build_trunk("mobilenetv3_large", 16, "imagenet")


def test_weights_load_from_a_path(tmp_path):
    torch.manual_seed(3)
    reference = models.mobilenet_v3_large(weights=None, dilated=True)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    trunk = build_trunk("mobilenetv3_large", 16, str(tmp_path / "w.pth"))
    assert torch.equal(trunk.stem[0][0].weight, reference.features[0][0].weight)


def test_wrong_weights_are_refused(tmp_path):
    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match="do not fit trunk resnet50"):
        build_trunk("resnet50", 16, str(tmp_path / "r18.pth"))
    with pytest.raises(PretrainedWeightsError, match="neither 'none', 'imagenet' nor an existing file"):
        build_trunk("resnet50", 16, str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(PretrainedWeightsError, match="not a loadable state_dict"):
        build_trunk("resnet50", 16, str(tmp_path / "junk.pth"))


def test_mobilenetv2_imagenet_weights_install_offline(monkeypatch):
    """requirements-nodeps.txt installs torchvision's MobileNetV2 file; nothing is downloaded."""
    def offline(*args, **kwargs):
        raise AssertionError("the offline weights must not be downloaded")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    path = trunks.offline_weights("mobilenetv2")
    assert path is not None and path.name == "mobilenet_v2-b0353104.pth"
    state = torch.load(path, weights_only=True)
    trunk = build_trunk("mobilenetv2", 16, "imagenet").eval()
    assert torch.equal(trunk.stem[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(trunk.body[-1].conv[2].weight, state["features.17.conv.2.weight"])
    # the ImageNet features separate a vertical bar from flat grey, a scratch trunk barely does
    bar = torch.full((1, 3, 64, 64), 0.45)
    bar[..., 28:36] = 0.8
    flat = torch.full((1, 3, 64, 64), 0.45)
    with torch.no_grad():
        gap = (trunk(bar)["high"] - trunk(flat)["high"]).abs().mean()
        scratch = build_trunk("mobilenetv2", 16, "none").eval()
        gap_scratch = (scratch(bar)["high"] - scratch(flat)["high"]).abs().mean()
    assert gap > 2 * gap_scratch


def test_a_damaged_offline_weights_file_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "fake_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights" / "mobilenet_v2-b0353104.pth").write_bytes(b"not the real file")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(trunks._OFFLINE, "mobilenetv2", ("fake_weights_pkg", "weights/mobilenet_v2-b0353104.pth"))
    with pytest.raises(PretrainedWeightsError, match="does not have torchvision's hash b0353104"):
        build_trunk("mobilenetv2", 16, "imagenet")


def test_output_stride_8_is_accepted_where_the_trunk_has_it():
    from hmsa.models import ModelConfig, build_model

    model = build_model(ModelConfig(trunk="mobilenetv2", output_stride=8, kind="hmsa")).eval()
    out = model.predict(torch.rand(1, 3, 64, 96), scales=(0.5, 1.0, 2.0))
    assert out["logits"].shape == (1, 19, 64, 96)
    assert model.trunk.output_stride == 8
    with pytest.raises(ValueError, match="model.output_stride: resnet18 supports 16 only"):
        ModelConfig(trunk="resnet18", output_stride=8)


def _dilated_depthwise(trunk):
    return [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1
            and m.dilation != (1, 1)]


@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv3_large"])
def test_dilated_depthwise_weight_gradient_is_right_in_cpu_bf16_channels_last(name):
    """PyTorch's CPU bf16 kernel for a dilated depthwise convolution in channels-last memory
    returned weight gradients near 1e33 on 32x32 maps (torch 2.14): the trunks' layers of that
    kind must give the fp64 gradient to bf16 precision, as the model's other layers do."""
    torch.manual_seed(0)
    layers = _dilated_depthwise(build_trunk(name, 16))
    assert layers and all(isinstance(m, trunks.DilatedDepthwiseConv2d) for m in layers)
    conv = layers[-1]
    channels = conv.in_channels
    x = torch.relu(torch.randn(2, channels, 32, 32))
    grad_out = torch.randn(2, channels, 32, 32)
    w64 = conv.weight.detach().double().requires_grad_()
    expected = torch.autograd.grad(torch.nn.functional.conv2d(x.double(), w64, None, conv.stride, conv.padding,
                                                              conv.dilation, conv.groups), w64, grad_out.double())[0]
    conv = conv.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x.contiguous(memory_format=torch.channels_last))
    (got,) = torch.autograd.grad(out, conv.weight, grad_out.contiguous(memory_format=torch.channels_last).bfloat16())
    error = float((got.double() - expected).abs().max() / expected.abs().max())
    assert error < 0.05, f"relative error of the weight gradient: {error:.3g}"
    # inference and fp32 take nn.Conv2d's own path, and give its result
    with torch.no_grad():
        plain = torch.nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        assert torch.allclose(conv(x), plain, atol=1e-5)
