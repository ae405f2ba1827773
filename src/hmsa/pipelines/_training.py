"""Nodes and pipeline shared by teacher_training and student_training (one per role)."""

from __future__ import annotations

import hashlib
import logging
import math
from functools import partial, update_wrapper
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.pipeline import Node, Pipeline

from hmsa import tracking
from hmsa.config import parse_block
from hmsa.data.ingest import KEY_COLUMNS as KEYS
from hmsa.data.labels import label_set
from hmsa.training import run
from hmsa.training.config import RoleConfig
from hmsa.training.data import class_pixel_totals, items_from_manifest, label_pixel_totals

log = logging.getLogger(__name__)


def role_config(params: dict, role: str, paths: dict | None = None) -> RoleConfig:
    """Validate the ``teacher:`` or ``student:`` parameter block. Its checkpoints go to
    ``<paths.checkpoints>/<role>`` unless ``trainer.checkpoint_dir`` is set."""
    cfg = parse_block(role, params)
    if "checkpoint_dir" in cfg.trainer.model_fields_set:
        return cfg
    folder = Path(parse_block("paths", paths).checkpoints) / role
    return cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"checkpoint_dir": str(folder)})})


def select_training_data(params: dict, role: str, image_manifest: pd.DataFrame, class_pixel_counts: pd.DataFrame,
                         class_centroids: pd.DataFrame, raw_data_info: dict[str, Any],
                         auto_label_manifest: pd.DataFrame | None = None,
                         auto_labels_info: dict | None = None,
                         auto_label_centroids: pd.DataFrame | None = None) -> run.TrainData:
    """Fine rows of ``fine_splits`` plus the coarse images of ``coarse_splits``, labelled by
    humans (``coarse_labels: human``), by the teacher (``auto``), or left out (``none``)."""
    return training_data(role_config(params, role), role, image_manifest, class_pixel_counts, class_centroids,
                         raw_data_info, auto_label_manifest, auto_labels_info, auto_label_centroids)


def training_data(cfg: RoleConfig, role: str, image_manifest: pd.DataFrame, class_pixel_counts: pd.DataFrame,
                  class_centroids: pd.DataFrame, raw_data_info: dict[str, Any],
                  auto_label_manifest: pd.DataFrame | None = None, auto_labels_info: dict | None = None,
                  auto_label_centroids: pd.DataFrame | None = None) -> run.TrainData:
    """``select_training_data`` for a validated configuration. Class-uniform sampling draws
    from every training image with centroids: fine, human coarse, and auto-labelled ones."""
    manifest = image_manifest
    fine = manifest["split"].isin(cfg.fine_splits) & (manifest["label_kind"] == "fine")
    human = manifest["split"].isin(cfg.coarse_splits) & (manifest["label_kind"] == "coarse")
    train_rows = manifest[fine | human if cfg.coarse_labels == "human" else fine].reset_index(drop=True)
    val_rows = manifest[(manifest["split"] == cfg.val_split) & (manifest["label_kind"] == "fine")]
    root = raw_data_info["root"]
    labels = label_set(raw_data_info.get("labels", "cityscapes"))
    if cfg.model.num_classes != labels.num_classes:
        raise ValueError(
            f"{role}.model.num_classes is {cfg.model.num_classes}, but the data are labelled with the "
            f"{labels.name} label set of {labels.num_classes} classes: set {role}.model.num_classes to {labels.num_classes}"
        )
    _check_crop(cfg, role, manifest[fine | human])
    items = items_from_manifest(train_rows, root, labels=labels.name)
    counts = class_pixel_totals(train_rows[KEYS].merge(class_pixel_counts, on=KEYS, how="left"))
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
        index = train_rows[KEYS].assign(item=range(len(train_rows)))
        centroids = class_centroids.merge(index, on=KEYS, how="inner")
        if cfg.coarse_labels == "auto":  # the auto-labelled items follow the train_rows ones
            if auto_label_centroids is None:
                raise ValueError(f"{role}.trainer.sampling=class_uniform with coarse_labels=auto needs "
                                 "auto_label_centroids: run the auto_labeling pipeline again to write them")
            auto_index = auto_rows[["split", "image_id"]].assign(
                item=range(len(train_rows), len(train_rows) + len(auto_rows)))
            centroids = pd.concat([centroids, auto_label_centroids.merge(auto_index, on=["split", "image_id"])],
                                  ignore_index=True)
    log.info("%s: %d training images (%d fine, coarse labels: %s), %d validation images", role, len(items),
             int(fine.sum()), cfg.coarse_labels, len(val_rows))
    listing = "\n".join(f"{i.image}|{i.label}" for i in items)
    key = f"{raw_data_info.get('dvc_md5')}:{cfg.coarse_labels}:{hashlib.sha256(listing.encode()).hexdigest()[:16]}"
    return run.TrainData(items, items_from_manifest(val_rows, root, labels=labels.name), counts, centroids, key)


