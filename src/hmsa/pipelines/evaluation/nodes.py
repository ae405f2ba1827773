"""Nodes of the evaluation pipeline."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from tqdm import tqdm

from hmsa.config import parse_block
from hmsa.data.labels import LabelSet, label_set
from hmsa.evaluation import pictures
from hmsa.evaluation.config import MODEL_NAMES, EvaluationConfig
from hmsa.evaluation.grid import SINGLE, Setting, batches_of, evaluate_grid, predict_grid, settings_for
from hmsa.evaluation.metrics import confusion_matrix, mean_iou
from hmsa.serving import model_from_bundle
from hmsa.training import distributed
from hmsa.training.data import EvalDataset, items_from_manifest
from hmsa.models.runtime import Runtime, runtime

log = logging.getLogger(__name__)


def _labels(raw_data_info: dict) -> LabelSet:
    return label_set(raw_data_info.get("labels", "cityscapes"))


def _classes(results: pd.DataFrame) -> list[str]:
    """The class names of a results table, in trainId order (its ``iou/<class>`` columns)."""
    return [c[4:] for c in results.columns if c.startswith("iou/")]


def _config(params: dict) -> EvaluationConfig:
    return parse_block("evaluation", params)


def _bundles(cfg: EvaluationConfig, teacher_model: dict, student_model: dict, student_variants: dict) -> dict[str, dict]:
    present = {"teacher": teacher_model, "student": student_model}
    present |= {f"student_{name}": bundle for name, bundle in (student_variants or {}).items()}
    present = {name: bundle for name, bundle in present.items() if bundle is not None}  # e.g. no teacher (Mapillary)
    if cfg.models == "all":
        return {name: present[name] for name in MODEL_NAMES if name in present}
    missing = [name for name in cfg.models if name not in present]
    if missing:
        raise ValueError(
            f"evaluation.models: {missing} not trained; set student.variants to train the baselines "
            f"(e.g. --params 'student.variants=[single,explicit,human]') or drop them from evaluation.models"
        )
    return {name: present[name] for name in cfg.models}


def _val_items(cfg: EvaluationConfig, image_manifest: pd.DataFrame, raw_data_info: dict):
    rows = image_manifest[(image_manifest["split"] == cfg.split) & (image_manifest["label_kind"] == "fine")]
    if rows.empty:
        raise ValueError(f"evaluation.split: no images with fine labels in split '{cfg.split}'")
    rows = rows.sort_values("image_id").reset_index(drop=True)
    if cfg.max_images:
        rows = rows.head(cfg.max_images)
    return rows, items_from_manifest(rows, raw_data_info["root"], labels=_labels(raw_data_info).name)


def _pairs(items, workers: int = 1):
    loader = DataLoader(EvalDataset(items), batch_size=None, num_workers=workers)
    yield from loader


def _label(setting: Setting) -> str:
    scales = "[" + ", ".join(f"{s:g}" for s in setting.scales) + "]"
    return f"{setting.fusion} {scales}" + (" +flip" if setting.flip else "")


def _other_rank(what: str) -> bool:
    """True on torchrun ranks other than 0, which leave ``what`` to rank 0 (it alone writes)."""
    rank = distributed.env_world()[0]
    if rank != 0:
        log.info("rank %d: %s left to rank 0", rank, what)
    return rank != 0


def evaluate(params: dict, teacher_model: dict, student_model: dict, student_variants: dict,
             image_manifest: pd.DataFrame, raw_data_info: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Every model over the grid: a tidy table (one row per model and setting) and, per
    model, the confusion matrix of its best setting.

    Under torchrun each process scores every world-th image and the confusion matrices are
    summed over the processes: every rank ends with the whole set's table."""
    cfg = _config(params)
    bundles = _bundles(cfg, teacher_model, student_model, student_variants)
    rows, items = _val_items(cfg, image_manifest, raw_data_info)
    iou_columns = [f"iou/{name}" for name in _labels(raw_data_info).class_names]
    rt = _runtime(cfg)
    rank, world, _ = distributed.env_world()
    if world > 1:
        distributed.init(rt.device.type == "cuda")
    share = items[rank::world]
    table, confusions = [], {}
    for name, bundle in bundles.items():
        model = rt.model(model_from_bundle(bundle, f"model {name!r}"))
        settings = settings_for(model, cfg.scale_sets, cfg.fusions, cfg.flip)
        bar = tqdm(total=len(share), desc=f"evaluating {name}", unit="img", disable=not cfg.progress_bar)
        result = evaluate_grid(model, batches_of(_pairs(share), cfg.batch_size), settings, rt, bar.update,
                               combine=distributed.sum_over_ranks, name=f"model {name!r}")
        bar.close()
        for setting in settings:
            scores = result.scores(setting)
            table.append({
                "model": name, "kind": model.cfg.kind, "fusion": setting.fusion, "scales": setting.scales_key,
                "flip": setting.flip, "setting": setting.name, "images": len(items),
                "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
                **dict(zip(iou_columns, scores["iou"])),
            })
        best = result.best()
        confusions[name] = {"setting": best.name, "matrix": result.confusions[best].tolist()}
        log.info("evaluation: %s best %s mIoU %.4f (%d settings, %d images, %d scored by rank %d of %d)", name,
                 best.name, result.scores(best)["miou"], len(settings), len(items), len(share), rank, world)
    return pd.DataFrame(table), confusions


