"""Typed evaluation settings: what ``evaluation:`` in a parameters file may say."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hmsa.models.fusion import ABOVE_ONE, FUSIONS, check_scales

#: the models the evaluation can read from the catalog: teacher, student, and the student's baselines
MODEL_NAMES = ("teacher", "student", "student_single", "student_explicit", "student_human")


class EvaluationConfig(BaseModel):
    """Which models, on which split, over which grid of scale sets, fusion rules and flips."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = "val"
    #: "all": every model present in the catalog; or a list of MODEL_NAMES (missing ones are an error)
    models: Literal["all"] | list[Literal[MODEL_NAMES]] = "all"  # type: ignore[valid-type]
    scale_sets: list[tuple[float, ...]] = Field(
        default_factory=lambda: [(1.0,), (0.5, 1.0, 2.0), (0.25, 0.5, 1.0, 2.0)], min_length=1)
    #: rules that do not apply to a model are skipped (hierarchical: HMSA only; explicit:
    #: explicit-attention models, on their training scales only)
    fusions: list[Literal[FUSIONS]] = Field(default_factory=lambda: list(FUSIONS), min_length=1)  # type: ignore[valid-type]
    flip: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    #: where hierarchical fusion merges scales above 1.0: image_size, or own_size (the authors')
    fuse_above_one: Literal[ABOVE_ONE] = "image_size"  # type: ignore[valid-type]
    batch_size: int = Field(2, ge=1)
    #: 0 = the whole split
    max_images: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: inference precision and memory layout: auto follows hmsa.runtime.device's rule
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    #: val images shown in the attention and overlay pictures
    pictures: int = Field(3, ge=1)
    #: the registry alias put on each registered model's best-scoring version
    champion_alias: str = Field("champion", min_length=1)
    progress_bar: bool = True

    @field_validator("channels_last", mode="before")
    @classmethod
    def _on_off(cls, value):
        # YAML 1.1 and OmegaConf's --params read a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("scale_sets")
    @classmethod
    def _scale_sets(cls, value: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
        out = []
        for scales in value:
            try:
                out.append(tuple(sorted(check_scales(scales))))
            except ValueError as err:
                raise ValueError(f"{err} (in scale set {list(scales)})") from None
        return list(dict.fromkeys(out))
