"""The evaluation's inference passes: every model over the grid, the pictures of the best
ones, and the best setting's predictions in the Cityscapes results format."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from tqdm import tqdm

from hmsa.data.labels import LabelSet
from hmsa.evaluation import pictures
from hmsa.evaluation.config import MODEL_NAMES, EvaluationConfig
from hmsa.evaluation.grid import Setting, batches_of, evaluate_grid, predict_grid, settings_for
from hmsa.evaluation.metrics import confusion_matrix, mean_iou
from hmsa.evaluation.report import best_row, setting_of
from hmsa.runtime.device import Runtime, runtime
from hmsa.models.bundle import model_from_bundle
from hmsa.runtime import distributed
from hmsa.training.data import EvalDataset, items_from_manifest

log = logging.getLogger(__name__)


def chosen_models(cfg: EvaluationConfig, models: dict[str, dict | None]) -> dict[str, dict]:
    """The bundles ``evaluation.models`` asks for, in ``MODEL_NAMES`` order. Absent models (no
    teacher on Mapillary) and baselines not trained are left out of ``all``, and are an error
    when named."""
    present = {name: bundle for name, bundle in models.items() if bundle is not None and "not_trained" not in bundle}
    if cfg.models == "all":
        return {name: present[name] for name in MODEL_NAMES if name in present}
    missing = [name for name in cfg.models if name not in present]
    if missing:
        raise ValueError(
            f"evaluation.models: {missing} not trained; set student.variants to train the baselines "
            f"(e.g. --params 'student.variants=[single,explicit,human]') or drop them from evaluation.models"
        )
    return {name: present[name] for name in cfg.models}


def val_items(cfg: EvaluationConfig, image_manifest: pd.DataFrame, root: str, labels: LabelSet):
    """The manifest rows of ``evaluation.split`` with fine labels (sorted, at most
    ``max_images``), and their items."""
    rows = image_manifest[(image_manifest["split"] == cfg.split) & (image_manifest["label_kind"] == "fine")]
    if rows.empty:
        raise ValueError(f"evaluation.split: no images with fine labels in split '{cfg.split}'")
    rows = rows.sort_values("image_id").reset_index(drop=True)
    if cfg.max_images:
        rows = rows.head(cfg.max_images)
    return rows, items_from_manifest(rows, root, labels=labels.name)


def _pairs(items, workers: int = 1):
    yield from DataLoader(EvalDataset(items), batch_size=None, num_workers=workers)


def other_rank(what: str) -> bool:
    """True on torchrun ranks other than 0, which leave ``what`` to rank 0 (it alone writes)."""
    rank = distributed.env_world()[0]
    if rank != 0:
        log.info("rank %d: %s left to rank 0", rank, what)
    return rank != 0


def _runtime(cfg: EvaluationConfig) -> Runtime:
    rt = runtime(cfg.device, cfg.precision, cfg.channels_last, distributed.env_world()[2])
    log.info("evaluation runs on %s", rt.describe())
    return rt


def _model(name: str, bundles: dict[str, dict], rt: Runtime):
    return rt.model(model_from_bundle(bundles[name], f"model {name!r}"))


def _predict(model, rt: Runtime, images: torch.Tensor, setting: Setting, above_one: str) -> torch.Tensor:
    with rt.autocast():
        return predict_grid(model, rt.images(images), [setting], above_one)[setting].float()


def evaluate_models(cfg: EvaluationConfig, bundles: dict[str, dict], items: list,
                    labels: LabelSet) -> tuple[pd.DataFrame, dict]:
    """Every model over the grid: a tidy table (one row per model and setting) and, per
    model, the confusion matrix of its best setting.

    Under torchrun each process scores every world-th image and the confusion matrices are
    summed over the processes: every rank ends with the whole set's table."""
    iou_columns = [f"iou/{name}" for name in labels.class_names]
    rt = _runtime(cfg)
    rank, world, _ = distributed.env_world()
    if world > 1:
        distributed.init(rt.device.type == "cuda")
    share = items[rank::world]
    table, confusions = [], {}
    for name in bundles:
        model = _model(name, bundles, rt)
        settings = settings_for(model, cfg.scale_sets, cfg.fusions, cfg.flip)
        bar = tqdm(total=len(share), desc=f"evaluating {name}", unit="img", disable=not cfg.progress_bar)
        result = evaluate_grid(model, batches_of(_pairs(share), cfg.batch_size), settings, rt, bar.update,
                               combine=distributed.sum_over_ranks, name=f"model {name!r}",
                               above_one=cfg.fuse_above_one)
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


