"""Nodes of the evaluation pipeline: each reads the catalog's data and makes one call to
``hmsa.evaluation``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmsa.project.config import parse_block
from hmsa.data.labels import label_set
from hmsa.evaluation import report as tables
from hmsa.evaluation import run
from hmsa.evaluation.config import EvaluationConfig

log = logging.getLogger(__name__)


def _inputs(params: dict, models: dict, image_manifest: pd.DataFrame, raw_data_info: dict[str, Any]):
    """The validated settings, the chosen models' bundles, the val rows and items, the label set."""
    cfg: EvaluationConfig = parse_block("evaluation", params)
    labels = label_set(raw_data_info.get("labels", "cityscapes"))
    rows, items = run.val_items(cfg, image_manifest, raw_data_info["root"], labels)
    return cfg, run.chosen_models(cfg, models), rows, items, labels


def evaluate(params: dict, image_manifest: pd.DataFrame, raw_data_info: dict[str, Any],
             **models: dict | None) -> tuple[pd.DataFrame, dict]:
    """Every model (``<name>.model``) over the grid: the results table and the confusion matrices."""
    cfg, bundles, _, items, labels = _inputs(params, models, image_manifest, raw_data_info)
    return run.evaluate_models(cfg, bundles, items, labels)


def report(results: pd.DataFrame) -> tuple[dict, dict, pd.DataFrame]:
    """The headline metrics for DVC, every metric for MLflow, and the best setting's per-class IoU."""
    tables.log_summary(results)
    return tables.headline(results), tables.mlflow_metrics(results), tables.per_class(results)


def fusion_plot(results: pd.DataFrame) -> Figure:
    """Per-class IoU of the best model by fusion rule."""
    return tables.fusion_plot(results)


def confusion_plot(results: pd.DataFrame, confusions: dict) -> Figure:
    """Confusion matrix of the best model at its best setting."""
    return tables.confusion_plot(results, confusions)


def prediction_pictures(params: dict, results: pd.DataFrame, image_manifest: pd.DataFrame,
                        raw_data_info: dict[str, Any], **models: dict | None) -> tuple[Figure, Figure]:
    """Attention maps and prediction overlays of the best models (rank 0 alone)."""
    if run.other_rank("the pictures"):
        return Figure(), Figure()
    cfg, bundles, _, items, labels = _inputs(params, models, image_manifest, raw_data_info)
    return run.prediction_pictures(cfg, results, bundles, items, labels)


def cityscapes_predictions(params: dict, results: pd.DataFrame, image_manifest: pd.DataFrame,
                           raw_data_info: dict[str, Any], **models: dict | None) -> dict[str, np.ndarray]:
    """The best model and setting's predictions as Cityscapes label-id PNGs: every rank predicts
    its share, rank 0 returns (and so writes) them all."""
    cfg, bundles, rows, items, labels = _inputs(params, models, image_manifest, raw_data_info)
    return run.cityscapes_predictions(cfg, results, bundles, rows, items, labels)


def set_champions(params: dict, results: pd.DataFrame, **registries: dict | None) -> dict:
    """Tag each evaluated registered version with its best val mIoU, then move the alias
    ``champion`` to the best-scoring version of each registered model (rank 0 alone)."""
    if run.other_rank("the champion alias"):
        return {}
    cfg: EvaluationConfig = parse_block("evaluation", params)
    versions = run.champion_candidates(results, registries)
    if not versions:
        log.info("evaluation: no registered model versions (MLflow off): no %s alias set", cfg.champion_alias)
        return {}
    from hmsa.mlops import tracking
    return tracking.crown(versions, cfg.champion_alias)
