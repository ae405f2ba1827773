"""The ``auto_labeling:`` parameter block."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hmsa.autolabel.refinement import Refinement
from hmsa.models.fusion import ABOVE_ONE
from hmsa.data.labels import LABEL_SETS, LabelSet


class AutoLabelConfig(BaseModel):
    """What ``auto_labeling:`` in a parameters file may say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: catalog: the teacher.model bundle; or an MLflow model URI such as models:/hmsa-teacher@newest
    teacher: str = "catalog"
    splits: list[str] = Field(default_factory=lambda: ["train_extra"])
    scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    flip: bool = False
    threshold: float = Field(0.9, ge=0.0, le=1.0)
    #: fixed: ``threshold`` for every class (the paper's rule); per_class: each class's lowest
    #: threshold at which the teacher's predictions on ``calibration_split`` are ``target_accuracy`` right
    threshold_rule: Literal["fixed", "per_class"] = "fixed"
    target_accuracy: float = Field(0.98, gt=0.0, le=1.0)
    calibration_split: str = "val"
    merge_human_coarse: bool = False
    #: class names of the data set's label set (checked against it in :meth:`refinement`)
    union_classes: list[str] = Field(default_factory=lambda: ["truck", "bus", "train"])
    #: threshold_first: a human union region keeps its label where the teacher is unsure;
    #: union_first: the authors' order (the union region is thresholded too)
    union_order: Literal["threshold_first", "union_first"] = "threshold_first"
    border: int = Field(0, ge=0)
    #: [top, bottom, left, right], fractions of the image: pixels outside become ignore (null: none)
    keep_box: tuple[float, float, float, float] | None = None
    #: where the teacher's hierarchical fusion merges scales above 1.0 (hmsa.models.fusion)
    fuse_above_one: Literal[ABOVE_ONE] = "image_size"  # type: ignore[valid-type]
    batch_size: int = Field(4, ge=1)
    readers: int = Field(1, ge=0)
    writers: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: inference precision and memory layout: auto follows hmsa.runtime.device's rule
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    sweep_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    panels: int = Field(4, ge=0)
    progress_bar: bool = True

    @field_validator("channels_last", mode="before")
    @classmethod
    def _on_off(cls, value):
        # YAML 1.1 and OmegaConf's --params read a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "AutoLabelConfig":
        from hmsa.models.fusion import check_scales

        check_scales(self.scales)
        # the data set (and so its label set) is not known here: a name no label set has is a
        # typo caught now, one the data set lacks is caught by refinement() before labelling
        known = {name for labels in LABEL_SETS.values() for name in labels.class_names}
        unknown = [n for n in self.union_classes if n not in known]
        if unknown:
            raise ValueError(f"union_classes: {unknown} are not classes of any label set ({', '.join(LABEL_SETS)}); "
                             "e.g. Cityscapes' truck, bus, train")
        if self.teacher != "catalog" and not self.teacher.startswith(("models:/", "runs:/")):
            raise ValueError(f"teacher must be 'catalog' or an MLflow model URI (models:/NAME@ALIAS), got {self.teacher!r}")
        return self

    def refinement(self, labels: LabelSet, class_thresholds=None) -> Refinement:
        """The labelling rules of these settings for the classes of ``labels`` (with
        ``class_thresholds``, one per class, under ``per_class``)."""
        ids = labels.train_ids_of(self.union_classes, "auto_labeling.union_classes")
        per_class = None
        if self.threshold_rule == "per_class":
            if class_thresholds is None:
                raise ValueError("auto_labeling.threshold_rule per_class needs the thresholds calibrated on "
                                 f"'{self.calibration_split}' (the auto_label_thresholds table)")
            per_class = tuple(float(t) for t in class_thresholds)
            if len(per_class) != labels.num_classes:
                raise ValueError(f"auto_label_thresholds: {len(per_class)} thresholds for the {labels.num_classes} "
                                 f"classes of the {labels.name} label set: calibrate again (node label_thresholds)")
        return Refinement(self.threshold, self.merge_human_coarse, ids, self.border, per_class,
                          self.union_order == "union_first", self.keep_box)
