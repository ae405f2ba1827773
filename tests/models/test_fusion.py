import pytest
import torch

from hmsa.models import fusion
from hmsa.models.fusion import ScaleOutput
from hmsa.models.heads import resize


def const(value: float, size: int, channels: int = 1) -> torch.Tensor:
    return torch.full((1, channels, size, size), value)


def test_recurrence_matches_a_hand_computed_example():
    # p_2.0 = 1, p_1.0 = 2 with a_1.0 = 0.25, p_0.5 = 4 with a_0.5 = 0.5:
    # pred = 1 -> 0.25*2 + 0.75*1 = 1.25 -> 0.5*4 + 0.5*1.25 = 2.625
    outputs = [
        ScaleOutput(0.5, const(4.0, 2), const(0.5, 2)),
        ScaleOutput(2.0, const(1.0, 8), const(0.9, 8)),  # the highest scale's attention is never used
        ScaleOutput(1.0, const(2.0, 4), const(0.25, 4)),
    ]
    fused = fusion.hierarchical(outputs, (4, 4))
    assert fused.shape == (1, 1, 4, 4)
    assert torch.allclose(fused, torch.full_like(fused, 2.625))


def test_two_scales_blend_at_each_scales_own_input_size():
    # section 3: joint = U(a * p_0.5) + (1 - U(a)) * p_1.0, the product taken at the 0.5 input size
    torch.manual_seed(0)
    p_lo, p_hi, a = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 8), torch.rand(1, 1, 4, 4)
    fused = fusion.hierarchical([ScaleOutput(1.0, p_hi), ScaleOutput(0.5, p_lo, a)], (8, 8))
    assert torch.allclose(fused, resize(a * p_lo, (8, 8)) + (1 - resize(a, (8, 8))) * p_hi)
    # outputs at the output stride (stride 4 here) are first upsampled to their scale's input size
    small = fusion.hierarchical([ScaleOutput(1.0, p_hi[..., ::4, ::4]), ScaleOutput(0.5, p_lo[..., ::4, ::4],
                                                                                   a[..., ::4, ::4])], (8, 8))
    lo, att, hi = resize(p_lo[..., ::4, ::4], (4, 4)), resize(a[..., ::4, ::4], (4, 4)), resize(p_hi[..., ::4, ::4], (8, 8))
    assert small.shape == (1, 3, 8, 8)
    assert torch.allclose(small, resize(att * lo, (8, 8)) + (1 - resize(att, (8, 8))) * hi)


def _runs(row: torch.Tensor) -> int:
    """Runs of 1s in a 0/1 row."""
    return int((row[1:] > row[:-1]).sum() + row[0])


def test_what_only_the_largest_scale_resolves_survives_the_fusion():
    # two thin stripes of class 1, one pixel apart, that only the 2.0 pass resolves; the
    # 1.0 and 0.5 attention hand them to 2.0 (a = 0). Fused at the output size they stay
    # two; fused at the output stride of the 1.0 scale, they would merge into one.
    size = (16, 16)
    p_2 = torch.zeros(1, 2, 8, 8)  # stride 4 of the 2.0 input (32 x 32)
    p_2[0, 0] = 0.3
    p_2[0, 1, :, 2] = p_2[0, 1, :, 4] = 1.0
    outputs = [ScaleOutput(2.0, p_2), ScaleOutput(1.0, torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)),
               ScaleOutput(0.5, torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))]
    fused = fusion.hierarchical(outputs, size)
    assert torch.allclose(fused, resize(p_2, size))
    assert _runs(fused.argmax(1)[0, 0]) == 2
    assert _runs(resize(resize(p_2, (4, 4)), size).argmax(1)[0, 0]) == 1


def test_average_and_max_at_the_output_size():
    outputs = [ScaleOutput(1.0, const(2.0, 4, 2)), ScaleOutput(0.5, const(4.0, 2, 2)), ScaleOutput(2.0, const(-3.0, 8, 2))]
    assert torch.allclose(fusion.average(outputs, (4, 4)), const(1.0, 4, 2))
    assert torch.allclose(fusion.maximum(outputs, (4, 4)), const(4.0, 4, 2))


