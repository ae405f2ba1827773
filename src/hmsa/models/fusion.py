"""Every rule for merging predictions made at several scales (the paper, sections 3-5).

Every rule takes each scale's outputs at the network's output stride and returns logits at
``size``, the input size of the 1.0 scale (the image size). A scale's logits and attention
are first upsampled to that scale's own input size: a scale below 1.0 forms ``a * p`` there
and then upsamples it. A scale above 1.0 is, by default (``above_one="image_size"``),
resized straight to ``size`` (its own input size and back again, without the large
intermediate tensor); ``above_one="own_size"`` fuses it at its own input size and then
downsamples, as the authors' ``nscale_forward`` does. The two agree on the paper's scale sets
([0.5, 1, 2]: a factor-2 bilinear downsample of a bilinear upsample is the direct resize) and
differ slightly where two scales above 1 meet (1.5 and 2.0). Fusing at the image size, not at
the output stride of the 1.0 scale, keeps what the larger scales see: a pole two pixels wide
that only the 2.0 pass resolves survives the fusion. Every rule gets the same treatment, so
comparisons between them stay fair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hmsa.models.heads import resize, scaled_size

FUSIONS = ("hierarchical", "average", "max", "explicit")
#: where hierarchical fusion merges a scale above 1.0: at the image size, or at its own size
ABOVE_ONE = ("image_size", "own_size")


@dataclass
class ScaleOutput:
    """The network's output for one scale: logits, and HMSA attention if it has any."""

    scale: float
    logits: torch.Tensor
    attn: torch.Tensor | None = None


@dataclass
class Fused:
    """A fusion not yet computed: ``fuse(rule, outputs, size, weights)``.

    A training step returns its joint and auxiliary logits this way, so that the loss can
    fuse and score them inside one activation checkpoint: no tensor at the crop size is kept
    for backward, and the training memory stays that of the per-scale outputs."""

    rule: str
    outputs: list[ScaleOutput]
    size: tuple[int, int]
    weights: torch.Tensor | None = None

    def logits(self) -> torch.Tensor:
        """The fused logits at ``size`` (training fuses scales up to 1.0: ``above_one`` is moot)."""
        return fuse(self.rule, self.outputs, self.size, self.weights)


#: the largest inference scale by default: the paper's largest is 2.0; memory grows with its square
DEFAULT_MAX_SCALE = 4.0


def check_scales(scales: Sequence[float], max_scale: float | None = None,
                 setting: str = "the largest scale allowed") -> tuple[float, ...]:
    """Validate a list of inference scales: positive, unique, containing 1.0, and none above
    ``max_scale`` (memory grows with the square of the largest scale; ``setting`` names the
    option that raises it)."""
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("scales: the list is empty; give at least [1.0]")
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales: every scale must be > 0, got {list(scales)}")
    if max_scale is not None and max(scales) > max_scale:
        raise ValueError(f"scales: {max(scales):g} is over {setting} ({max_scale:g}): memory grows with the square "
                         f"of the largest scale; use smaller scales, or raise {setting}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales: each scale may appear once, got {list(scales)}")
    if 1.0 not in scales:
        raise ValueError(
            f"scales: 1.0 must be in the list (the output has the 1.0 resolution), got {list(scales)}; "
            f"e.g. {sorted({*scales, 1.0})}"
        )
    return scales


def _reference(outputs: Sequence[ScaleOutput]) -> ScaleOutput:
    check_scales([o.scale for o in outputs])
    return next(o for o in outputs if o.scale == 1.0)


def _own_size(scale: float, size: Sequence[int], above_one: str = "image_size") -> tuple[int, int]:
    """Where a scale's outputs are fused: its own input size, capped at ``size`` unless
    ``above_one`` is ``own_size``."""
    if above_one not in ABOVE_ONE:
        raise ValueError(f"fuse_above_one: {above_one!r} is not one of {', '.join(ABOVE_ONE)}")
    return scaled_size(size, scale if above_one == "own_size" else min(scale, 1.0))


def hierarchical(outputs: Sequence[ScaleOutput], size: Sequence[int], above_one: str = "image_size") -> torch.Tensor:
    """HMSA's chained pairwise attention (section 4), any number of scales, any order.

    From the highest scale down, the lower scale of each adjacent pair supplies the
    attention ``a`` that weighs its own prediction against the running result:
    ``pred = a*p + (1-a)*D(pred)`` at scales >= 1 (D: resize pred to the scale's fusion
    size, see ``_own_size``), and ``pred = U(a*p) + (1-U(a))*pred`` below 1 (``a*p`` at the
    scale's own input size, U: upsample to ``size``).
    """
    _reference(outputs)
    order = sorted(outputs, key=lambda o: o.scale, reverse=True)
    pred = resize(order[0].logits, _own_size(order[0].scale, size, above_one))
    for out in order[1:]:
        if out.attn is None:
            raise ValueError(f"hierarchical fusion needs attention at scale {out.scale}: is this an HMSA model?")
        own = _own_size(out.scale, size, above_one)
        p, a = resize(out.logits, own), resize(out.attn, own)
        if out.scale >= 1.0:
            pred = a * p + (1 - a) * resize(pred, own)
        else:
            pred = resize(a * p, pred.shape[-2:]) + (1 - resize(a, pred.shape[-2:])) * pred
    return pred


def average(outputs: Sequence[ScaleOutput], size: Sequence[int]) -> torch.Tensor:
    """Mean of the logits of every scale, at ``size``."""
    _reference(outputs)
    return torch.stack([resize(o.logits, size) for o in outputs]).mean(dim=0)


def maximum(outputs: Sequence[ScaleOutput], size: Sequence[int]) -> torch.Tensor:
    """Per-class maximum of the logits over scales, at ``size``."""
    _reference(outputs)
    return torch.stack([resize(o.logits, size) for o in outputs]).amax(dim=0)


def explicit(outputs: Sequence[ScaleOutput], weights: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Chen et al.'s explicit attention: ``sum_i w_i * p_i`` with softmax weights (B, N, h, w).

    ``weights`` follow the order of ``outputs``; weights and logits are resized to ``size``.
    """
    _reference(outputs)
    if weights.shape[1] != len(outputs):
        raise ValueError(f"explicit fusion: {weights.shape[1]} weights for {len(outputs)} scales")
    weights = resize(weights, size)
    return sum(weights[:, i : i + 1] * resize(o.logits, size) for i, o in enumerate(outputs))


def fuse(rule: str, outputs: Sequence[ScaleOutput], size: Sequence[int],
         weights: torch.Tensor | None = None, above_one: str = "image_size") -> torch.Tensor:
    """Apply fusion ``rule`` (one of ``FUSIONS``); logits at ``size``, the 1.0 scale's input
    size. ``above_one`` (``ABOVE_ONE``) says where hierarchical fusion merges scales above 1."""
    size = tuple(size)
    if rule == "hierarchical":
        return hierarchical(outputs, size, above_one)
    if rule == "average":
        return average(outputs, size)
    if rule == "max":
        return maximum(outputs, size)
    if rule == "explicit":
        if weights is None:
            raise ValueError("explicit fusion needs the scale weights of an explicit-attention model")
        return explicit(outputs, weights, size)
    raise ValueError(f"fusion: unknown rule {rule!r}; choose one of {FUSIONS}")
