"""Typed trainer settings: what ``trainer:`` in a parameters file may say."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hmsa.models.config import ModelConfig
from hmsa.mlops.serving import ServingLimits


class TrainerConfig(BaseModel):
    """How to train: length, optimiser, augmentation, sampling, precision, devices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1)
    #: if set, stop after this many iterations in total (epochs then only paces validation)
    max_iterations: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: tuple[int, int] = (256, 256)
    scale_range: tuple[float, float] = (0.5, 2.0)
    color_jitter: float = Field(0.25, ge=0.0)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    poly_power: float = Field(2.0, ge=0.0)
    aux_weight: float = Field(0.4, ge=0.0)
    scale_weight: float = Field(0.05, ge=0.0)
    #: where the aux and per-scale terms are scored: label (their logits upsampled to the label
    #: size, the paper's code) or logits (at their own stride, labels subsampled: a cheaper step)
    aux_loss_size: Literal["label", "logits"] = "label"
    #: none, or balanced: (median frequency / class frequency) ** class_weight_power
    class_weights: Literal["none", "balanced"] = "balanced"
    class_weight_power: float = Field(0.6, ge=0.0)
    #: random: every row once per epoch; class_uniform: HMSA.md section 6
    sampling: Literal["random", "class_uniform"] = "random"
    num_workers: int = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: processes for DistributedDataParallel on this machine (torchrun sets its own)
    devices: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    #: recompute the label-size loss in backward instead of keeping its tensors (activation
    #: checkpointing): less memory, a slower step, the same numbers; auto: on CUDA only
    recompute_loss: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    #: validation images (0 = all) and scale for the per-epoch val mIoU
    val_images: int = Field(0, ge=0)
    val_batch_size: int = Field(4, ge=1)
    checkpoint_dir: str = "data/06_models/checkpoints/model"
    #: continue from checkpoint_dir/last.pt when it matches this configuration
    resume: bool = True
    #: the weights a run yields: best (the epoch with the best val mIoU) or last (the last
    #: epoch: no model selection on val, for comparisons measured on val)
    keep: Literal["best", "last"] = "best"
    progress_bar: bool = True

    @field_validator("channels_last", "recompute_loss", mode="before")
    @classmethod
    def _on_off(cls, value):
        # YAML 1.1 and OmegaConf's --params read a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "TrainerConfig":
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"trainer.scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if min(self.crop) < 16:
            raise ValueError(f"trainer.crop must be at least 16x16, got {self.crop}")
        return self


#: the baselines the paper compares HMSA with. single: no attention, trained at 1.0;
#: explicit: explicit attention on model.explicit_scales; human: the same model on the
#: human coarse labels
VARIANTS = ("single", "explicit", "human")


class RoleConfig(BaseModel):
    """One trained role (teacher, student): its model, trainer, data and registry name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    fine_splits: list[str] = Field(default_factory=lambda: ["train"])
    coarse_splits: list[str] = Field(default_factory=lambda: ["train_extra"])
    #: human: Cityscapes' coarse labels; none: fine data only; auto: the teacher's auto-labels
    coarse_labels: Literal["human", "none", "auto"] = "human"
    val_split: str = "val"
    registered_model_name: str = Field(..., min_length=1)
    #: baselines (VARIANTS) trained beside this model on the same data, trunk, heads and
    #: schedule, each under its own namespace (student_single, ...)
    variants: list[Literal[VARIANTS]] = Field(default_factory=list)  # type: ignore[valid-type]
    #: what one request to the served model may ask for (logged with the model)
    serving: ServingLimits = Field(default_factory=ServingLimits)

    @model_validator(mode="before")
    @classmethod
    def _no_aux_head_without_weight(cls, data):
        # trainer.aux_weight 0 means no auxiliary loss: build no head for it either (the authors'
        # DeepLabV3+), rather than carry weights that nothing trains
        if not isinstance(data, dict):
            return data
        trainer, model = data.get("trainer"), data.get("model")
        weight = trainer.aux_weight if isinstance(trainer, TrainerConfig) else (trainer or {}).get("aux_weight", 0.4)
        if weight == 0:
            if isinstance(model, ModelConfig):
                data = {**data, "model": model.model_copy(update={"aux_head": False})}
            else:
                data = {**data, "model": {**(model or {}), "aux_head": False}}
        return data

    def variant(self, name: str) -> "RoleConfig":
        """The configuration of baseline ``name``: its own checkpoints and registered model."""
        update: dict = {
            "variants": [],
            "registered_model_name": f"{self.registered_model_name}-{name}",
            "trainer": self.trainer.model_copy(update={"checkpoint_dir": f"{self.trainer.checkpoint_dir}-{name}"}),
        }
        if name in ("single", "explicit"):
            update["model"] = self.model.model_copy(update={"kind": name})
        elif name == "human":
            update["coarse_labels"] = "human"
        else:
            raise ValueError(f"variants: unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        return self.model_copy(update=update)

