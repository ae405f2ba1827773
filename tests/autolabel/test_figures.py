"""The threshold-sweep and panels figures."""

import numpy as np
import pandas as pd
from PIL import Image

from hmsa.autolabel import figures


def test_the_sweep_plots_coverage_and_accuracy_and_marks_the_threshold():
    sweep = pd.DataFrame({"threshold": [0.5, 0.9], "coverage": [1.0, 0.6], "accuracy": [0.8, 0.95]})
    ax = figures.threshold_sweep(sweep, 0.9).axes[0]
    curves = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert curves["coverage"] == [1.0, 0.6] and curves["accuracy"] == [0.8, 0.95]
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith("_")] == [0.9]


def test_panels_show_image_human_auto_label_and_confidence_in_the_label_sets_colours(tmp_path, cityscapes_labels):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((4, 6), 26, np.uint8)).save(tmp_path / "human.png")  # label id 26: car
    label, conf = np.full((4, 6), 0, np.uint8), np.full((4, 6), 200, np.uint8)
    loaders = {"c/x_autoLabelTrainIds": lambda: Image.fromarray(label),
               "c/x_autoConfidence": lambda: Image.fromarray(conf)}
    rows = pd.DataFrame([{"image_path": "img.png", "human_label_path": "human.png",
                          "label_path": "c/x_autoLabelTrainIds.png", "confidence_path": "c/x_autoConfidence.png"}])
    fig = figures.panels(rows, tmp_path, loaders, cityscapes_labels)
    assert [ax.get_title() for ax in fig.axes] == ["image", "human coarse", "auto-label", "confidence"]
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]
    assert (shown[1] == cityscapes_labels.palette[13]).all()  # car's colour
    assert (shown[2] == cityscapes_labels.palette[0]).all()  # road's colour
    assert (shown[3] == 200).all()
