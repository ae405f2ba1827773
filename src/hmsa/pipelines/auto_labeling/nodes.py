"""Nodes of the auto_labeling pipeline."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from hmsa import autolabel
from hmsa.config import parse_block
from hmsa.data import ingest
from hmsa.data.labels import CITYSCAPES, label_set
from hmsa.fileio import under
from hmsa.serving import model_from_bundle
from hmsa.evaluation.grid import batches_of
from hmsa.training import distributed
from hmsa.training.data import EvalDataset, items_from_manifest
from hmsa.models.runtime import runtime

log = logging.getLogger(__name__)


def _config(params: dict) -> autolabel.AutoLabelConfig:
    return parse_block("auto_labeling", params)


def _teacher(cfg: autolabel.AutoLabelConfig, teacher_model: dict) -> torch.nn.Module:
    if cfg.teacher == "catalog":
        return model_from_bundle(teacher_model, "teacher_model (data/06_models/teacher.pt)")
    from hmsa.tracking import load_segmenter

    log.info("Loading the teacher from %s", cfg.teacher)
    return load_segmenter(cfg.teacher)


def _runtime(cfg: autolabel.AutoLabelConfig):
    rt = runtime(cfg.device, cfg.precision, cfg.channels_last, distributed.env_world()[2])
    log.info("auto-labelling runs on %s", rt.describe())
    return rt


def label_thresholds(params: dict, teacher_model: dict, image_manifest: pd.DataFrame,
                     raw_data_info: dict[str, Any]) -> pd.DataFrame:
    """The confidence threshold of each class: ``threshold`` for all (``threshold_rule: fixed``),
    or calibrated on the fine labels of ``calibration_split`` (``per_class``), with the
    teacher's accuracy and pixels there at each threshold."""
    cfg = _config(params)
    names = list(autolabel.TRAIN_CLASS_NAMES)
    if cfg.threshold_rule == "fixed":
        return pd.DataFrame({"class_name": names, "threshold": cfg.threshold, "calibration_pixels": 0,
                             "calibration_accuracy": np.nan})
    rows = image_manifest[(image_manifest["split"] == cfg.calibration_split) & (image_manifest["label_kind"] == "fine")]
    if rows.empty:
        raise ValueError(f"auto_labeling.calibration_split '{cfg.calibration_split}' has no images with fine labels to "
                         "calibrate the per-class thresholds on: name a split that has them, or set "
                         "auto_labeling.threshold_rule: fixed")
    rows = rows.sort_values("image_id")
    items = items_from_manifest(rows, raw_data_info["root"], labels=raw_data_info.get("labels", "cityscapes"))
    rt = _runtime(cfg)
    model = rt.model(_teacher(cfg, teacher_model))
    pairs = (EvalDataset(items)[i] for i in range(len(items)))
    total, correct = autolabel.confidence_counts(model, batches_of(pairs, cfg.batch_size), cfg.scales, cfg.flip, rt)
    thresholds = autolabel.class_thresholds(total, correct, cfg.target_accuracy)
    table = []
    for c, name in enumerate(names):
        keep = np.arange(256) >= np.ceil(thresholds[c] * 255 - 1e-9)  # the levels kept (see class_thresholds)
        kept, right = int(total[c][keep].sum()), int(correct[c][keep].sum())
        table.append({"class_name": name, "threshold": round(float(thresholds[c]), 6), "calibration_pixels": kept,
                      "calibration_accuracy": right / kept if kept else np.nan})
    log.info("per-class thresholds for %.0f%% accuracy on %d '%s' images: %s", 100 * cfg.target_accuracy, len(items),
             cfg.calibration_split, ", ".join(f"{n} {t:.2f}" for n, t in zip(names, thresholds)))
    return pd.DataFrame(table)


