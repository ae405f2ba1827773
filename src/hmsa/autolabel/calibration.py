"""Per-class thresholds (``threshold_rule: per_class``): how often the teacher is right at each
confidence level, counted on fine labels, and the lowest level that reaches the target
accuracy for each class (docs/defaults.md, *Auto-labels: per-class thresholds*)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hmsa.autolabel.config import AutoLabelConfig
from hmsa.autolabel.refinement import (class_thresholds, confidence_to_u8, fixed_threshold_table,
                                       threshold_table)
from hmsa.autolabel.teacher import load_teacher, predict, teacher_runtime
from hmsa.data.labels import IGNORE_INDEX, LabelSet
from hmsa.evaluation.grid import batches_of
from hmsa.runtime.device import Runtime
from hmsa.training.data import EvalDataset, items_from_manifest

log = logging.getLogger(__name__)


def confidence_counts(model, batches, num_classes: int, scales, flip: bool,
                      rt: Runtime | None = None, above_one: str = "image_size") -> tuple[np.ndarray, np.ndarray]:
    """Over labelled ``batches`` of (images, trainIds): per predicted class, the pixels at each
    8-bit confidence level (as the confidence PNGs store it), and how many of them are right."""
    total = np.zeros(num_classes * 256, dtype=np.int64)
    correct = np.zeros(num_classes * 256, dtype=np.int64)
    for images, labels in batches:
        prediction, confidence = predict(model, images, scales, flip, rt, above_one)
        truth = labels.numpy()
        valid = truth != IGNORE_INDEX
        pred = prediction[valid].astype(np.int64)
        cell = pred * 256 + confidence_to_u8(confidence)[valid]
        total += np.bincount(cell, minlength=total.size)
        correct += np.bincount(cell[pred == truth[valid]], minlength=total.size)
    return total.reshape(num_classes, 256), correct.reshape(num_classes, 256)


def calibration_rows(cfg: AutoLabelConfig, image_manifest: pd.DataFrame) -> pd.DataFrame:
    """The images of ``calibration_split`` with fine labels, in a fixed order."""
    rows = image_manifest[(image_manifest["split"] == cfg.calibration_split) & (image_manifest["label_kind"] == "fine")]
    if rows.empty:
        raise ValueError(f"auto_labeling.calibration_split '{cfg.calibration_split}' has no images with fine labels to "
                         "calibrate the per-class thresholds on: name a split that has them, or set "
                         "auto_labeling.threshold_rule: fixed")
    return rows.sort_values("image_id")


def thresholds(cfg: AutoLabelConfig, teacher_bundle: dict, image_manifest: pd.DataFrame, root: str | Path,
               labels: LabelSet) -> pd.DataFrame:
    """The confidence threshold of each class: ``threshold`` for all (``threshold_rule: fixed``),
    or calibrated on the fine labels of ``calibration_split`` (``per_class``), with the teacher's
    accuracy and pixels there at each threshold. The teacher is loaded only to calibrate."""
    names = list(labels.class_names)
    if cfg.threshold_rule == "fixed":
        return fixed_threshold_table(names, cfg.threshold)
    items = items_from_manifest(calibration_rows(cfg, image_manifest), root, labels=labels.name)
    rt = teacher_runtime(cfg)
    model = rt.model(load_teacher(cfg, teacher_bundle, labels))
    pairs = (EvalDataset(items)[i] for i in range(len(items)))
    total, correct = confidence_counts(model, batches_of(pairs, cfg.batch_size), labels.num_classes, cfg.scales,
                                       cfg.flip, rt, cfg.fuse_above_one)
    per_class = class_thresholds(total, correct, cfg.target_accuracy)
    log.info("per-class thresholds for %.0f%% accuracy on %d '%s' images: %s", 100 * cfg.target_accuracy, len(items),
             cfg.calibration_split, ", ".join(f"{n} {t:.2f}" for n, t in zip(names, per_class)))
    return threshold_table(names, per_class, total, correct)
