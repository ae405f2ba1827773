"""The teacher: loaded from the catalog's bundle or from MLflow, run on the inference runtime
the settings ask for, and its per-pixel prediction (class and confidence)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from hmsa.autolabel.config import AutoLabelConfig
from hmsa.data.labels import LabelSet
from hmsa.runtime.device import Runtime, runtime
from hmsa.models.bundle import model_from_bundle
from hmsa.runtime import distributed
log = logging.getLogger(__name__)


def teacher_runtime(cfg: AutoLabelConfig) -> Runtime:
    """The device, precision and layout of ``auto_labeling`` (this process's GPU under torchrun)."""
    rt = runtime(cfg.device, cfg.precision, cfg.channels_last, distributed.env_world()[2])
    log.info("auto-labelling runs on %s", rt.describe())
    return rt


def load_teacher(cfg: AutoLabelConfig, bundle: dict, labels: LabelSet) -> torch.nn.Module:
    """The teacher ``auto_labeling.teacher`` names: the catalog's ``bundle``, or an MLflow model.
    A teacher of another class count is refused: its trainIds would be read with the wrong table."""
    if cfg.teacher == "catalog":
        model = model_from_bundle(bundle, "teacher.model (data/06_models/teacher.pt)")
    else:
        from hmsa.mlops.tracking import load_segmenter

        log.info("Loading the teacher from %s", cfg.teacher)
        model = load_segmenter(cfg.teacher)
    if model.cfg.num_classes != labels.num_classes:
        raise ValueError(f"auto_labeling.teacher ({cfg.teacher}): the teacher predicts {model.cfg.num_classes} "
                         f"classes, the data set's {labels.name} label set has {labels.num_classes}; label with a "
                         "teacher trained on this data set")
    return model


@torch.no_grad()
def predict(model, images: torch.Tensor, scales, flip: bool, rt: Runtime | None = None,
            above_one: str = "image_size") -> tuple[np.ndarray, np.ndarray]:
    """(argmax trainIds, confidence) for a batch of float images in [0, 1], run as ``rt``
    says (default: fp32 on the model's device); ``above_one`` as in ``Segmenter.predict``."""
    rt = rt or Runtime(next(model.parameters()).device)
    with rt.autocast():
        logits = model.predict(rt.images(images), scales=scales, flip=flip, above_one=above_one)["logits"]
    probs = torch.softmax(logits.float(), dim=1)
    confidence, prediction = probs.max(dim=1)
    return prediction.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy()