def prediction_pictures(cfg: EvaluationConfig, results: pd.DataFrame, bundles: dict[str, dict], items: list,
                        labels: LabelSet) -> tuple[Figure, Figure]:
    """Attention maps per scale (best HMSA model, its best hierarchical setting) and
    prediction/ground-truth overlays (best model and setting) on the first val images."""
    pairs = list(_pairs(items[: cfg.pictures], workers=0))
    images = torch.stack([p[0] for p in pairs])
    shown = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]
    rt = _runtime(cfg)
    attention_fig = _attention_figure(results, bundles, rt, images, shown, labels, cfg.fuse_above_one)
    best = best_row(results)
    logits = _predict(_model(best["model"], bundles, rt), rt, images, setting_of(best), cfg.fuse_above_one)
    preds = logits.argmax(1).cpu().numpy().astype(np.uint8)
    truths = [p[1].numpy().astype(np.uint8) for p in pairs]
    overlay_fig = pictures.overlays(shown, truths, list(preds), f"{best['model']}, {best['setting']}",
                                    palette=labels.palette)
    return attention_fig, overlay_fig


def _attention_figure(results: pd.DataFrame, bundles: dict[str, dict], rt: Runtime, images: torch.Tensor,
                      shown: list[np.ndarray], labels: LabelSet, above_one: str) -> Figure:
    hier = results[results["fusion"] == "hierarchical"]
    if hier.empty:
        return pictures.attention(shown, [np.zeros(i.shape[:2], np.uint8) for i in shown],
                                  [{1.0: np.zeros(i.shape[:2])} for i in shown],
                                  "no HMSA model evaluated: no attention to show")
    row = best_row(hier)
    model = _model(row["model"], bundles, rt)
    setting = setting_of(row)
    with rt.autocast():
        out = model.predict(rt.images(images), setting.scales, setting.flip, "hierarchical", above_one)
    preds = out["logits"].argmax(1).cpu().numpy().astype(np.uint8)
    attn = [{s: a[i, 0].float().cpu().numpy() for s, a in out["attention"].items()} for i in range(len(shown))]
    return pictures.attention(shown, list(preds), attn, f"{row['model']}, {row['setting']}", labels.palette)


def cityscapes_predictions(cfg: EvaluationConfig, results: pd.DataFrame, bundles: dict[str, dict],
                           rows: pd.DataFrame, items: list, labels: LabelSet) -> dict[str, np.ndarray]:
    """The best model and setting's predictions in the Cityscapes results format: label-id
    PNGs (not trainIds) named ``<city>/<city>_<seq>_<frame>_pred_labelIds``, which the
    official evaluation (cityscapesscripts) matches to the ground truth by that name. The
    pass is scored again, as a check that it predicts what the grid scored.

    Under torchrun each process predicts every world-th image, as the grid does; rank 0
    gathers the label maps and returns them all, the other ranks return nothing."""
    best = best_row(results)
    setting = setting_of(best)
    rt = _runtime(cfg)
    rank, world, _ = distributed.env_world()
    if world > 1:
        distributed.init(rt.device.type == "cuda")
    model = _model(best["model"], bundles, rt)
    names = [f"{r.city}/{r.image_id}_pred_labelIds" for r in rows.itertuples(index=False)][rank::world]
    mine: dict[str, np.ndarray] = {}
    num_classes = model.cfg.num_classes
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=rt.device)
    bar = tqdm(total=len(names), desc="Cityscapes-format predictions", unit="img", disable=not cfg.progress_bar)
    for images, truth in batches_of(_pairs(items[rank::world]), cfg.batch_size):
        pred = _predict(model, rt, images, setting, cfg.fuse_above_one).argmax(1)
        cm += confusion_matrix(pred, truth.to(pred.device), num_classes)
        for p in pred.cpu().numpy().astype(np.uint8):
            mine[names[len(mine)]] = labels.label_ids(p)
        bar.update(len(images))
    bar.close()
    again = mean_iou(distributed.sum_over_ranks(cm).cpu().numpy())
    out = {name: array for share in distributed.gather_to_first(mine) for name, array in share.items()}
    if not math.isclose(again, float(best["miou"]), abs_tol=1e-6):
        log.warning("Cityscapes-format pass scored mIoU %.6f, the grid %.6f for %s %s", again, best["miou"],
                    best["model"], best["setting"])
    log.info("Cityscapes-format predictions: %d label-id PNGs of %s %s (mIoU %.4f; %d predicted by rank %d of %d)",
             len(out), best["model"], best["setting"], again, len(mine), rank, world)
    return out


def champion_candidates(results: pd.DataFrame, registry: dict[str, dict | None]) -> dict[str, tuple]:
    """Per evaluated model with a registered version: (registered model, version, its best
    val mIoU, that setting), what ``tracking.crown`` needs to move the champion alias."""
    versions = {}
    for model in results["model"].unique():
        info = registry.get(model) or {}
        if info.get("version") is not None:
            best = best_row(results, model)
            versions[model] = (info["registered_model"], str(info["version"]), float(best["miou"]), best["setting"])
    return versions
