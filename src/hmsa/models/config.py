"""Typed model settings: what ``model:`` in a parameters file may say."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Architecture of a segmentation model; code defaults are the paper's ablation setup."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: hmsa: hierarchical attention trained on (lo_scale, 1.0); single: no attention, trained
    #: at 1.0; explicit: Chen et al.'s softmax attention over ``explicit_scales``
    kind: Literal["hmsa", "single", "explicit"] = "hmsa"
    trunk: Literal["resnet18", "mobilenetv2", "mobilenetv3_large", "resnet50", "hrnet_w18_small", "hrnet_w48"] = "resnet50"
    #: 4 for HRNet (it keeps a stride-4 branch), 8 or 16 for the others
    output_stride: Literal[4, 8, 16] = 8
    #: deeplabv3plus (the paper's ablations) or ocr (object-contextual representations, the
    #: paper's headline model with an HRNet trunk)
    head: Literal["deeplabv3plus", "ocr"] = "deeplabv3plus"
    #: none | imagenet | path to a torchvision-style state_dict of the trunk's classifier
    pretrained: str = "none"
    num_classes: int = Field(19, ge=2)
    aspp_channels: int = Field(256, ge=8)
    aspp_rates: tuple[int, int, int] = (12, 24, 36)
    #: ASPP's global image pooling; off lets scale matter for context on small images
    aspp_pooling: bool = True
    low_level_channels: int = Field(48, ge=4)
    decoder_channels: int = Field(256, ge=8)
    aux_channels: int = Field(256, ge=8)
    ocr_mid_channels: int = Field(512, ge=8)
    ocr_key_channels: int = Field(256, ge=8)
    attn_channels: int = Field(256, ge=8)
    attn_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lo_scale: float = Field(0.5, gt=0.0, lt=1.0)
    explicit_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    #: chen: softmax weights over the scales (Chen et al.); authors: unnormalised weights, no
    #: auxiliary head (the HMSA authors' explicit baseline)
    explicit_head: Literal["chen", "authors"] = "chen"
    #: width of the explicit-attention head; null: attn_channels (the authors' is 512)
    explicit_channels: int | None = Field(None, ge=8)
    #: the DeepLabV3+ auxiliary head on the trunk's last features; false builds none (the
    #: authors' DeepLabV3+ model). A role's trainer.aux_weight of 0 sets it false
    aux_head: bool = True

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.trunk.startswith("hrnet") != (self.output_stride == 4):
            raise ValueError(
                f"model.output_stride: {self.output_stride} does not fit {self.trunk}; HRNet trunks have 4, the others 8 or 16"
            )
        if self.trunk in ("resnet18", "mobilenetv3_large") and self.output_stride != 16:
            raise ValueError(f"model.output_stride: {self.trunk} supports 16 only")
        if 1.0 not in self.explicit_scales or min(self.explicit_scales) <= 0:
            raise ValueError(f"model.explicit_scales must be positive and contain 1.0, got {self.explicit_scales}")
        return self

    @property
    def builds_aux_head(self) -> bool:
        """Whether the model has a DeepLabV3+ auxiliary head: OCR's soft object regions take its
        place, and the authors' explicit baseline and ``aux_head: false`` have none."""
        authors_explicit = self.kind == "explicit" and self.explicit_head == "authors"
        return self.head == "deeplabv3plus" and self.aux_head and not authors_explicit

    @property
    def val_scales(self) -> tuple[float, ...]:
        """The scales of the per-epoch validation: 1.0, or all of explicit attention's scales
        (it cannot run on fewer)."""
        return self.train_scales if self.kind == "explicit" else (1.0,)

    @property
    def train_scales(self) -> tuple[float, ...]:
        """The scales one training step runs the network at."""
        if self.kind == "hmsa":
            return (self.lo_scale, 1.0)
        if self.kind == "explicit":
            return tuple(sorted(self.explicit_scales))
        return (1.0,)
