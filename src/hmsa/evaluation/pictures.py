"""The evaluation's pictures: per-class IoU by fusion, confusion matrix, attention, overlays."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmsa.data.labels import CITYSCAPES, IGNORE_INDEX


def per_class_iou(rows: pd.DataFrame, class_names: Sequence[str], title: str) -> Figure:
    """Grouped bars: one group per class, one bar per row of ``rows`` (columns ``label`` and
    ``iou/<class>``). Classes absent from truth and prediction (NaN) are left out."""
    present = [c for c in class_names if rows[f"iou/{c}"].notna().any()]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(present) + 2), 4))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(present))
    for i, (_, row) in enumerate(rows.iterrows()):
        values = [row[f"iou/{c}"] for c in present]
        ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=row["label"])
    ax.set_xticks(x, present, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix (rows: truth) over the classes present in truth or prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    keep = np.flatnonzero(cm.sum(0) + cm.sum(1))
    cm = cm[np.ix_(keep, keep)]
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    names = [class_names[i] for i in keep]
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 2.5, 0.45 * len(names) + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def attention(images: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
              attentions: Sequence[dict[float, np.ndarray]], title: str,
              palette: np.ndarray = CITYSCAPES.palette) -> Figure:
    """Per image: the image, the fused prediction (coloured by ``palette``, trainId -> RGB),
    and each scale's attention (bright = this scale's prediction is trusted there). The
    highest scale's attention is unused by the hierarchical rule and is not shown."""
    scales = sorted(attentions[0])[:-1] if attentions and len(attentions[0]) > 1 else sorted(attentions[0])
    cols = 2 + len(scales)
    fig, axes = plt.subplots(len(images), cols, figsize=(3.2 * cols, 1.9 * len(images)), squeeze=False)
    for ax_row, image, pred, attn in zip(axes, images, predictions, attentions):
        ax_row[0].imshow(image)
        ax_row[1].imshow(palette[pred])
        titles = ["image", "HMSA prediction"]
        for ax, scale in zip(ax_row[2:], scales):
            ax.imshow(attn[scale], cmap="magma", vmin=0, vmax=1)
            titles.append(f"attention of scale {scale:g}")
        for ax, name in zip(ax_row, titles):
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def overlays(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
             title: str, alpha: float = 0.55, palette: np.ndarray = CITYSCAPES.palette) -> Figure:
    """Per image: ground truth and prediction blended over the image (coloured by ``palette``),
    and the errors (red; ignore pixels grey)."""
    fig, axes = plt.subplots(len(images), 3, figsize=(10, 1.9 * len(images)), squeeze=False)
    for ax_row, image, truth, pred in zip(axes, images, truths, predictions):
        base = image.astype(np.float32)
        shown_truth = np.where((truth == IGNORE_INDEX)[..., None], base, (1 - alpha) * base + alpha * palette[truth])
        shown_pred = (1 - alpha) * base + alpha * palette[pred]
        errors = np.full(image.shape, 255, np.uint8)
        errors[(pred != truth) & (truth != IGNORE_INDEX)] = (220, 30, 30)
        errors[truth == IGNORE_INDEX] = (150, 150, 150)
        for ax, picture, name in zip(ax_row, (shown_truth, shown_pred, errors), ("ground truth", "prediction", "errors")):
            ax.imshow(picture.astype(np.uint8))
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