def _best_row(results: pd.DataFrame, model: str | None = None) -> pd.Series:
    rows = results if model is None else results[results["model"] == model]
    return rows.loc[rows["miou"].idxmax()]


def _setting(row: pd.Series) -> Setting:
    return Setting(row["fusion"], tuple(float(s) for s in row["scales"].split("-")), bool(row["flip"]))


#: the multi-scale figure of the headline: each kind's own fusion on the paper's scales
HEADLINE_SCALES = "0.5-1.0-2.0"
OWN_FUSION = {"hmsa": "hierarchical", "explicit": "explicit", "single": "average"}


def headline(results: pd.DataFrame) -> dict[str, Any]:
    """What DVC's metrics file holds, a few figures that fit beside another experiment's: the
    best model and setting, and per model its val mIoU at 1.0 (``miou_1x``), with its own
    fusion on [0.5, 1, 2] (``miou_multiscale``: HMSA's for HMSA models), and its best setting.
    The whole grid is evaluation_results.csv (and MLflow). A figure not evaluated is left out."""
    best = _best_row(results)
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
        top = _best_row(rows)
        metrics[model] = {**entry, "best_miou": round(float(top["miou"]), 6), "best_setting": top["setting"]}
    return metrics


def report(results: pd.DataFrame) -> tuple[dict, dict, pd.DataFrame]:
    """The headline metrics for DVC, every metric for MLflow, and the best setting's per-class IoU."""
    best = _best_row(results)
    metrics = headline(results)
    mlflow_metrics = {}
    for _, r in results.iterrows():
        key = f"{r['model']}/{r['setting']}"
        mlflow_metrics[f"mIoU/{key}"] = float(r["miou"])
        mlflow_metrics[f"pixel_accuracy/{key}"] = float(r["pixel_accuracy"])
        for name in _classes(results):
            if np.isfinite(r[f"iou/{name}"]):
                mlflow_metrics[f"IoU/{name}/{key}"] = float(r[f"iou/{name}"])
    mlflow_metrics["best_mIoU"] = float(best["miou"])
    per_class = pd.DataFrame({"class": _classes(results), "iou": [best[f"iou/{c}"] for c in _classes(results)]}).dropna()
    for model in results["model"].unique():
        row = _best_row(results, model)
        log.info("evaluation: %s best mIoU %.4f (%s)", model, row["miou"], row["setting"])
    log.info("evaluation: the whole table: python -m hmsa.evaluation (data/08_reporting/evaluation_results.csv)")
    return metrics, {k: {"value": v, "step": 0} for k, v in mlflow_metrics.items() if math.isfinite(v)}, per_class


def fusion_plot(results: pd.DataFrame) -> Figure:
    """Per-class IoU of the best model: single scale against each fusion rule, on the scale
    set of its best setting (the widest set when that is single scale)."""
    best = _best_row(results)
    rows = results[(results["model"] == best["model"]) & (results["flip"] == best["flip"])]
    multi = rows[rows["fusion"] != SINGLE]
    if not multi.empty:
        chosen = best["scales"] if best["fusion"] != SINGLE else max(
            multi["scales"].unique(), key=lambda s: (len(s.split("-")), s))
        rows = pd.concat([rows[rows["fusion"] == SINGLE], multi[multi["scales"] == chosen]])
    rows = rows.assign(label=[_label(_setting(r)) for _, r in rows.iterrows()])
    return pictures.per_class_iou(rows, _classes(results), f"Per-class IoU by fusion rule: {best['model']}")


def confusion_plot(results: pd.DataFrame, confusions: dict) -> Figure:
    """Confusion matrix of the best model at its best setting."""
    best = _best_row(results)
    entry = confusions[best["model"]]
    return pictures.confusion(np.asarray(entry["matrix"]), _classes(results),
                              f"{best['model']}, {entry['setting']}: rows normalised")


def _runtime(cfg: EvaluationConfig) -> Runtime:
    rt = runtime(cfg.device, cfg.precision, cfg.channels_last, distributed.env_world()[2])
    log.info("evaluation runs on %s", rt.describe())
    return rt


def _load_model(name: str, bundles: dict[str, dict], rt: Runtime):
    return rt.model(model_from_bundle(bundles[name], f"model {name!r}"))


def _predict(model, rt: Runtime, images: torch.Tensor, setting: Setting) -> torch.Tensor:
    with rt.autocast():
        return predict_grid(model, rt.images(images), [setting])[setting].float()


