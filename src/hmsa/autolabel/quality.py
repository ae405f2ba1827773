"""How good the auto-labels are: coverage and accuracy against held-out fine truth, beside
the human coarse labels; the metrics DVC and MLflow keep of it; and the auto-labels' class
centroids, from which class-uniform sampling draws the student's rare-class crops."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hmsa.data import ingest
from hmsa.data.labels import IGNORE_INDEX, LabelSet
from hmsa.io.files import under

log = logging.getLogger(__name__)

#: the worst class is chosen among classes labelled on at least this many pixels (a handful of
#: pixels says nothing about a class)
MIN_CLASS_PIXELS = 1000

NO_TRUTH = "no held-out fine labels for these images: coverage and accuracy cannot be measured"


def _read(path: str | Path, labels: LabelSet | None = None) -> np.ndarray:
    """A PNG's values; with ``labels``, its label ids mapped to trainIds."""
    with Image.open(path) as img:
        array = np.asarray(img)
    return labels.train_ids(array) if labels is not None else array


def _count(rows: pd.DataFrame, labels: LabelSet):
    """Pixel counts over the rows with held-out truth: the teacher's confidence histograms (all,
    right), per label source and class the labelled / right / labelled-as pixels, the truth's
    pixels per class, and the truth's valid pixels."""
    n = labels.num_classes
    conf_hist = np.zeros(256, dtype=np.int64)
    correct_hist = np.zeros(256, dtype=np.int64)
    stats = {src: {key: np.zeros(n, np.int64) for key in ("labelled", "correct", "labelled_as")}
             for src in ("auto", "human")}
    fine_pixels = np.zeros(n, dtype=np.int64)
    total = 0
    for row in rows.itertuples(index=False):
        if not isinstance(row.fine, str):
            continue
        fine = _read(row.fine, labels)
        valid = fine != IGNORE_INDEX
        total += int(valid.sum())
        fine_pixels += np.bincount(fine[valid], minlength=n)[:n]
        conf = _read(row.confidence)
        pred = _read(row.prediction)
        conf_hist += np.bincount(conf[valid], minlength=256)
        correct_hist += np.bincount(conf[valid & (pred == fine)], minlength=256)
        for src, given in (("auto", _read(row.label)), ("human", _read(row.human, labels))):
            has = valid & (given != IGNORE_INDEX)
            stats[src]["labelled"] += np.bincount(fine[has], minlength=n)[:n]
            stats[src]["correct"] += np.bincount(fine[has & (given == fine)], minlength=n)[:n]
            stats[src]["labelled_as"] += np.bincount(given[has], minlength=n)[:n]
    return conf_hist, correct_hist, stats, fine_pixels, total


def _tables(stats: dict, fine_pixels: np.ndarray, total: int, names) -> tuple[list[dict], list[dict]]:
    """The summary rows (one per label source) and the per-class rows from the counts."""
    summary, per_class = [], []
    # real coarse sets (Cityscapes' train_extra) have no fine truth: then nothing can be measured
    note = "" if total else NO_TRUTH
    for src, s in stats.items():
        labelled, correct = int(s["labelled"].sum()), int(s["correct"].sum())
        # a label is right where label == truth, so the right pixels of label c are correct[c]
        label_accuracy = np.divide(s["correct"], s["labelled_as"], out=np.full(len(names), np.nan),
                                   where=s["labelled_as"] > 0)
        counted = s["labelled_as"] >= MIN_CLASS_PIXELS
        worst = int(np.nanargmin(np.where(counted, label_accuracy, np.nan))) if counted.any() else None
        summary.append({"source": src, "coverage": labelled / total if total else np.nan,
                        "accuracy": correct / labelled if labelled else np.nan, "pixels": total,
                        "worst_class": names[worst] if worst is not None else "",
                        "worst_class_accuracy": label_accuracy[worst] if worst is not None else np.nan, "note": note})
        for c, name in enumerate(names):
            if fine_pixels[c] or s["labelled_as"][c]:
                per_class.append({"source": src, "class_name": name,
                                  "coverage": s["labelled"][c] / fine_pixels[c] if fine_pixels[c] else np.nan,
                                  "accuracy": s["correct"][c] / s["labelled"][c] if s["labelled"][c] else np.nan,
                                  "labelled_as": int(s["labelled_as"][c]), "label_accuracy": label_accuracy[c]})
    return summary, per_class


