"""Auto-label quality against held-out truth, its metrics, and the auto-labels' centroids."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hmsa.autolabel import quality
from hmsa.data import ingest
from hmsa.data.labels import label_set


def _saver(folder, absolute: bool = True):
    """``save(name, values)``: an 8-bit PNG in ``folder``; returns its path (or its name)."""
    def save(name, array):
        Image.fromarray(np.array(array, dtype=np.uint8)).save(folder / name)
        return str(folder / name) if absolute else name
    return save


def test_quality_against_hand_counts(tmp_path, monkeypatch, cityscapes_labels):
    save = _saver(tmp_path)
    # label ids: 7 road (trainId 0), 26 car (13), 0 void; 4 pixels, all labelled in the truth
    fine = save("fine.png", [[7, 7, 26, 26]])
    human = save("human.png", [[7, 0, 26, 0]])  # covers 2 of 4, both right
    pred = save("pred.png", [[0, 0, 13, 0]])  # teacher: 3 of 4 right
    conf = save("conf.png", [[255, 128, 255, 255]])
    label = save("label.png", [[0, 255, 13, 0]])  # thresholded at 0.9: 3 covered, 2 right
    rows = pd.DataFrame([{"label": label, "confidence": conf, "prediction": pred, "human": human, "fine": fine}])
    q = quality.quality(rows, cityscapes_labels, thresholds=(0.5, 0.9))
    summary = q["summary"].set_index("source")
    assert summary.loc["auto", "coverage"] == pytest.approx(3 / 4) and summary.loc["auto", "accuracy"] == pytest.approx(2 / 3)
    assert summary.loc["human", "coverage"] == pytest.approx(2 / 4) and summary.loc["human", "accuracy"] == 1.0
    sweep = q["sweep"].set_index("threshold")
    assert sweep.loc[0.5, "coverage"] == 1.0 and sweep.loc[0.5, "accuracy"] == pytest.approx(3 / 4)
    assert sweep.loc[0.9, "coverage"] == pytest.approx(3 / 4) and sweep.loc[0.9, "accuracy"] == pytest.approx(2 / 3)
    car = q["per_class"].query("source == 'auto' and class_name == 'car'").iloc[0]
    assert car["coverage"] == pytest.approx(1.0) and car["accuracy"] == pytest.approx(0.5)
    # labelled road twice (one is a car): that label is right half the time; the car label always
    road = q["per_class"].query("source == 'auto' and class_name == 'road'").iloc[0]
    assert road["labelled_as"] == 2 and road["label_accuracy"] == pytest.approx(0.5) and car["label_accuracy"] == 1.0
    assert summary.loc["auto", "worst_class"] == ""  # no class has MIN_CLASS_PIXELS labelled pixels
    monkeypatch.setattr(quality, "MIN_CLASS_PIXELS", 1)
    summary = quality.quality(rows, cityscapes_labels, thresholds=(0.5,))["summary"].set_index("source")
    assert summary.loc["auto", "worst_class"] == "road" and summary.loc["auto", "worst_class_accuracy"] == 0.5


def test_truth_is_read_with_the_data_sets_label_set(tmp_path):
    """Mapillary PNGs hold its own ids (13: road): read through Cityscapes' table they would be ignore."""
    save = _saver(tmp_path)
    road = 13
    rows = pd.DataFrame([{"label": save("label.png", [[road, road]]), "confidence": save("conf.png", [[255, 255]]),
                          "prediction": save("pred.png", [[road, road]]), "human": save("human.png", [[road, 65]]),
                          "fine": save("fine.png", [[road, road]])}])
    q = quality.quality(rows, label_set("mapillary"), thresholds=(0.9,))
    summary = q["summary"].set_index("source")
    assert summary.loc["auto", "pixels"] == 2 and summary.loc["auto", "accuracy"] == 1.0
    assert summary.loc["human", "coverage"] == 0.5  # 65 is Mapillary's unlabeled
    assert q["per_class"]["class_name"].unique().tolist() == ["construction--flat--road"]


def test_without_held_out_truth_the_metrics_leave_the_figures_out_and_the_report_says_why(tmp_path,
                                                                                        cityscapes_labels):
    """A real coarse set (Cityscapes' train_extra) has no fine truth: DVC's metrics file stays
    valid JSON (no NaN) and the quality report names the reason."""
    save = _saver(tmp_path, absolute=False)
    manifest = pd.DataFrame([{"label_path": save("label.png", [[0, 255]]), "confidence_path": save("conf.png", [[255, 0]]),
                              "prediction_path": save("pred.png", [[0, 0]]), "human_label_path": save("human.png", [[7, 0]]),
                              "heldout_fine_path": None}])
    q = quality.report(manifest, tmp_path, tmp_path, cityscapes_labels, [0.9])
    assert q["metrics"] == {"auto_labels": {"images": 1}}
    json.dumps(q["metrics"], allow_nan=False)  # what the catalog's metrics dataset does: raises on NaN
    assert q["mlflow_metrics"] == {}
    assert (q["summary"]["note"] == quality.NO_TRUTH).all()


def test_the_metrics_round_the_measured_figures_for_dvc_and_mlflow():
    summary = pd.DataFrame([{"source": "auto", "coverage": 0.123456789, "accuracy": 0.9, "worst_class_accuracy": np.nan},
                            {"source": "human", "coverage": 0.2, "accuracy": 1.0, "worst_class_accuracy": 0.75}])
    nested, flat = quality.metrics(summary, images=3)
    assert nested == {"auto_labels": {"images": 3, "coverage": 0.123457, "accuracy": 0.9},
                      "human_coarse": {"coverage": 0.2, "accuracy": 1.0, "worst_class_accuracy": 0.75}}
    assert flat["auto_labels/auto_coverage"] == {"value": 0.123457, "step": 0}
    assert "auto_labels/auto_worst_class_accuracy" not in flat and len(flat) == 5


def test_the_centroids_of_the_auto_labels_are_on_the_ingestion_grid(tmp_path):
    label = np.full((32, 64), 255, dtype=np.uint8)
    label[4:10, 40:44] = 11  # a person in one tile
    (tmp_path / "c").mkdir()
    Image.fromarray(label).save(tmp_path / "c" / "x_autoLabelTrainIds.png")
    manifest = pd.DataFrame([{"split": "train_extra", "image_id": "x", "label_path": "c/x_autoLabelTrainIds.png"}])
    frame = quality.centroids(manifest, tmp_path, ingest.CentroidSpec(2, 4), 19)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["label_kind"], row["image_id"], row["train_id"]) == ("auto", "x", 11)
    assert 4 <= row["y"] < 10 and 40 <= row["x"] < 44
