"""The segmentation model: one shared network run at several scales, and its fusion.

``Segmenter`` covers the paper's model and its baselines on the same trunk and heads:

- ``hmsa``: trunk -> seg_head (DeepLabV3+, or OCR) + auxiliary logits (``aux_head``, or
  OCR's soft object regions) + attn_head; trained on (lo_scale, 1.0)
  with the hierarchical blend; at inference any list of scales;
- ``single``: no attention; trained at 1.0; at inference single scale, average or max;
- ``explicit``: Chen et al.'s attention over a fixed set of scales it is trained on.

Images go in as float tensors in [0, 1], shape (B, 3, H, W); normalisation is inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hmsa.models import fusion
from hmsa.models.config import ModelConfig
from hmsa.models.fusion import Fused, ScaleOutput
from hmsa.models.heads import (
    AttentionHead,
    AuxHead,
    DeepLabV3PlusHead,
    OCRHead,
    ScaleAttentionHead,
    resize,
    scaled_size,
)
from hmsa.models.trunks import build_trunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(nn.Module):
    """Trunk, heads and multi-scale logic of one model (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = build_trunk(cfg.trunk, cfg.output_stride, cfg.pretrained)
        if cfg.head == "ocr":
            self.seg_head = OCRHead(self.trunk.high_channels, cfg.num_classes, cfg.ocr_mid_channels, cfg.ocr_key_channels)
            self.aux_head = None  # OCR's soft object regions are its auxiliary output
        else:
            self.seg_head = DeepLabV3PlusHead(
                self.trunk.low_channels, self.trunk.high_channels, cfg.num_classes, cfg.aspp_channels,
                cfg.aspp_rates, cfg.aspp_pooling, cfg.low_level_channels, cfg.decoder_channels,
            )
            self.aux_head = (AuxHead(self.trunk.high_channels, cfg.num_classes, cfg.aux_channels)
                             if cfg.builds_aux_head else None)
        self.attn_head = (
            AttentionHead(self.seg_head.out_channels, cfg.attn_channels, cfg.attn_dropout) if cfg.kind == "hmsa" else None
        )
        self.scale_attn_head = (
            ScaleAttentionHead(self.seg_head.out_channels, len(cfg.train_scales),
                               cfg.explicit_channels or cfg.attn_channels, cfg.explicit_head)
            if cfg.kind == "explicit" else None
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ one scale
    def run_scale(self, images: torch.Tensor, scale: float) -> dict[str, torch.Tensor | None]:
        """The network on ``images`` resized by ``scale``: logits and attention at stride 4,
        auxiliary logits at the output stride (None without an auxiliary head), and the decoder
        features."""
        x = resize(images, scaled_size(images.shape[-2:], scale)) if scale != 1.0 else images
        x = (x - self.mean) / self.std
        feats = self.trunk(x)
        decoded, aux = self.seg_head.decode(feats)
        if aux is None and self.aux_head is not None:
            aux = self.aux_head(feats["high"])
        return {
            "logits": self.seg_head(decoded),
            "aux": aux,
            "attn": self.attn_head(decoded) if self.attn_head is not None else None,
            "features": decoded,
        }

    def _fused(self, outs: dict[float, dict], key: str, rule: str, size, weights=None,
               above_one: str = "image_size") -> torch.Tensor:
        items = [ScaleOutput(s, o[key], o["attn"]) for s, o in outs.items()]
        return fusion.fuse(rule, items, size, weights, above_one)

    def _scale_weights(self, outs: dict[float, dict]) -> torch.Tensor:
        size = outs[1.0]["features"].shape[-2:]
        return self.scale_attn_head([resize(o["features"], size) for o in outs.values()])

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor) -> dict:
        """A training step's outputs: joint and auxiliary logits (a multi-scale model's as a
        ``fusion.Fused`` at the crop size, which the loss computes; a single-scale model's
        at its own resolution), the per-scale logits at stride 4 of their scale (for
        per-scale supervision) and the attention maps."""
        size = tuple(images.shape[-2:])
        outs = {s: self.run_scale(images, s) for s in self.cfg.train_scales}
        if self.cfg.kind == "single":
            joint, aux = outs[1.0]["logits"], outs[1.0]["aux"]
        else:
            rule = "hierarchical" if self.cfg.kind == "hmsa" else "explicit"
            weights = self._scale_weights(outs) if rule == "explicit" else None
            joint, aux = (Fused(rule, [ScaleOutput(s, o[key], o["attn"]) for s, o in outs.items()], size, weights)
                          if outs[1.0][key] is not None else None for key in ("logits", "aux"))
        return {
            "joint": joint,
            "aux": aux,
            "per_scale": {s: o["logits"] for s, o in outs.items()} if len(outs) > 1 else {},
            "attention": {s: o["attn"] for s, o in outs.items() if o["attn"] is not None},
        }

    # ------------------------------------------------------------------ inference
    def default_fusion(self) -> str:
        """hierarchical for HMSA, explicit for explicit attention, average otherwise."""
        return {"hmsa": "hierarchical", "explicit": "explicit", "single": "average"}[self.cfg.kind]

    def scale_outputs(self, images: torch.Tensor, scales: Sequence[float]) -> dict[float, dict]:
        """``run_scale`` for each scale: the per-scale outputs every fusion rule works from."""
        return {float(s): self.run_scale(images, s) for s in scales}

    def fuse_outputs(self, outs: dict[float, dict], rule: str, size: Sequence[int],
                     above_one: str = "image_size") -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
        """Fused logits at ``size`` (the images' size) and each scale's attention (at stride 4
        of its scale), from ``scale_outputs``; ``above_one`` as in ``fusion.fuse``."""
        weights = self._scale_weights(outs) if rule == "explicit" else None
        attn = {s: o["attn"] for s, o in outs.items() if o["attn"] is not None}
        return self._fused(outs, "logits", rule, size, weights, above_one), attn

    def check_fusion(self, rule: str, scales: Sequence[float]) -> tuple[float, ...]:
        """The scales to run for ``rule``; a clear error when the rule does not fit this model."""
        scales = fusion.check_scales(scales)
        if rule not in fusion.FUSIONS:
            raise ValueError(f"fusion: unknown rule {rule!r}; choose one of {fusion.FUSIONS}")
        if rule == "hierarchical" and self.attn_head is None:
            raise ValueError(f"hierarchical fusion needs an HMSA model; this one is '{self.cfg.kind}'")
        if rule == "explicit":
            if self.scale_attn_head is None:
                raise ValueError(f"explicit fusion needs an explicit-attention model; this one is '{self.cfg.kind}'")
            if tuple(sorted(scales)) != self.cfg.train_scales:
                raise ValueError(
                    f"explicit attention works only on the scales it was trained on, {list(self.cfg.train_scales)}; "
                    f"got {list(scales)}"
                )
            return self.cfg.train_scales
        return scales

    def _predict_once(self, images: torch.Tensor, scales: tuple[float, ...], rule: str, above_one: str):
        return self.fuse_outputs(self.scale_outputs(images, scales), rule, images.shape[-2:], above_one)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                fusion_rule: str | None = None, above_one: str = "image_size") -> dict:
        """Multi-scale inference: logits at the input size and each scale's attention map.

        ``scales`` must contain 1.0. ``flip`` also runs the mirrored image and averages
        the fused logits. ``fusion_rule`` defaults to the model's own rule; ``above_one``
        says where hierarchical fusion merges scales above 1.0 (``fusion.fuse``).
        """
        rule = fusion_rule or self.default_fusion()
        scales = self.check_fusion(rule, scales)
        size = images.shape[-2:]
        logits, attn = self._predict_once(images, scales, rule, above_one)
        if flip:
            flipped, attn_f = self._predict_once(images.flip(-1), scales, rule, above_one)
            logits = (logits + flipped.flip(-1)) / 2
            attn = {s: (a + attn_f[s].flip(-1)) / 2 for s, a in attn.items()}
        return {"logits": logits, "attention": {s: resize(a, size) for s, a in attn.items()}}


def build_model(cfg: ModelConfig) -> Segmenter:
    """The model described by ``cfg``."""
    return Segmenter(cfg)


class NonFiniteOutputError(ValueError):
    """A model produced NaN or infinite logits: its weights are broken."""


def require_finite(logits: torch.Tensor, what: str) -> None:
    """Refuse NaN or infinite logits: their argmax is a meaningless map (all class 0) that would
    otherwise be scored, crowned or written as if it were a prediction."""
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        raise NonFiniteOutputError(
            f"{what}: {bad.float().mean().item():.1%} of the logits are NaN or infinite, so every prediction "
            "would be meaningless. The weights are broken (did training diverge? lower the learning rate and "
            "retrain); nothing was scored or written."
        )
