"""Typed settings of data ingestion: what ``parameters_data_ingestion.yml`` may say."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hmsa.data.cityscapes import LABEL_KINDS
from hmsa.io.images import MAX_IMAGE_PIXELS
from hmsa.data.mapillary import MapillarySpec
from hmsa.data.synthetic import SynthCitySpec

if TYPE_CHECKING:  # the paths block is the Kedro project's; only its folders are read here
    from hmsa.project.config import PathsConfig


class DataConfig(BaseModel):
    """Where the raw Cityscapes-layout tree comes from and how it is checked.

    synthetic: SynthCity, generated into ``paths.synthcity``; cityscapes: a Cityscapes tree;
    mapillary: Mapillary Vistas, converted into ``paths.mapillary`` first (``hmsa.data.mapillary``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synthetic", "cityscapes", "mapillary"] = "synthetic"
    cityscapes_root: str | None = None
    synthetic: SynthCitySpec = Field(default_factory=SynthCitySpec)
    mapillary_root: str | None = None
    mapillary: MapillarySpec = Field(default_factory=MapillarySpec)
    #: split -> label kinds it must have; a split set to null is left out (an environment
    #: drops a split of conf/base that way)
    splits: dict[str, list[str] | None] = Field(
        default_factory=lambda: {"train": ["fine"], "val": ["fine"], "train_extra": ["coarse"]}
    )
    on_bad_file: Literal["fail", "skip"] = "fail"
    workers: int = Field(0, ge=0, description="processes; 0 = every core this process may use")
    centroid_grid: tuple[int, int] = (2, 4)
    centroid_min_pixels: int = Field(4, ge=1)
    hash_raw_data: bool = True
    #: images and labels over this many pixels are refused from their header, before decoding
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.source == "cityscapes" and not self.cityscapes_root:
            raise ValueError(
                "data.cityscapes_root must be set when data.source is 'cityscapes': "
                "the folder that holds leftImg8bit/, gtFine/ and gtCoarse/. With --env cityscapes, "
                "set the environment variable CITYSCAPES_DATASET to it (export CITYSCAPES_DATASET=/path/to/cityscapes)"
            )
        if self.source == "mapillary" and not self.mapillary_root:
            raise ValueError(
                "data.mapillary_root must be set when data.source is 'mapillary': the folder that holds training/ "
                "and validation/. With --env mapillary, set the environment variable MAPILLARY_DATASET to it "
                "(export MAPILLARY_DATASET=/path/to/mapillary-vistas)"
            )
        if not self.used_splits:
            raise ValueError("data.splits must name at least one split")
        for split, kinds in self.used_splits.items():
            bad = [k for k in kinds if k not in LABEL_KINDS]
            if bad or not kinds:
                raise ValueError(
                    f"data.splits.{split}: label kinds must be a non-empty list of {list(LABEL_KINDS)}, got {kinds}"
                )
        if min(self.centroid_grid) < 1:
            raise ValueError(f"data.centroid_grid must be two positive integers, got {self.centroid_grid}")
        return self

    @property
    def used_splits(self) -> dict[str, list[str]]:
        """``splits`` without the splits set to null."""
        return {split: kinds for split, kinds in self.splits.items() if kinds is not None}

    @property
    def labels(self) -> str:
        """The label set of the source's label PNGs."""
        return "mapillary" if self.source == "mapillary" else "cityscapes"

    def root(self, paths: PathsConfig) -> Path:
        """The root of the Cityscapes-layout tree that ingestion reads."""
        return Path({"cityscapes": self.cityscapes_root, "mapillary": paths.mapillary}.get(self.source, paths.synthcity))
