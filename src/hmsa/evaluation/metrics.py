"""Confusion matrix and IoU, as in the Cityscapes benchmark (HMSA.md section 7)."""

from __future__ import annotations

import numpy as np
import torch

from hmsa.data.labels import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = ground truth, pixels labelled ignore skipped."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = target != ignore_index
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray | torch.Tensor) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN); NaN for a class absent from both truth and prediction."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def mean_iou(confusion: np.ndarray | torch.Tensor) -> float:
    """Mean IoU over the classes present (nanmean), as the Cityscapes evaluation does."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray | torch.Tensor) -> float:
    """Share of labelled pixels predicted right."""
    cm = np.asarray(confusion, dtype=np.float64)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")
