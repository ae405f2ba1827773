"""Train in whichever process layout applies: one process, spawned DDP, or torchrun's."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmsa.models import ModelConfig
from hmsa.runtime import distributed
from hmsa.training import checkpoint
from hmsa.training.config import RoleConfig, TrainerConfig
from hmsa.training.data import EvalDataset, Item, TrainDataset
from hmsa.runtime.device import pick_device
from hmsa.training.loop import TrainResult, fit, kept_result

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """Everything a training process needs to build its data sets (picklable)."""

    train: list[Item]
    val: list[Item]
    class_pixels: np.ndarray
    centroids: pd.DataFrame | None = None
    #: identifies the training data, so that a checkpoint is resumed only on the same data
    key: str = ""


def _datasets(data: TrainData, cfg: TrainerConfig):
    class_uniform = cfg.sampling == "class_uniform"
    train = TrainDataset(data.train, cfg.crop, cfg.scale_range, cfg.color_jitter, data.centroids, class_uniform)
    val_items = data.val[: cfg.val_images] if cfg.val_images else data.val
    return train, EvalDataset(val_items)


def _fit(rank: int, world: int, model_cfg: ModelConfig, cfg: TrainerConfig, data: TrainData,
         log_fn: Callable | None, local_rank: int = 0) -> TrainResult:
    train, val = _datasets(data, cfg)
    return fit(model_cfg, cfg, train, val, data.class_pixels, log_fn if rank == 0 else None, rank, world, local_rank,
               data.key)


def _spawned(rank: int, world: int, model_cfg, cfg, data, log_fn) -> None:
    _fit(rank, world, model_cfg, cfg, data, log_fn, rank)


def train(model_cfg: ModelConfig, cfg: TrainerConfig, data: TrainData, log_fn: Callable | None = None) -> TrainResult:
    """Train and return the best weights and the history.

    Under torchrun every process calls this and trains its share; with
    ``trainer.devices > 1`` this process spawns the workers and waits; otherwise it trains
    here. Rank 0 alone writes checkpoints and logs.
    """
    rank, world, local_rank = distributed.env_world()
    use_cuda = pick_device(cfg.device).type == "cuda"
    if world > 1:
        distributed.init(use_cuda)
        return _fit(rank, world, model_cfg, cfg, data, log_fn, local_rank)
    if cfg.devices > 1:
        distributed.spawn(_spawned, cfg.devices, use_cuda, model_cfg, cfg, data, log_fn)
        last = checkpoint.load(Path(cfg.checkpoint_dir) / "last.pt")
        return kept_result(cfg, json.loads(last["history"]))
    return _fit(0, 1, model_cfg, cfg, data, log_fn)


class Prefixed:
    """An ``EpochLogger`` that puts the model's name in front of every metric: one MLflow run
    may train several models."""

    def __init__(self, logger, prefix: str):  # tracking.EpochLogger: resumed() takes the prefix
        self.logger, self.prefix = logger, prefix

    @property
    def run_id(self) -> str | None:
        return self.logger.run_id

    def __call__(self, metrics: dict, step: int) -> None:
        self.logger({f"{self.prefix}/{k}": v for k, v in metrics.items()}, step)

    def resumed(self, previous_run_id: str | None) -> None:
        self.logger.resumed(previous_run_id, self.prefix)


def train_bundle(cfg: RoleConfig, name: str, data: TrainData, logger=None) -> tuple[dict, pd.DataFrame, dict]:
    """Train model ``name``; return the kept weights as a bundle (``trainer.keep``), the
    training curve, and the headline figures DVC compares across experiments. ``logger``
    (an MLflow ``tracking.EpochLogger`` or None) gets each epoch's metrics, prefixed with ``name``."""
    result = train(cfg.model, cfg.trainer, data, Prefixed(logger, name) if logger else None)
    curve = pd.DataFrame(result.history)
    bundle = {"model_config": result.model_config, "state_dict": result.state_dict,
              "best_miou": result.best_miou, "best_epoch": result.best_epoch, "kept_epoch": result.kept_epoch}
    kept = float(curve.loc[curve["epoch"] == result.kept_epoch, "val_miou"].iloc[0])
    # every epoch's figures are in the curve; no val mIoU without a val split: left out, as JSON has no NaN
    metrics = {"kept_epoch": result.kept_epoch, "epochs": len(result.history),
               "train_seconds": round(float(curve["seconds"].sum()), 1)}
    if math.isfinite(kept):
        metrics["val_miou"] = round(kept, 6)
    log.info("%s: best val mIoU %.4f at epoch %d, weights of epoch %d kept (trainer.keep: %s), %.0f s", name,
             result.best_miou, result.best_epoch, result.kept_epoch, cfg.trainer.keep, metrics["train_seconds"])
    return bundle, curve, metrics