def _check_crop(cfg: RoleConfig, role: str, rows: pd.DataFrame) -> None:
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


class _Prefixed:
    """Puts the role in front of every metric name: one MLflow run may train several roles."""

    def __init__(self, logger, prefix: str):
        self.logger, self.prefix = logger, prefix

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    def __call__(self, metrics: dict, step: int) -> None:
        self.logger({f"{self.prefix}/{k}": v for k, v in metrics.items()}, step)

    def resumed(self, previous_run_id: str | None) -> None:
        self.logger.resumed(previous_run_id, self.prefix)


def train_model(params: dict, data: run.TrainData, paths: dict | None = None, *, role: str
                ) -> tuple[dict, pd.DataFrame, dict]:
    """Train; return the kept model bundle (``trainer.keep``), the training curve and the
    headline metrics, under the role's name (``{"teacher": {...}}``: each name once in
    ``dvc exp show``, which then needs no file prefix).

    ``role`` comes last: Kedro's parameter validation pairs a node's inputs with the function's
    arguments by position, and would otherwise take ``params:paths`` for the TrainData."""
    bundle, curve, metrics = train_role(role_config(params, role, paths), role, data)
    return bundle, curve, {role: metrics}


def train_role(cfg: RoleConfig, role: str, data: run.TrainData) -> tuple[dict, pd.DataFrame, dict]:
    """``train_model`` for a validated configuration; MLflow metrics are prefixed with ``role``."""
    logger = tracking.EpochLogger.for_active_run()
    result = run.train(cfg.model, cfg.trainer, data, _Prefixed(logger, role) if logger else None)
    curve = pd.DataFrame(result.history)
    bundle = {"model_config": result.model_config, "state_dict": result.state_dict,
              "best_miou": result.best_miou, "best_epoch": result.best_epoch, "kept_epoch": result.kept_epoch}
    kept = float(curve.loc[curve["epoch"] == result.kept_epoch, "val_miou"].iloc[0])
    # the headline DVC compares across experiments (every epoch's figures are in the curve);
    # no val mIoU without a val split: left out, as JSON has no NaN
    metrics = {"kept_epoch": result.kept_epoch, "epochs": len(result.history),
               "train_seconds": round(float(curve["seconds"].sum()), 1)}
    if math.isfinite(kept):
        metrics["val_miou"] = round(kept, 6)
    log.info("%s: best val mIoU %.4f at epoch %d, weights of epoch %d kept (trainer.keep: %s), %.0f s", role,
             result.best_miou, result.best_epoch, result.kept_epoch, cfg.trainer.keep, metrics["train_seconds"])
    return bundle, curve, metrics


def register_model(params: dict, role: str, bundle: dict) -> dict:
    """Log the model to MLflow as a pyfunc, register it and alias the new version ``newest``."""
    return register(role_config(params, role), role, bundle)


