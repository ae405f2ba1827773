"""The data report: class frequencies per split, as a table and a picture."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hmsa.data.labels import TRAIN_CLASS_COLORS, TRAIN_CLASS_NAMES


def class_frequency(class_pixels: pd.DataFrame) -> pd.DataFrame:
    """Per split and label kind, each class's pixels, share of labelled pixels and image count."""
    rows = []
    for (split, kind), group in class_pixels.groupby(["split", "label_kind"], sort=True):
        counts = group[list(TRAIN_CLASS_NAMES)]
        labelled = int(counts.to_numpy().sum())
        for train_id, name in enumerate(TRAIN_CLASS_NAMES):
            pixels = int(counts[name].sum())
            rows.append({
                "split": split, "label_kind": kind, "train_id": train_id, "class_name": name,
                "pixels": pixels, "share": pixels / labelled if labelled else 0.0,
                "images": int((counts[name] > 0).sum()),
            })
    return pd.DataFrame(rows, columns=["split", "label_kind", "train_id", "class_name", "pixels", "share", "images"])


def plot_class_frequency(frequency: pd.DataFrame) -> plt.Figure:
    """Horizontal bars of each class's share of labelled pixels, one panel per split."""
    groups = list(frequency.groupby(["split", "label_kind"], sort=True))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.2 * max(1, len(groups)), 6), sharey=True, squeeze=False)
    colors = np.asarray(TRAIN_CLASS_COLORS) / 255.0
    for ax, ((split, kind), group) in zip(axes[0], groups):
        share = group.sort_values("train_id")["share"].to_numpy()
        ax.barh(np.arange(len(TRAIN_CLASS_NAMES)), np.maximum(share, 1e-7), color=colors, edgecolor="black", linewidth=0.3)
        ax.set_xscale("log")
        ax.set_xlim(1e-5, 1)
        ax.set_title(f"{split} ({kind})")
        ax.set_xlabel("share of labelled pixels")
    axes[0][0].set_yticks(np.arange(len(TRAIN_CLASS_NAMES)), TRAIN_CLASS_NAMES)
    axes[0][0].invert_yaxis()
    fig.suptitle("Class frequency")
    fig.tight_layout()
    return fig
