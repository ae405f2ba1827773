"""Nodes of the data_ingestion pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from hmsa.mlops import provenance
from hmsa.project.config import parse_block
from hmsa.data import cityscapes, ingest, report, sources
from hmsa.data.config import DataConfig
from hmsa.data.labels import label_set
from hmsa.runtime.jobs import default_workers

log = logging.getLogger(__name__)


def _config(data: dict) -> DataConfig:
    return parse_block("data", data)


def _workers(cfg: DataConfig) -> int:
    return cfg.workers or default_workers()


def prepare_raw_data(data: dict, paths: dict | None = None) -> dict[str, Any]:
    """Generate SynthCity when it is the source (if absent or stale), convert Mapillary, or
    check the given Cityscapes root; return where the raw tree is, what it is, and its DVC hash."""
    cfg = _config(data)
    root = cfg.root(parse_block("paths", paths))
    generated = sources.prepare(cfg, root, _workers(cfg))
    return {"source": cfg.source, "root": str(root), "labels": cfg.labels, "generated": generated,
            "dvc_md5": provenance.dvc_hash(root) if cfg.hash_raw_data else None}


def ingest_raw_data(
    raw_data_info: dict[str, Any], data: dict
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Index and check every file; return manifest, class pixel counts, centroids, skipped
    files, and ``raw_data_info`` itself (so that it is saved only for a tree that passed)."""
    cfg = _config(data)
    root = Path(raw_data_info["root"])
    index = cityscapes.index_tree(root, cfg.used_splits)
    spec = ingest.CentroidSpec(*cfg.centroid_grid, min_pixels=cfg.centroid_min_pixels)
    labels = label_set(raw_data_info.get("labels", "cityscapes"))
    result = ingest.check_tree(root, index, spec, workers=_workers(cfg), labels=labels,
                               max_pixels=cfg.max_image_pixels)
    result, skipped = ingest.apply_bad_file_policy(result, index, root, cfg.on_bad_file, list(cfg.used_splits))
    log.info("Ingested %d label files of %d images from %s (%d skipped)",
             len(result.manifest), result.manifest["image_id"].nunique(), root, len(skipped))
    return result.manifest, result.class_pixels, result.centroids, skipped, raw_data_info


def class_frequency(class_pixel_counts: pd.DataFrame) -> pd.DataFrame:
    """Class frequency table of the data report."""
    return report.class_frequency(class_pixel_counts)


def plot_class_frequency(class_frequency: pd.DataFrame) -> Figure:
    """Class frequency picture of the data report."""
    return report.plot_class_frequency(class_frequency)


def ingestion_metrics(
    image_manifest: pd.DataFrame, skipped_files: pd.DataFrame, class_frequency: pd.DataFrame
) -> tuple[dict, dict]:
    """The headline for DVC's metrics file, and every figure for MLflow."""
    return report.ingestion_metrics(image_manifest, skipped_files, class_frequency)
