"""The training loss of section 3: main + auxiliary + per-scale supervision."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hmsa.models.fusion import Fused
from hmsa.models.heads import resize


#: the target value the loss skips: the data's trainId for "no class" (hmsa.data.labels.IGNORE_INDEX,
#: which a test keeps equal), written here so that the model needs nothing from the data side
IGNORE_INDEX = 255


class SegmentationLoss(nn.Module):
    """``CE(joint) + aux_weight*CE(aux) + scale_weight*sum_s CE(p_s)``, ignoring label 255.

    The attention gets no direct supervision. ``class_weights`` (optional, one per class)
    weigh the cross-entropy terms. Logits come at their own resolution, or as a
    ``fusion.Fused`` (the multi-scale joint and auxiliary logits); each term fuses and
    upsamples them to the label size (bilinear).

    ``aux_size`` says where the auxiliary and per-scale terms are scored: ``label`` (the
    paper's code: their logits upsampled to the label size, as the main term) or ``logits``
    (at the logits' own stride, against the labels subsampled there), which keeps the
    expensive label-size work to the one main term.

    ``recompute`` (the default) runs each term inside an activation checkpoint, so that no
    full-resolution tensor is kept for backward: the loss at the memory of its low-resolution
    inputs, for every model kind alike, at the price of computing it twice. Without it the
    label-size tensors are kept and the step is faster; loss and gradients are bit-identical
    either way.
    """

    def __init__(self, aux_weight: float = 0.4, scale_weight: float = 0.05,
                 class_weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                 recompute: bool = True, aux_size: str = "label"):
        super().__init__()
        if aux_size not in ("label", "logits"):
            raise ValueError(f"aux_loss_size: {aux_size!r} is not one of 'label', 'logits'")
        self.aux_size = aux_size
        self.aux_weight = aux_weight
        self.scale_weight = scale_weight
        self.ignore_index = ignore_index
        self.recompute = recompute
        self.register_buffer("class_weights", class_weights, persistent=False)

    def _term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the weighted mean of cross_entropy, but 0 (not 0/0 = NaN) for a batch that is all ignore
        logits = resize(logits.float(), target.shape[-2:])
        total = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                                reduction="sum")
        valid = target[target != self.ignore_index]
        count = self.class_weights[valid].sum() if self.class_weights is not None else valid.numel()
        return total / torch.clamp(torch.as_tensor(count, dtype=total.dtype, device=total.device), min=1e-12)

    def _ce(self, logits: torch.Tensor | Fused, target: torch.Tensor, side: bool = False) -> torch.Tensor:
        if side and self.aux_size == "logits":
            if isinstance(logits, Fused):
                own = next(o.logits for o in logits.outputs if o.scale == 1.0).shape[-2:]
                logits = Fused(logits.rule, logits.outputs, tuple(own), logits.weights).logits()
            return self._term(logits, subsample(target, logits.shape[-2:]))
        if isinstance(logits, Fused):
            if self.recompute and torch.is_grad_enabled():
                return checkpoint(lambda: self._term(logits.logits(), target), use_reentrant=False)
            return self._term(logits.logits(), target)
        if self.recompute and logits.requires_grad and logits.shape[-2:] != target.shape[-2:]:
            return checkpoint(self._term, logits, target, use_reentrant=False)
        return self._term(logits, target)

    def forward(self, outputs: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each part of the loss and their weighted sum (``total``)."""
        parts = {"main": self._ce(outputs["joint"], target)}
        total = parts["main"]
        if outputs["aux"] is not None and self.aux_weight:  # a model without an auxiliary head has no term
            parts["aux"] = self._ce(outputs["aux"], target, side=True)
            total = total + self.aux_weight * parts["aux"]
        if outputs["per_scale"]:
            parts["scales"] = sum(self._ce(logits, target, side=True) for logits in outputs["per_scale"].values())
            total = total + self.scale_weight * parts["scales"]
        parts["total"] = total
        return parts


def subsample(target: torch.Tensor, size) -> torch.Tensor:
    """Labels (N, H, W) at ``size``, each output pixel taking the label nearest its centre."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].to(target.dtype)


def class_balanced_weights(pixel_counts, power: float = 0.6) -> torch.Tensor:
    """(median frequency / class frequency) ** power; classes never seen get weight 0."""
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    freq = counts / counts.sum().clamp_min(1)
    seen = freq > 0
    weights = torch.zeros_like(freq)
    weights[seen] = (freq[seen].median() / freq[seen]) ** power
    return weights.float()
