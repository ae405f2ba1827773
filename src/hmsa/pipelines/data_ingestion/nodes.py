"""Nodes of the data_ingestion pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from hmsa import provenance
from hmsa.config import parse_block
from hmsa.data import cityscapes, ingest, mapillary, report, synthetic
from hmsa.data.config import DataConfig
from hmsa.data.labels import label_set

log = logging.getLogger(__name__)


def _config(data: dict) -> DataConfig:
    return parse_block("data", data)


def _workers(cfg: DataConfig) -> int:
    return cfg.workers or ingest.default_workers()


def prepare_raw_data(data: dict, paths: dict | None = None) -> dict[str, Any]:
    """Generate SynthCity when it is the source (if absent or stale), or check the given root.

    Returns where the raw tree is and what it is: source, root, and its DVC hash.
    """
    cfg = _config(data)
    root = cfg.root(parse_block("paths", paths))
    generated = False
    if cfg.source == "synthetic":
        generated = synthetic.ensure_generated(root, cfg.synthetic, _workers(cfg))
    elif cfg.source == "mapillary":
        try:
            generated = mapillary.ensure_converted(Path(cfg.mapillary_root), root, cfg.mapillary, _workers(cfg))
        except mapillary.MapillaryError as err:
            raise ingest.DataValidationError(str(err)) from None
    elif not root.is_dir():
        raise ingest.DataValidationError(
            f"data.cityscapes_root: {root} does not exist. Set it to the folder that holds "
            "leftImg8bit/, gtFine/ and gtCoarse/ (e.g. --params data.cityscapes_root=/path/to/cityscapes, "
            "or with --env cityscapes: export CITYSCAPES_DATASET=/path/to/cityscapes)."
        )
    elif not (root / cityscapes.IMAGE_DIR).is_dir():
        raise ingest.DataValidationError(
            f"data.cityscapes_root: {root} has no {cityscapes.IMAGE_DIR}/ folder, so it is not a "
            "Cityscapes-layout tree. Point it (or CITYSCAPES_DATASET, with --env cityscapes) at the folder "
            "that holds leftImg8bit/ and gtFine/."
        )
    return {
        "source": cfg.source,
        "root": str(root),
        "labels": cfg.labels,
        "generated": generated,
        "dvc_md5": provenance.dvc_hash(root) if cfg.hash_raw_data else None,
    }


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
    """The headline for DVC's metrics file (images per split, skipped files), and for MLflow
    those figures with each split's labelled fraction and class shares (the whole table is
    class_frequency.csv)."""
    images = image_manifest.groupby("split")["image_id"].nunique()
    labelled = image_manifest.groupby(["split", "label_kind"])["labelled_fraction"].mean()
    headline = {"images": {split: int(n) for split, n in images.items()}, "skipped_files": int(len(skipped_files))}
    share = {
        f"{split}_{kind}": dict(zip(group["class_name"], group["share"].round(6)))
        for (split, kind), group in class_frequency.groupby(["split", "label_kind"])
    }
    every = {**headline, "labelled_fraction": {f"{s}_{k}": round(float(v), 6) for (s, k), v in labelled.items()},
             "class_share": share}
    flat: dict[str, dict[str, float]] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), sub)
        else:
            flat[prefix.replace(" ", "_")] = {"value": float(value), "step": 0}

    walk("", every)
    return headline, flat