def register(cfg: RoleConfig, role: str, bundle: dict) -> dict:
    """``register_model`` for a validated configuration."""
    requirements = [f"{pkg}=={version(pkg)}" for pkg in ("torch", "torchvision", "numpy", "pydantic", "mlflow")]
    info = tracking.log_and_register(bundle, cfg.registered_model_name, requirements, cfg.serving.model_dump())
    if info is None:
        log.info("%s: MLflow tracking is off in this process: model not registered", role)
        return {"registered_model": cfg.registered_model_name, "version": None}
    log.info("%s: registered %s version %s (alias %s)", role, info["registered_model"], info["version"], info["alias"])
    return info


def train_variants(params: dict, role: str, image_manifest: pd.DataFrame, class_pixel_counts: pd.DataFrame,
                   class_centroids: pd.DataFrame, raw_data_info: dict[str, Any],
                   auto_label_manifest: pd.DataFrame | None = None,
                   auto_labels_info: dict | None = None,
                   auto_label_centroids: pd.DataFrame | None = None,
                   paths: dict | None = None) -> tuple[dict, dict, dict]:
    """Train and register each baseline of ``<role>.variants`` (the paper's baselines).

    Returns ``{variant: bundle}``, ``{<role>_<variant>: headline metrics}`` and ``{variant:
    registry info}``; all three are empty when no variant is asked for.
    """
    cfg = role_config(params, role, paths)
    bundles, metrics, registry = {}, {}, {}
    for name in dict.fromkeys(cfg.variants):
        variant, label = cfg.variant(name), f"{role}_{name}"
        data = training_data(variant, label, image_manifest, class_pixel_counts, class_centroids, raw_data_info,
                             auto_label_manifest, auto_labels_info, auto_label_centroids)
        bundles[name], _, metrics[label] = train_role(variant, label, data)
        registry[name] = register(variant, label, bundles[name])
    return bundles, metrics, registry


#: the auto-labelling outputs the student's nodes read
AUTO_LABEL_INPUTS = {name: name for name in ("auto_label_manifest", "auto_labels_info", "auto_label_centroids")}


def training_pipeline(role: str, auto_labels: bool = False, variants: bool = False) -> Pipeline:
    """Manifests -> the role's weights, training curve, metrics and registered MLflow model.

    ``auto_labels`` adds the auto-labelling outputs as inputs (the student's; never the
    teacher's, whose model makes them). ``variants`` adds the node that trains the
    baselines listed in ``<role>.variants``.
    """

    def for_role(fn):
        return update_wrapper(partial(fn, role=role), fn)

    params = f"params:{role}"
    return Pipeline([
        Node(
            for_role(select_training_data),
            {"params": params, "image_manifest": "image_manifest", "class_pixel_counts": "class_pixel_counts",
             "class_centroids": "class_centroids", "raw_data_info": "raw_data_info"}
            | (AUTO_LABEL_INPUTS if auto_labels else {}),
            f"{role}_train_data",
            name=f"select_{role}_data",
        ),
        Node(
            for_role(train_model),
            {"params": params, "data": f"{role}_train_data", "paths": "params:paths"},
            [f"{role}_model", f"{role}_training_curve", f"{role}_training_metrics"],
            name=f"train_{role}",
        ),
        Node(for_role(register_model), {"params": params, "bundle": f"{role}_model"}, f"{role}_registry",
             name=f"register_{role}"),
    ] + ([Node(
        for_role(train_variants),
        {"params": params, "image_manifest": "image_manifest", "class_pixel_counts": "class_pixel_counts",
         "class_centroids": "class_centroids", "raw_data_info": "raw_data_info", "paths": "params:paths"}
        | (AUTO_LABEL_INPUTS if auto_labels else {}),
        [f"{role}_variants", f"{role}_variants_metrics", f"{role}_variants_registry"],
        name=f"train_{role}_variants",
    )] if variants else []))