def prediction_pictures(params: dict, results: pd.DataFrame, teacher_model: dict, student_model: dict,
                        student_variants: dict, image_manifest: pd.DataFrame,
                        raw_data_info: dict[str, Any]) -> tuple[Figure, Figure]:
    """Attention maps per scale (best HMSA model, its best hierarchical setting) and
    prediction/ground-truth overlays (best model and setting) on the first val images."""
    if _other_rank("the pictures"):
        return Figure(), Figure()
    cfg = _config(params)
    bundles = _bundles(cfg, teacher_model, student_model, student_variants)
    _, items = _val_items(cfg, image_manifest, raw_data_info)
    pairs = list(_pairs(items[: cfg.pictures], workers=0))
    images = torch.stack([p[0] for p in pairs])
    shown = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]
    rt = _runtime(cfg)

    hier = results[results["fusion"] == "hierarchical"]
    if hier.empty:
        attention_fig = pictures.attention(shown, [np.zeros(i.shape[:2], np.uint8) for i in shown],
                                           [{1.0: np.zeros(i.shape[:2])} for i in shown],
                                           "no HMSA model evaluated: no attention to show")
    else:
        row = _best_row(hier)
        model = _load_model(row["model"], bundles, rt)
        setting = _setting(row)
        with rt.autocast():
            out = model.predict(rt.images(images), setting.scales, setting.flip, "hierarchical")
        preds = out["logits"].argmax(1).cpu().numpy().astype(np.uint8)
        attn = [{s: a[i, 0].float().cpu().numpy() for s, a in out["attention"].items()} for i in range(len(shown))]
        attention_fig = pictures.attention(shown, list(preds), attn, f"{row['model']}, {row['setting']}",
                                           _labels(raw_data_info).palette)

    best = _best_row(results)
    model = _load_model(best["model"], bundles, rt)
    logits = _predict(model, rt, images, _setting(best))
    preds = logits.argmax(1).cpu().numpy().astype(np.uint8)
    truths = [p[1].numpy().astype(np.uint8) for p in pairs]
    overlay_fig = pictures.overlays(shown, truths, list(preds), f"{best['model']}, {best['setting']}",
                                    palette=_labels(raw_data_info).palette)
    return attention_fig, overlay_fig


def cityscapes_predictions(params: dict, results: pd.DataFrame, teacher_model: dict, student_model: dict,
                           student_variants: dict, image_manifest: pd.DataFrame,
                           raw_data_info: dict[str, Any]) -> dict[str, np.ndarray]:
    """The best model and setting's predictions in the Cityscapes results format: label-id
    PNGs (not trainIds) named ``<city>/<city>_<seq>_<frame>_pred_labelIds``, which the
    official evaluation (cityscapesscripts) matches to the ground truth by that name."""
    if _other_rank("the Cityscapes-format predictions"):
        return {}
    cfg = _config(params)
    bundles = _bundles(cfg, teacher_model, student_model, student_variants)
    rows, items = _val_items(cfg, image_manifest, raw_data_info)
    best = _best_row(results)
    setting = _setting(best)
    rt = _runtime(cfg)
    model = _load_model(best["model"], bundles, rt)
    names = [f"{r.city}/{r.image_id}_pred_labelIds" for r in rows.itertuples(index=False)]
    out: dict[str, np.ndarray] = {}
    labels_of = _labels(raw_data_info)
    num_classes = model.cfg.num_classes
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    bar = tqdm(total=len(items), desc="Cityscapes-format predictions", unit="img", disable=not cfg.progress_bar)
    for images, labels in batches_of(_pairs(items), cfg.batch_size):
        pred = _predict(model, rt, images, setting).argmax(1).cpu()
        cm += confusion_matrix(pred, labels, num_classes)
        for p in pred.numpy().astype(np.uint8):
            out[names[len(out)]] = labels_of.label_ids(p)
        bar.update(len(images))
    bar.close()
    again = mean_iou(cm.numpy())
    if not math.isclose(again, float(best["miou"]), abs_tol=1e-6):
        log.warning("Cityscapes-format pass scored mIoU %.6f, the grid %.6f for %s %s", again, best["miou"],
                    best["model"], best["setting"])
    log.info("Cityscapes-format predictions: %d label-id PNGs of %s %s (mIoU %.4f)", len(out), best["model"],
             best["setting"], again)
    return out


def set_champions(params: dict, results: pd.DataFrame, teacher_registry: dict, student_registry: dict,
                  student_variants_registry: dict) -> dict:
    """Tag each evaluated registered version with its best val mIoU, then move the alias
    ``champion`` to the best-scoring version of each registered model."""
    if _other_rank("the champion alias"):
        return {}
    cfg = _config(params)
    registry = {"teacher": teacher_registry, "student": student_registry}
    registry |= {f"student_{name}": info for name, info in (student_variants_registry or {}).items()}
    versions = {}
    for model in results["model"].unique():
        info = registry.get(model) or {}
        if info.get("version") is not None:
            best = _best_row(results, model)
            versions[model] = (info["registered_model"], str(info["version"]), float(best["miou"]), best["setting"])
    if not versions:
        log.info("evaluation: no registered model versions (MLflow off): no %s alias set", cfg.champion_alias)
        return {}
    from hmsa import tracking

    return tracking.crown(versions, cfg.champion_alias)