def test_explicit_weights_scales_in_order():
    outputs = [ScaleOutput(0.5, const(4.0, 2)), ScaleOutput(1.0, const(2.0, 4))]
    weights = torch.cat([const(0.25, 4), const(0.75, 4)], dim=1)
    assert torch.allclose(fusion.explicit(outputs, weights, (4, 4)), const(0.25 * 4 + 0.75 * 2, 4))


@pytest.mark.parametrize("scales, message", [
    ([0.5, 2.0], "1.0 must be in the list"), ([], "empty"), ([1.0, 0.0], "> 0"), ([1.0, -0.5], "> 0"),
    ([1.0, 1.0], "once"),
])
def test_bad_scale_lists_are_clear_errors(scales, message):
    with pytest.raises(ValueError, match=message):
        fusion.check_scales(scales)


def test_unknown_rule_and_missing_attention():
    with pytest.raises(ValueError, match="unknown rule"):
        fusion.fuse("median", [ScaleOutput(1.0, const(1.0, 2))], (2, 2))
    with pytest.raises(ValueError, match="needs attention"):
        fusion.hierarchical([ScaleOutput(1.0, const(1.0, 2)), ScaleOutput(0.5, const(1.0, 1))], (2, 2))


def _authors_recurrence(outputs, size):
    """The authors' n-scale recurrence written out independently: every scale's logits and
    attention upsampled to its own input size; from the highest scale down, a scale >= 1
    blends at its own size (the running result resized to it), a scale < 1 blends at the
    running result's size."""
    import torch.nn.functional as F

    def up(x, hw):
        return x if tuple(x.shape[-2:]) == hw else F.interpolate(x, size=hw, mode="bilinear", align_corners=False)

    pred = None
    for s in sorted(outputs, reverse=True):
        logits, attn = outputs[s]
        own = (round(size[0] * s), round(size[1] * s))
        logits = up(logits, own)
        if pred is None:
            pred = logits
            continue
        attn = up(attn, own)
        if s >= 1.0:
            pred = attn * logits + (1 - attn) * up(pred, own)
        else:
            here = tuple(pred.shape[-2:])
            pred = up(attn * logits, here) + (1 - up(attn, here)) * pred
    return pred


@pytest.mark.parametrize("scales", [(0.5, 1.0, 2.0), (0.5, 1.0, 1.5, 2.0), (1.0, 1.5)])
def test_fusion_at_the_scales_own_size_is_the_authors_recurrence(scales):
    torch.manual_seed(0)
    size = (16, 24)
    outputs = {s: (torch.randn(1, 3, *(round(d * s / 4) for d in size)), torch.rand(1, 1, *(round(d * s / 4) for d in size)))
               for s in scales}
    items = [ScaleOutput(s, p, a) for s, (p, a) in outputs.items()]
    own = fusion.fuse("hierarchical", items, size, above_one="own_size")
    assert own.shape == (1, 3, *size)
    assert torch.allclose(own, _authors_recurrence(outputs, size), atol=1e-6)
    image = fusion.fuse("hierarchical", items, size)  # the default: scales above 1 at the image size
    gap = (own - image).abs().max().item()
    if scales == (0.5, 1.0, 2.0):
        assert gap < 1e-5  # the paper's scale set: a factor-2 downsample of an upsample is the direct resize
    else:
        assert gap > 1e-3  # 1.5 meets another scale above 1: the two places differ


def test_an_unknown_place_for_scales_above_one_is_refused():
    with pytest.raises(ValueError, match="fuse_above_one: 'input' is not one of image_size, own_size"):
        fusion.fuse("hierarchical", [ScaleOutput(1.0, const(1.0, 4), const(0.5, 4))], (4, 4), above_one="input")
