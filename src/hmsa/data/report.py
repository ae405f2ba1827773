"""The data report: class frequencies per split, as a table and a picture."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hmsa.data.ingest import KEY_COLUMNS
from hmsa.data.labels import label_set_of


def class_frequency(class_pixels: pd.DataFrame) -> pd.DataFrame:
    """Per split and label kind, each class's pixels, share of labelled pixels and image count
    (the classes are the count table's columns, in trainId order)."""
    classes = [c for c in class_pixels.columns if c not in (*KEY_COLUMNS, "ignore")]
    rows = []
    for (split, kind), group in class_pixels.groupby(["split", "label_kind"], sort=True):
        counts = group[classes]
        labelled = int(counts.to_numpy().sum())
        for train_id, name in enumerate(classes):
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
    names = frequency.drop_duplicates("train_id").sort_values("train_id")["class_name"].tolist()
    colors = np.asarray(label_set_of(names).class_colors) / 255.0
    for ax, ((split, kind), group) in zip(axes[0], groups):
        share = group.sort_values("train_id")["share"].to_numpy()
        ax.barh(np.arange(len(names)), np.maximum(share, 1e-7), color=colors, edgecolor="black", linewidth=0.3)
        ax.set_xscale("log")
        ax.set_xlim(1e-5, 1)
        ax.set_title(f"{split} ({kind})")
        ax.set_xlabel("share of labelled pixels")
    axes[0][0].set_yticks(np.arange(len(names)), names, fontsize=8 if len(names) < 30 else 5)
    axes[0][0].invert_yaxis()
    fig.suptitle("Class frequency")
    fig.tight_layout()
    return fig


def ingestion_metrics(image_manifest: pd.DataFrame, skipped_files: pd.DataFrame,
                      class_frequency: pd.DataFrame) -> tuple[dict, dict]:
    """The headline for DVC's metrics file (images per split, skipped files), and for MLflow
    those figures with each split's labelled fraction and class shares (the whole table is
    class_frequency.csv), in kedro-mlflow's metrics-history form."""
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

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), sub)
        else:
            flat[prefix.replace(" ", "_")] = {"value": float(value), "step": 0}

    walk("", every)
    return headline, flat
