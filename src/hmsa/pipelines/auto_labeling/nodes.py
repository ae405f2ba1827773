"""Nodes of the auto_labeling pipeline: each reads the catalog's data and makes one call to
``hmsa.autolabel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from hmsa.autolabel import calibration, figures, labelling, quality
from hmsa.autolabel.config import AutoLabelConfig
from hmsa.project.config import parse_block
from hmsa.data import ingest
from hmsa.data.labels import LabelSet, label_set


def _config(params: dict) -> AutoLabelConfig:
    return parse_block("auto_labeling", params)


def _labels(raw_data_info: dict[str, Any]) -> LabelSet:
    """The data set's own label set: a teacher of another data set must not get Cityscapes' table."""
    return label_set(raw_data_info.get("labels", "cityscapes"))


def label_thresholds(params: dict, teacher_model: dict, image_manifest: pd.DataFrame,
                     raw_data_info: dict[str, Any]) -> pd.DataFrame:
    """The confidence threshold of each class: ``threshold`` for all (``threshold_rule: fixed``),
    or calibrated on the fine labels of ``calibration_split`` (``per_class``)."""
    return calibration.thresholds(_config(params), teacher_model, image_manifest, raw_data_info["root"],
                                  _labels(raw_data_info))


def auto_label(params: dict, teacher_model: dict, image_manifest: pd.DataFrame,
               raw_data_info: dict[str, Any], folder: str, thresholds: pd.DataFrame | None = None
               ) -> tuple[pd.DataFrame, dict]:
    """Label every coarse image of ``splits`` into the catalog's ``auto_labels_folder`` (this
    process's share under torchrun): the manifest the student reads, and where the labels are."""
    out_dir = Path(folder)
    return labelling.label_coarse_images(_config(params), teacher_model, image_manifest, raw_data_info["root"], out_dir,
                                         _labels(raw_data_info), thresholds)


def label_centroids(auto_label_manifest: pd.DataFrame, auto_labels_info: dict, raw_data_info: dict,
                    data_params: dict) -> pd.DataFrame:
    """Class centroids of the auto-labels, on data_ingestion's grid (``data.centroid_grid``),
    ``label_kind`` "auto"."""
    data = parse_block("data", data_params)
    spec = ingest.CentroidSpec(*data.centroid_grid, min_pixels=data.centroid_min_pixels)
    return quality.centroids(auto_label_manifest, auto_labels_info["root"], spec, _labels(raw_data_info).num_classes)


def label_quality(auto_label_manifest: pd.DataFrame, auto_labels_info: dict, raw_data_info: dict,
                  params: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Figure, dict, dict]:
    """Coverage and accuracy against the held-out fine truth, human coarse labels beside them."""
    cfg = _config(params)
    q = quality.report(auto_label_manifest, raw_data_info["root"], auto_labels_info["root"], _labels(raw_data_info),
                       cfg.sweep_thresholds)
    return (q["summary"], q["per_class"], q["sweep"], figures.threshold_sweep(q["sweep"], cfg.threshold), q["metrics"],
            q["mlflow_metrics"])


def label_panels(auto_labels: dict, auto_label_manifest: pd.DataFrame, raw_data_info: dict, params: dict) -> Figure:
    """image / human coarse / auto-label / confidence, for the first few images."""
    rows = auto_label_manifest.head(max(1, _config(params).panels))
    return figures.panels(rows, raw_data_info["root"], auto_labels, _labels(raw_data_info))
