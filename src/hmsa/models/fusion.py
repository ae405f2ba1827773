"""Every rule for merging predictions made at several scales (HMSA.md sections 3-5).

All rules work on logits at the network's own output resolution and return logits at the
resolution of the 1.0 scale; the caller upsamples once to the image size. Working at
stride 4 instead of full resolution keeps fusion nearly free in time and memory, and
every rule gets the same treatment, so comparisons between them stay fair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hmsa.models.heads import resize

FUSIONS = ("hierarchical", "average", "max", "explicit")


@dataclass
class ScaleOutput:
    """The network's output for one scale: logits, and HMSA attention if it has any."""

    scale: float
    logits: torch.Tensor
    attn: torch.Tensor | None = None


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validate a list of inference scales: positive, unique, and containing 1.0."""
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("scales: the list is empty; give at least [1.0]")
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales: every scale must be > 0, got {list(scales)}")
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


def hierarchical(outputs: Sequence[ScaleOutput]) -> torch.Tensor:
    """HMSA's chained pairwise attention (section 4), any number of scales, any order.

    From the highest scale down, the lower scale of each adjacent pair supplies the
    attention ``a`` that weighs its own prediction against the running result:
    ``pred = a*p + (1-a)*D(pred)`` at scales >= 1 (D: resize pred to p's size), and
    ``pred = U(a*p) + (1-U(a))*pred`` below 1 (U: upsample to pred's size).
    """
    _reference(outputs)
    order = sorted(outputs, key=lambda o: o.scale, reverse=True)
    pred = order[0].logits
    for out in order[1:]:
        if out.attn is None:
            raise ValueError(f"hierarchical fusion needs attention at scale {out.scale}: is this an HMSA model?")
        a = resize(out.attn, out.logits.shape[-2:])
        if out.scale >= 1.0:
            pred = a * out.logits + (1 - a) * resize(pred, out.logits.shape[-2:])
        else:
            pred = resize(a * out.logits, pred.shape[-2:]) + (1 - resize(a, pred.shape[-2:])) * pred
    return pred


def average(outputs: Sequence[ScaleOutput]) -> torch.Tensor:
    """Mean of the logits of every scale, at the 1.0 resolution."""
    size = _reference(outputs).logits.shape[-2:]
    return torch.stack([resize(o.logits, size) for o in outputs]).mean(dim=0)


def maximum(outputs: Sequence[ScaleOutput]) -> torch.Tensor:
    """Per-class maximum of the logits over scales, at the 1.0 resolution."""
    size = _reference(outputs).logits.shape[-2:]
    return torch.stack([resize(o.logits, size) for o in outputs]).amax(dim=0)


def explicit(outputs: Sequence[ScaleOutput], weights: torch.Tensor) -> torch.Tensor:
    """Chen et al.'s explicit attention: ``sum_i w_i * p_i`` with softmax weights (B, N, h, w).

    ``weights`` follow the order of ``outputs``; they are resized to the 1.0 logits' size.
    """
    size = _reference(outputs).logits.shape[-2:]
    if weights.shape[1] != len(outputs):
        raise ValueError(f"explicit fusion: {weights.shape[1]} weights for {len(outputs)} scales")
    weights = resize(weights, size)
    return sum(weights[:, i : i + 1] * resize(o.logits, size) for i, o in enumerate(outputs))


def fuse(rule: str, outputs: Sequence[ScaleOutput], weights: torch.Tensor | None = None) -> torch.Tensor:
    """Apply fusion ``rule`` (one of ``FUSIONS``)."""
    if rule == "hierarchical":
        return hierarchical(outputs)
    if rule == "average":
        return average(outputs)
    if rule == "max":
        return maximum(outputs)
    if rule == "explicit":
        if weights is None:
            raise ValueError("explicit fusion needs the scale weights of an explicit-attention model")
        return explicit(outputs, weights)
    raise ValueError(f"fusion: unknown rule {rule!r}; choose one of {FUSIONS}")
