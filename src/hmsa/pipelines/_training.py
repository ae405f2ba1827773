"""The training pipeline, one template for every trained model: the teacher, the student
and the student's baselines, each instantiated under its own Kedro namespace.

A namespace's datasets are ``<namespace>.model``, ``<namespace>.registry`` and so on,
stored by the catalog's dataset factories; ``kedro run --namespaces student_single`` trains
one model.
"""

from __future__ import annotations

import logging
from functools import partial, update_wrapper
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.pipeline import Node, Pipeline, pipeline

from hmsa.mlops import tracking
from hmsa.project.config import parse_block
from hmsa.pipelines._namespaces import MODELS
from hmsa.training import run
from hmsa.training.config import RoleConfig
from hmsa.training.selection import training_data

log = logging.getLogger(__name__)

#: the inputs every namespace shares (not prefixed by the namespace)
SHARED_INPUTS = ("image_manifest", "class_pixel_counts", "class_centroids", "raw_data_info")
#: the auto-labelling outputs the student and its baselines also read
AUTO_LABEL_INPUTS = ("auto_label_manifest", "auto_labels_info", "auto_label_centroids")


def role_config(params: dict, name: str, paths: dict | None = None) -> RoleConfig:
    """The validated configuration of model ``name`` (a key of ``MODELS``). Its checkpoints go
    to ``<paths.checkpoints>/<block>`` (``-<baseline>`` for a baseline) unless
    ``trainer.checkpoint_dir`` is set."""
    block, variant = MODELS.get(name, (name, None))
    cfg = parse_block(block, params)
    if "checkpoint_dir" not in cfg.trainer.model_fields_set and paths is not None:
        folder = Path(parse_block("paths", paths).checkpoints) / block
        cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"checkpoint_dir": str(folder)})})
    return cfg.variant(variant) if variant else cfg


def not_asked_for(params: dict, name: str) -> str | None:
    """Why baseline ``name`` is not trained in this run (it is not in ``<block>.variants``), or None."""
    block, variant = MODELS.get(name, (name, None))
    if variant is None or variant in parse_block(block, params).variants:
        return None
    return (f"{name}: not trained, as {block}.variants does not list {variant!r} "
            f"(train it with --params '{block}.variants=[{variant}]')")


def select_training_data(params: dict, image_manifest: pd.DataFrame, class_pixel_counts: pd.DataFrame,
                         class_centroids: pd.DataFrame, raw_data_info: dict[str, Any],
                         auto_label_manifest: pd.DataFrame | None = None, auto_labels_info: dict | None = None,
                         auto_label_centroids: pd.DataFrame | None = None, *, role: str) -> run.TrainData | dict:
    """The images the model trains and validates on (``hmsa.training.selection``); a baseline
    not asked for gets ``{"not_trained": reason}``, which its later nodes pass on."""
    skipped = not_asked_for(params, role)
    if skipped:
        return {"not_trained": skipped}
    return training_data(role_config(params, role), role, image_manifest, class_pixel_counts, class_centroids,
                         raw_data_info, auto_label_manifest, auto_labels_info, auto_label_centroids)


def train_model(params: dict, data: run.TrainData | dict, paths: dict | None = None, *, role: str
                ) -> tuple[dict, pd.DataFrame, dict]:
    """The kept weights, the training curve and the headline metrics under the model's name
    (``{"teacher": {...}}``: each name once in ``dvc exp show``).

    ``role`` comes last: Kedro's parameter validation pairs a node's inputs with the function's
    arguments by position, and would otherwise take ``params:paths`` for the TrainData."""
    if isinstance(data, dict):
        log.info("%s", data["not_trained"])
        return data, pd.DataFrame({"epoch": [], "val_miou": []}), {role: {}}
    bundle, curve, metrics = run.train_bundle(role_config(params, role, paths), role, data,
                                              tracking.EpochLogger.for_active_run())
    return bundle, curve, {role: metrics}


def register_model(params: dict, bundle: dict, *, role: str) -> dict:
    """Log the model to MLflow as a pyfunc, register it and alias the new version ``newest``."""
    cfg = role_config(params, role)
    if "not_trained" in bundle:
        return {"registered_model": cfg.registered_model_name, "version": None, "not_trained": bundle["not_trained"]}
    requirements = [f"{pkg}=={version(pkg)}" for pkg in ("torch", "torchvision", "numpy", "pydantic", "mlflow")]
    info = tracking.log_and_register(bundle, cfg.registered_model_name, requirements, cfg.serving.model_dump())
    if info is None:
        log.info("%s: MLflow tracking is off in this process: model not registered", role)
        return {"registered_model": cfg.registered_model_name, "version": None}
    log.info("%s: registered %s version %s (alias %s)", role, info["registered_model"], info["version"], info["alias"])
    return info


def training_pipeline(name: str) -> Pipeline:
    """Manifests (and, for the student's models, auto-labels) -> model ``name``'s weights,
    training curve, metrics and registered MLflow model, under namespace ``name``.

    The nodes are bound to ``name`` for their messages, metric prefixes and checkpoint folder;
    the datasets and parameters are mapped by Kedro's ``pipeline(namespace=...)``."""
    block, _ = MODELS[name]
    inputs = SHARED_INPUTS + (AUTO_LABEL_INPUTS if block == "student" else ())

    def bound(fn):
        return update_wrapper(partial(fn, role=name), fn)

    template = Pipeline([
        Node(bound(select_training_data), {"params": "params:model", **{i: i for i in inputs}}, "train_data",
             name="select_data"),
        Node(bound(train_model), {"params": "params:model", "data": "train_data", "paths": "params:paths"},
             ["model", "training_curve", "training_metrics"], name="train"),
        Node(bound(register_model), {"params": "params:model", "bundle": "model"}, "registry", name="register"),
    ])
    return pipeline(template, namespace=name, inputs=set(inputs),
                    parameters={"params:model": f"params:{block}", "params:paths": "params:paths"})
