import urllib.error

import pytest
import torch
from torchvision import models

from hmsa.models.trunks import PretrainedWeightsError, build_trunk


@pytest.mark.parametrize("name, stride, channels", [("mobilenetv3_large", 16, (24, 960)), ("resnet18", 16, (64, 256)), ("resnet50", 8, (256, 2048)),
                                                    ("resnet50", 16, (256, 2048))])
def test_trunk_strides_and_channels(name, stride, channels):
    trunk = build_trunk(name, stride).eval()
    feats = trunk(torch.rand(1, 3, 64, 128))
    assert feats["low"].shape[1:] == (channels[0], 16, 32)
    assert feats["high"].shape[1:] == (channels[1], 64 // stride, 128 // stride)


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
