"""HRNetV2 trunks and the OCR head: shapes, sizes, weight loading, and OCR's properties."""

import pytest
import torch

from hmsa.models.config import ModelConfig
from hmsa.models.heads import OCRHead, object_representations
from hmsa.models.hrnet import build_hrnet
from hmsa.models.loss import SegmentationLoss
from hmsa.models.segmenter import build_model
from hmsa.models.trunks import PretrainedWeightsError, build_trunk

SMALL_OCR = dict(trunk="hrnet_w18_small", output_stride=4, head="ocr", ocr_mid_channels=32, ocr_key_channels=16,
                 attn_channels=16)


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_hrnet_w18_small_keeps_stride_4_and_concatenates_its_branches():
    trunk = build_trunk("hrnet_w18_small", 4).eval()
    feats = trunk(torch.rand(2, 3, 64, 96))
    assert feats["high"].shape == (2, 18 + 36 + 72 + 144, 16, 24)
    assert trunk.high_channels == 270 and trunk.output_stride == 4
    # odd sizes: the branches are brought back to the stride-4 size, whatever the rounding
    assert trunk(torch.rand(1, 3, 70, 90))["high"].shape[-2:] == (18, 23)


def test_hrnet_w48_has_the_published_width_and_size():
    with torch.device("meta"):
        trunk = build_hrnet("hrnet_w48")
    assert trunk.high_channels == 48 + 96 + 192 + 384
    # HRNetV2-W48 without its classification head: about 65 M parameters
    assert 64 < _params(trunk) < 67


def test_hrnet_loads_a_classification_checkpoint_and_ignores_its_head(tmp_path):
    torch.manual_seed(0)
    reference = build_hrnet("hrnet_w18_small")
    state = reference.state_dict()
    state["classifier.weight"] = torch.zeros(1000, 2048)  # the ImageNet network's own tensors
    state["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 18, 1, 1)
    torch.save(state, tmp_path / "hrnet.pth")
    trunk = build_trunk("hrnet_w18_small", 4, str(tmp_path / "hrnet.pth"))
    assert torch.equal(trunk.stage4[1].fuse_layers[3][0][2][0].weight, reference.stage4[1].fuse_layers[3][0][2][0].weight)
    del state["transition3.3.0.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(PretrainedWeightsError, match="1 missing tensors"):
        build_trunk("hrnet_w18_small", 4, str(tmp_path / "partial.pth"))


def test_hrnet_imagenet_says_where_to_get_weights():
    with pytest.raises(PretrainedWeightsError, match="set model.pretrained to its path"):
        build_trunk("hrnet_w48", 4, "imagenet")


def test_hrnet_needs_output_stride_4():
    with pytest.raises(ValueError, match="output_stride: 8 does not fit hrnet_w48"):
        ModelConfig(trunk="hrnet_w48", output_stride=8)
    with pytest.raises(ValueError, match="output_stride: 4 does not fit resnet50"):
        ModelConfig(trunk="resnet50", output_stride=4)


def test_object_representations_are_region_weighted_means():
    torch.manual_seed(1)
    pixels = torch.randn(2, 5, 4, 6)
    logits = torch.randn(2, 3, 4, 6)
    got = object_representations(pixels, logits)
    for b in range(2):
        for k in range(3):
            weights = torch.exp(logits[b, k]) / torch.exp(logits[b, k]).sum()
            expected = (pixels[b] * weights).sum(dim=(1, 2))
            torch.testing.assert_close(got[b, :, k], expected)
    # a sharp region is the plain mean of its pixels
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1:3, 2:5] = True
    sharp = torch.where(mask, 50.0, -50.0).expand(1, 1, 4, 6)
    torch.testing.assert_close(object_representations(pixels[:1], sharp)[0, :, 0], pixels[0][:, mask].mean(dim=1))


def test_ocr_context_does_not_depend_on_where_pixels_are():
    """Gathering and distributing go through the objects only: permuting the pixels
    permutes the augmented representation the same way."""
    torch.manual_seed(2)
    head = OCRHead(cin=8, num_classes=4, mid=12, key=6).eval()
    pixels, logits = torch.randn(1, 12, 5, 7), torch.randn(1, 4, 5, 7)
    order = torch.randperm(35)

    def permute(x):
        return x.flatten(2)[..., order].reshape(x.shape)

    torch.testing.assert_close(head.contextual(permute(pixels), permute(logits)), permute(head.contextual(pixels, logits)))


def test_ocr_head_outputs_and_its_auxiliary_loss():
    torch.manual_seed(3)
    head = OCRHead(cin=8, num_classes=4, mid=12, key=6)
    decoded, aux = head.decode({"high": torch.randn(2, 8, 5, 7)})
    assert decoded.shape == (2, 12, 5, 7) and head(decoded).shape == aux.shape == (2, 4, 5, 7)
    aux.sum().backward()
    assert head.soft_regions[1].weight.grad.abs().sum() > 0


def test_hrnet_ocr_hmsa_trains_and_predicts_on_any_scales():
    torch.manual_seed(4)
    model = build_model(ModelConfig(**SMALL_OCR, num_classes=5))
    assert model.aux_head is None and model.attn_head.body[0][0].in_channels == 32  # attention reads OCR's features
    images, target = torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    outputs = model(images)
    parts = SegmentationLoss(aux_weight=0.4)(outputs, target)
    torch.testing.assert_close(parts["total"], parts["main"] + 0.4 * parts["aux"] + 0.05 * parts["scales"])
    parts["total"].backward()
    assert model.seg_head.soft_regions[0][0].weight.grad.abs().sum() > 0
    assert model.attn_head.body[0][0].weight.grad.abs().sum() > 0
    model.eval()
    result = model.predict(images, scales=(0.25, 0.5, 1.0, 2.0), flip=True)
    assert result["logits"].shape == (2, 5, 64, 64) and sorted(result["attention"]) == [0.25, 0.5, 1.0, 2.0]