def auto_label(params: dict, teacher_model: dict, image_manifest: pd.DataFrame,
               raw_data_info: dict[str, Any], paths: dict | None = None,
               thresholds: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Label every coarse image of ``splits`` into ``paths.auto_labels`` (this process's share
    under torchrun).

    Returns the manifest the student reads (paths relative to the output folder) and where
    the labels are.
    """
    cfg = _config(params)
    rows = image_manifest[image_manifest["split"].isin(cfg.splits) & (image_manifest["label_kind"] == "coarse")]
    if rows.empty:
        raise ValueError(f"auto_labeling.splits {cfg.splits}: no coarse images to label")
    root, out_dir = Path(raw_data_info["root"]), Path(parse_block("paths", paths).auto_labels)
    jobs = [autolabel.Job(r.image_id, r.city, str(under(root, r.image_path)), str(under(root, r.label_path)))
            for r in rows.itertuples(index=False)]
    rank, world, _ = distributed.env_world()
    rt = _runtime(cfg)
    model = rt.model(_teacher(cfg, teacher_model))
    refinement = cfg.refinement(None if thresholds is None else thresholds["threshold"].tolist())
    stamp = {"teacher": autolabel.model_digest(model), "refinement": dataclasses.asdict(refinement),
             "scales": sorted(cfg.scales), "flip": cfg.flip, "precision": rt.describe().rsplit(", ", 1)[1]}
    if rank == 0:
        autolabel.prepare_output(out_dir, stamp)
    if world > 1:
        distributed.init(rt.device.type == "cuda")
        torch.distributed.barrier()  # rank 0 has cleared stale labels before anyone writes
    counts = autolabel.label_images(model, jobs, out_dir, refinement, cfg.scales, cfg.flip, cfg.batch_size,
                                    cfg.readers, cfg.writers, rank, world, cfg.progress_bar, rt)
    log.info("auto-labelling: %d labelled, %d already done (rank %d of %d)", counts["labelled"], counts["skipped"], rank, world)
    if world > 1:
        torch.distributed.barrier()  # every shard is written before anyone reads the whole set
    manifest = rows[["split", "city", "image_id", "image_path", "label_path", "heldout_fine_path"]].rename(
        columns={"label_path": "human_label_path"}).reset_index(drop=True)
    for kind, suffix in autolabel.SUFFIXES.items():
        manifest[f"{kind}_path"] = manifest["city"] + "/" + manifest["image_id"] + suffix
    info = {"root": str(out_dir), "teacher_source": cfg.teacher, "teacher_digest": stamp["teacher"],
            "threshold": cfg.threshold, "threshold_rule": cfg.threshold_rule, "merge_human_coarse": cfg.merge_human_coarse,
            "union_classes": cfg.union_classes, "border": cfg.border, "scales": cfg.scales, "flip": cfg.flip}
    return manifest, info


def label_centroids(auto_label_manifest: pd.DataFrame, auto_labels_info: dict, raw_data_info: dict,
                    data_params: dict) -> pd.DataFrame:
    """Class centroids of the auto-labels, on data_ingestion's grid (``data.centroid_grid``):
    class-uniform sampling draws the student's rare-class crops from the auto-labelled pool
    too (HMSA.md section 6), as it does from human-labelled images. ``label_kind`` is "auto"."""
    data = parse_block("data", data_params)
    spec = ingest.CentroidSpec(*data.centroid_grid, min_pixels=data.centroid_min_pixels)
    num_classes = label_set(raw_data_info.get("labels", "cityscapes")).num_classes
    out = Path(auto_labels_info["root"])
    per_image = []
    for r in auto_label_manifest.itertuples(index=False):
        with Image.open(under(out, r.label_path)) as img:
            rows = ingest.class_centroids(np.asarray(img), spec, num_classes)
        per_image.append((np.array([[r.split, r.image_id, "auto"]] * len(rows), dtype=object).reshape(-1, 3), rows))
    return ingest.centroid_frame(per_image)


def label_quality(auto_label_manifest: pd.DataFrame, auto_labels_info: dict, raw_data_info: dict,
                  params: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Figure, dict, dict]:
    """Coverage and accuracy against the held-out fine truth, human coarse labels beside them."""
    cfg = _config(params)
    root, out = Path(raw_data_info["root"]), Path(auto_labels_info["root"])
    m = auto_label_manifest
    rows = pd.DataFrame({
        "label": [str(under(out, p)) for p in m["label_path"]],
        "confidence": [str(under(out, p)) for p in m["confidence_path"]],
        "prediction": [str(under(out, p)) for p in m["prediction_path"]],
        "human": [str(under(root, p)) for p in m["human_label_path"]],
        "fine": [str(under(root, p)) if isinstance(p, str) else None for p in m["heldout_fine_path"]],
    })
    q = autolabel.quality(rows, cfg.sweep_thresholds)
    summary = q["summary"]
    # DVC's metrics file is JSON, which has no NaN: a figure that cannot be measured (no
    # held-out truth, the summary's note says so) is left out
    figures = {r.source: {k: round(float(v), 6) for k, v in (("coverage", r.coverage), ("accuracy", r.accuracy),
                                                             ("worst_class_accuracy", r.worst_class_accuracy))
                          if np.isfinite(v)} for r in summary.itertuples()}
    metrics = {"auto_labels": {"images": len(m), **figures.get("auto", {})}, "human_coarse": figures.get("human", {})}
    metrics = {name: values for name, values in metrics.items() if values}
    if summary["note"].any():
        log.warning("auto-label quality: %s", summary["note"].iloc[0])
    flat = {f"auto_labels/{src}_{k}": {"value": v, "step": 0} for src, d in figures.items() for k, v in d.items()}
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(q["sweep"]["threshold"], q["sweep"]["coverage"], "o-", label="coverage")
    ax.plot(q["sweep"]["threshold"], q["sweep"]["accuracy"], "s-", label="accuracy")
    ax.axvline(cfg.threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("confidence threshold")
    ax.set_title("Auto-labels against held-out fine truth")
    ax.legend()
    fig.tight_layout()
    return summary, q["per_class"], q["sweep"], fig, metrics, flat


def label_panels(auto_labels: dict, auto_label_manifest: pd.DataFrame, raw_data_info: dict, params: dict) -> Figure:
    """image / human coarse / auto-label / confidence, for the first few images."""
    cfg = _config(params)
    root = Path(raw_data_info["root"])
    palette = CITYSCAPES.palette
    rows = auto_label_manifest.head(max(1, cfg.panels))
    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 2.2 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows.itertuples(index=False)):
        key = r.label_path.removesuffix(".png")
        conf_key = r.confidence_path.removesuffix(".png")
        with Image.open(under(root, r.image_path)) as img, Image.open(under(root, r.human_label_path)) as hum:
            image, human = np.asarray(img.convert("RGB")), CITYSCAPES.train_ids(np.asarray(hum))
        label = np.asarray(auto_labels[key]())
        conf = np.asarray(auto_labels[conf_key]())
        for ax, picture, title in zip(ax_row, (image, palette[human], palette[label], conf),
                                      ("image", "human coarse", "auto-label", "confidence")):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig
