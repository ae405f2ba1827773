import pytest
import torch

from hmsa.models import fusion
from hmsa.models.fusion import ScaleOutput


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
    fused = fusion.hierarchical(outputs)
    assert fused.shape == (1, 1, 4, 4)
    assert torch.allclose(fused, torch.full_like(fused, 2.625))


def test_two_scales_blend_pixel_by_pixel():
    torch.manual_seed(0)
    p_lo, p_hi, a = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5), torch.rand(1, 1, 5, 5)
    fused = fusion.hierarchical([ScaleOutput(1.0, p_hi), ScaleOutput(0.5, p_lo, a)])
    assert torch.allclose(fused, a * p_lo + (1 - a) * p_hi)


def test_average_and_max_at_the_one_scale_resolution():
    outputs = [ScaleOutput(1.0, const(2.0, 4, 2)), ScaleOutput(0.5, const(4.0, 2, 2)), ScaleOutput(2.0, const(-3.0, 8, 2))]
    assert torch.allclose(fusion.average(outputs), const(1.0, 4, 2))
    assert torch.allclose(fusion.maximum(outputs), const(4.0, 4, 2))


def test_explicit_weights_scales_in_order():
    outputs = [ScaleOutput(0.5, const(4.0, 2)), ScaleOutput(1.0, const(2.0, 4))]
    weights = torch.cat([const(0.25, 4), const(0.75, 4)], dim=1)
    assert torch.allclose(fusion.explicit(outputs, weights), const(0.25 * 4 + 0.75 * 2, 4))


@pytest.mark.parametrize("scales, message", [
    ([0.5, 2.0], "1.0 must be in the list"), ([], "empty"), ([1.0, 0.0], "> 0"), ([1.0, -0.5], "> 0"),
    ([1.0, 1.0], "once"),
])
def test_bad_scale_lists_are_clear_errors(scales, message):
    with pytest.raises(ValueError, match=message):
        fusion.check_scales(scales)


def test_unknown_rule_and_missing_attention():
    with pytest.raises(ValueError, match="unknown rule"):
        fusion.fuse("median", [ScaleOutput(1.0, const(1.0, 2))])
    with pytest.raises(ValueError, match="needs attention"):
        fusion.hierarchical([ScaleOutput(1.0, const(1.0, 2)), ScaleOutput(0.5, const(1.0, 1))])
