"""The auto-labels' pictures: the threshold sweep, and image / human coarse / auto-label /
confidence panels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from hmsa.data.labels import LabelSet
from hmsa.io.files import under


def threshold_sweep(sweep: pd.DataFrame, threshold: float) -> Figure:
    """Coverage and accuracy of the thresholded teacher against the threshold (``quality``'s
    sweep), with the threshold in use marked."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(sweep["threshold"], sweep["coverage"], "o-", label="coverage")
    ax.plot(sweep["threshold"], sweep["accuracy"], "s-", label="accuracy")
    ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("confidence threshold")
    ax.set_title("Auto-labels against held-out fine truth")
    ax.legend()
    fig.tight_layout()
    return fig


def panels(rows: pd.DataFrame, root: str | Path, auto_labels: Mapping[str, Callable[[], Image.Image]],
           labels: LabelSet) -> Figure:
    """image / human coarse / auto-label / confidence, one row per auto-label manifest row.
    Images and human labels are read under the data's ``root``; ``auto_labels`` loads each
    auto-label PNG by its manifest path without ``.png`` (the catalog's partitioned folder)."""
    root, palette = Path(root), labels.palette
    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 2.2 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows.itertuples(index=False)):
        key = r.label_path.removesuffix(".png")
        conf_key = r.confidence_path.removesuffix(".png")
        with Image.open(under(root, r.image_path)) as img, Image.open(under(root, r.human_label_path)) as hum:
            image, human = np.asarray(img.convert("RGB")), labels.train_ids(np.asarray(hum))
        label = np.asarray(auto_labels[key]())
        conf = np.asarray(auto_labels[conf_key]())
        for ax, picture, title in zip(ax_row, (image, palette[human], palette[label], conf),
                                      ("image", "human coarse", "auto-label", "confidence")):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig
