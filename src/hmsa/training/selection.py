"""Which images a model trains and validates on: fine, human-coarse and auto-labelled rows of
the manifests, joined into the items, class counts and centroids a training run reads."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pandas as pd

from hmsa.data.ingest import KEY_COLUMNS as KEYS
from hmsa.data.labels import label_set
from hmsa.training.config import RoleConfig
from hmsa.training.data import class_pixel_totals, items_from_manifest, label_pixel_totals
from hmsa.training.run import TrainData

log = logging.getLogger(__name__)


def training_data(cfg: RoleConfig, role: str, image_manifest: pd.DataFrame, class_pixel_counts: pd.DataFrame,
                  class_centroids: pd.DataFrame, raw_data_info: dict[str, Any],
                  auto_label_manifest: pd.DataFrame | None = None, auto_labels_info: dict | None = None,
                  auto_label_centroids: pd.DataFrame | None = None) -> TrainData:
    """Fine rows of ``fine_splits`` plus the coarse images of ``coarse_splits``, labelled by
    humans (``coarse_labels: human``), by the teacher (``auto``), or left out (``none``).
    Class-uniform sampling draws from every training image with centroids. ``role`` names the
    parameter block in error messages."""
    manifest = image_manifest
    fine = manifest["split"].isin(cfg.fine_splits) & (manifest["label_kind"] == "fine")
    human = manifest["split"].isin(cfg.coarse_splits) & (manifest["label_kind"] == "coarse")
    train_rows = manifest[fine | human if cfg.coarse_labels == "human" else fine].reset_index(drop=True)
    val_rows = manifest[(manifest["split"] == cfg.val_split) & (manifest["label_kind"] == "fine")]
    root = raw_data_info["root"]
    labels = _label_set(cfg, role, raw_data_info)
    check_crop(cfg, role, manifest[fine | human])
    items = items_from_manifest(train_rows, root, labels=labels.name)
    counts = class_pixel_totals(train_rows[KEYS].merge(class_pixel_counts, on=KEYS, how="left"))
    auto_rows = None
    if cfg.coarse_labels == "auto":
        if auto_label_manifest is None or auto_labels_info is None:
            raise ValueError(f"{role}.coarse_labels=auto: only the student can train on auto-labels (after auto_labeling)")
        auto_rows = auto_label_manifest[auto_label_manifest["split"].isin(cfg.coarse_splits)]
        auto_items = items_from_manifest(auto_rows, root, "train_ids", auto_labels_info["root"])
        items += auto_items
        counts = counts + label_pixel_totals(auto_items)
    if not items:
        raise ValueError(f"{role}: no training rows for fine_splits={cfg.fine_splits}, coarse_splits={cfg.coarse_splits}")
    centroids = None
    if cfg.trainer.sampling == "class_uniform":
        centroids = _centroids(role, train_rows, class_centroids, auto_rows, auto_label_centroids)
    log.info("%s: %d training images (%d fine, coarse labels: %s), %d validation images", role, len(items),
             int(fine.sum()), cfg.coarse_labels, len(val_rows))
    listing = "\n".join(f"{i.image}|{i.label}" for i in items)
    key = f"{raw_data_info.get('dvc_md5')}:{cfg.coarse_labels}:{hashlib.sha256(listing.encode()).hexdigest()[:16]}"
    return TrainData(items, items_from_manifest(val_rows, root, labels=labels.name), counts, centroids, key)


def _label_set(cfg: RoleConfig, role: str, raw_data_info: dict[str, Any]):
    labels = label_set(raw_data_info.get("labels", "cityscapes"))
    if cfg.model.num_classes != labels.num_classes:
        raise ValueError(
            f"{role}.model.num_classes is {cfg.model.num_classes}, but the data are labelled with the "
            f"{labels.name} label set of {labels.num_classes} classes: set {role}.model.num_classes to {labels.num_classes}"
        )
    return labels


def _centroids(role: str, train_rows: pd.DataFrame, class_centroids: pd.DataFrame, auto_rows: pd.DataFrame | None,
               auto_label_centroids: pd.DataFrame | None) -> pd.DataFrame:
    """Each centroid with the index of its training item; the auto-labelled items follow the
    ``train_rows`` ones."""
    index = train_rows[KEYS].assign(item=range(len(train_rows)))
    centroids = class_centroids.merge(index, on=KEYS, how="inner")
    if auto_rows is None:
        return centroids
    if auto_label_centroids is None:
        raise ValueError(f"{role}.trainer.sampling=class_uniform with coarse_labels=auto needs "
                         "auto_label_centroids: run the auto_labeling pipeline again to write them")
    auto_index = auto_rows[["split", "image_id"]].assign(item=range(len(train_rows), len(train_rows) + len(auto_rows)))
    return pd.concat([centroids, auto_label_centroids.merge(auto_index, on=["split", "image_id"])], ignore_index=True)


def check_crop(cfg: RoleConfig, role: str, rows: pd.DataFrame) -> None:
    """A crop larger than every training image trains mostly on padding (and a huge one runs
    out of memory): refuse it before any work, naming the setting and the sizes."""
    if rows.empty or not {"height", "width"} <= set(rows.columns):
        return
    tallest, widest = int(rows["height"].max()), int(rows["width"].max())
    crop_h, crop_w = cfg.trainer.crop
    if crop_h > tallest or crop_w > widest:
        raise ValueError(
            f"{role}.trainer.crop is {crop_h} x {crop_w} (height x width), larger than every training image "
            f"(the largest is {tallest} x {widest}): the crops would be mostly padding. Set {role}.trainer.crop to at "
            f"most [{min(crop_h, tallest)}, {min(crop_w, widest)}]"
        )