def _sweep(conf_hist: np.ndarray, correct_hist: np.ndarray, total: int, thresholds) -> list[dict]:
    """Coverage and accuracy of the teacher thresholded at each of ``thresholds``."""
    sweep = []
    for t in thresholds:
        keep = np.arange(256) >= round(t * 255)
        kept = int(conf_hist[keep].sum())
        sweep.append({"threshold": t, "coverage": kept / total if total else np.nan,
                      "accuracy": int(correct_hist[keep].sum()) / kept if kept else np.nan})
    return sweep


def quality(rows: pd.DataFrame, labels: LabelSet,
            thresholds=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)) -> dict[str, pd.DataFrame]:
    """Coverage and accuracy of auto-labels (and of human coarse labels) against held-out fine truth.

    ``rows`` has absolute paths: ``label``, ``confidence``, ``prediction``, ``human`` and
    ``fine`` (held-out truth; rows without it are left out of accuracy figures); the human and
    fine PNGs hold label ids of ``labels``. Returns ``summary`` (one row per label source, with
    its worst class), ``per_class``, and ``sweep`` (threshold -> coverage, accuracy of the
    thresholded teacher). Per class: ``coverage`` and ``accuracy`` over the pixels whose truth
    is the class (how much of it is labelled, and labelled right), and ``label_accuracy`` over
    the pixels labelled as the class (how often that label is right: what a student trained on
    it is told).
    """
    conf_hist, correct_hist, stats, fine_pixels, total = _count(rows, labels)
    summary, per_class = _tables(stats, fine_pixels, total, labels.class_names)
    sweep = _sweep(conf_hist, correct_hist, total, thresholds)
    return {"summary": pd.DataFrame(summary), "per_class": pd.DataFrame(per_class), "sweep": pd.DataFrame(sweep)}


def quality_rows(manifest: pd.DataFrame, root: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """The absolute paths :func:`quality` reads, from the auto-label manifest: the auto-label
    files under ``out_dir``, the human and held-out fine labels under the data's ``root``."""
    root, out = Path(root), Path(out_dir)
    return pd.DataFrame({
        "label": [str(under(out, p)) for p in manifest["label_path"]],
        "confidence": [str(under(out, p)) for p in manifest["confidence_path"]],
        "prediction": [str(under(out, p)) for p in manifest["prediction_path"]],
        "human": [str(under(root, p)) for p in manifest["human_label_path"]],
        "fine": [str(under(root, p)) if isinstance(p, str) else None for p in manifest["heldout_fine_path"]],
    })


def metrics(summary: pd.DataFrame, images: int) -> tuple[dict, dict]:
    """The quality summary as DVC's metrics (nested) and as MLflow metrics (flat, step 0)."""
    # DVC's metrics file is JSON, which has no NaN: a figure that cannot be measured (no
    # held-out truth, the summary's note says so) is left out
    figures = {r.source: {k: round(float(v), 6) for k, v in (("coverage", r.coverage), ("accuracy", r.accuracy),
                                                             ("worst_class_accuracy", r.worst_class_accuracy))
                          if np.isfinite(v)} for r in summary.itertuples()}
    nested = {"auto_labels": {"images": images, **figures.get("auto", {})}, "human_coarse": figures.get("human", {})}
    nested = {name: values for name, values in nested.items() if values}
    flat = {f"auto_labels/{src}_{k}": {"value": v, "step": 0} for src, d in figures.items() for k, v in d.items()}
    return nested, flat


def report(manifest: pd.DataFrame, root: str | Path, out_dir: str | Path, labels: LabelSet,
           thresholds) -> dict:
    """:func:`quality` of the labels of an auto-label manifest, with its :func:`metrics`
    (``metrics`` for DVC, ``mlflow_metrics``); a quality that cannot be measured is logged."""
    q = quality(quality_rows(manifest, root, out_dir), labels, thresholds)
    q["metrics"], q["mlflow_metrics"] = metrics(q["summary"], len(manifest))
    if q["summary"]["note"].any():
        log.warning("auto-label quality: %s", q["summary"]["note"].iloc[0])
    return q


def centroids(manifest: pd.DataFrame, out_dir: str | Path, spec: ingest.CentroidSpec, num_classes: int) -> pd.DataFrame:
    """Class centroids of the auto-labels on data ingestion's grid (``spec``), ``label_kind``
    "auto": class-uniform sampling draws the student's rare-class crops from the auto-labelled
    pool too, as it does from the human-labelled images."""
    out = Path(out_dir)
    per_image = []
    for r in manifest.itertuples(index=False):
        with Image.open(under(out, r.label_path)) as img:
            rows = ingest.class_centroids(np.asarray(img), spec, num_classes)
        per_image.append((np.array([[r.split, r.image_id, "auto"]] * len(rows), dtype=object).reshape(-1, 3), rows))
    return ingest.centroid_frame(per_image)
