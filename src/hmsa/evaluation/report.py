"""What the evaluation's results table says: the best rows, DVC's headline metrics, MLflow's
metrics and the figures, from the tidy table alone (no models, no images)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmsa.evaluation import pictures
from hmsa.evaluation.grid import SINGLE, Setting

log = logging.getLogger(__name__)

#: the multi-scale figure of the headline: each kind's own fusion on the paper's scales
HEADLINE_SCALES = "0.5-1.0-2.0"
OWN_FUSION = {"hmsa": "hierarchical", "explicit": "explicit", "single": "average"}


def classes(results: pd.DataFrame) -> list[str]:
    """The class names of a results table, in trainId order (its ``iou/<class>`` columns)."""
    return [c[4:] for c in results.columns if c.startswith("iou/")]


def best_row(results: pd.DataFrame, model: str | None = None) -> pd.Series:
    """The row with the highest mIoU (of ``model``, when given)."""
    rows = results if model is None else results[results["model"] == model]
    return rows.loc[rows["miou"].idxmax()]


def setting_of(row: pd.Series) -> Setting:
    """The inference setting a results row was scored with."""
    return Setting(row["fusion"], tuple(float(s) for s in row["scales"].split("-")), bool(row["flip"]))


def label(setting: Setting) -> str:
    """A setting as a figure's legend shows it: ``hierarchical [0.5, 1, 2] +flip``."""
    scales = "[" + ", ".join(f"{s:g}" for s in setting.scales) + "]"
    return f"{setting.fusion} {scales}" + (" +flip" if setting.flip else "")


def headline(results: pd.DataFrame) -> dict[str, Any]:
    """What DVC's metrics file holds, a few figures that fit beside another experiment's: the
    best model and setting, and per model its val mIoU at 1.0 (``miou_1x``), with its own
    fusion on [0.5, 1, 2] (``miou_multiscale``: HMSA's for HMSA models), and its best setting.
    The whole grid is evaluation_results.csv (and MLflow). A figure not evaluated is left out."""
    best = best_row(results)
    metrics: dict[str, Any] = {
        "best": {"model": best["model"], "setting": best["setting"], "miou": round(float(best["miou"]), 6)}}
    for model, rows in results.groupby("model", sort=False):
        plain = rows[~rows["flip"].astype(bool)]
        own = OWN_FUSION.get(rows["kind"].iloc[0])
        entry = {}
        for key, cells in (("miou_1x", plain[plain["setting"] == "single/1.0"]),
                           ("miou_multiscale", plain[plain["setting"] == f"{own}/{HEADLINE_SCALES}"])):
            if len(cells) and math.isfinite(cells["miou"].iloc[0]):
                entry[key] = round(float(cells["miou"].iloc[0]), 6)
        top = best_row(rows)
        metrics[model] = {**entry, "best_miou": round(float(top["miou"]), 6), "best_setting": top["setting"]}
    return metrics


def mlflow_metrics(results: pd.DataFrame) -> dict[str, dict]:
    """Every figure of the table as an MLflow metric (``mIoU/<model>/<setting>``, per-class
    IoU, pixel accuracy) plus ``best_mIoU``, in kedro-mlflow's metrics-history form."""
    metrics = {}
    for _, r in results.iterrows():
        key = f"{r['model']}/{r['setting']}"
        metrics[f"mIoU/{key}"] = float(r["miou"])
        metrics[f"pixel_accuracy/{key}"] = float(r["pixel_accuracy"])
        for name in classes(results):
            if np.isfinite(r[f"iou/{name}"]):
                metrics[f"IoU/{name}/{key}"] = float(r[f"iou/{name}"])
    metrics["best_mIoU"] = float(best_row(results)["miou"])
    return {k: {"value": v, "step": 0} for k, v in metrics.items() if math.isfinite(v)}


def per_class(results: pd.DataFrame) -> pd.DataFrame:
    """The best model and setting's IoU per class (classes never seen left out)."""
    best = best_row(results)
    return pd.DataFrame({"class": classes(results), "iou": [best[f"iou/{c}"] for c in classes(results)]}).dropna()


def fusion_plot(results: pd.DataFrame) -> Figure:
    """Per-class IoU of the best model: single scale against each fusion rule, on the scale
    set of its best setting (the widest set when that is single scale)."""
    best = best_row(results)
    rows = results[(results["model"] == best["model"]) & (results["flip"] == best["flip"])]
    multi = rows[rows["fusion"] != SINGLE]
    if not multi.empty:
        chosen = best["scales"] if best["fusion"] != SINGLE else max(
            multi["scales"].unique(), key=lambda s: (len(s.split("-")), s))
        rows = pd.concat([rows[rows["fusion"] == SINGLE], multi[multi["scales"] == chosen]])
    rows = rows.assign(label=[label(setting_of(r)) for _, r in rows.iterrows()])
    return pictures.per_class_iou(rows, classes(results), f"Per-class IoU by fusion rule: {best['model']}")


def confusion_plot(results: pd.DataFrame, confusions: dict) -> Figure:
    """Confusion matrix of the best model at its best setting."""
    best = best_row(results)
    entry = confusions[best["model"]]
    return pictures.confusion(np.asarray(entry["matrix"]), classes(results),
                              f"{best['model']}, {entry['setting']}: rows normalised")


def log_summary(results: pd.DataFrame) -> None:
    """One log line per model: its best setting."""
    for model in results["model"].unique():
        row = best_row(results, model)
        log.info("evaluation: %s best mIoU %.4f (%s)", model, row["miou"], row["setting"])
    log.info("evaluation: the whole table: python -m hmsa.commands.results (data/08_reporting/evaluation_results.csv)")


def summary_table(results: pd.DataFrame) -> str:
    """mIoU in points: one row per model, fusion and flip, one column per scale set."""
    table = results.assign(miou=results["miou"] * 100, flip=results["flip"].map({True: "flip", False: ""}))
    pivot = table.pivot_table(index=["model", "fusion", "flip"], columns="scales", values="miou", sort=False)
    order = sorted(pivot.columns, key=lambda s: (len(s.split("-")), s))
    return pivot[order].to_string(float_format=lambda v: f"{v:.1f}", na_rep="-")
