"""Train in whichever process layout applies: one process, spawned DDP, or torchrun's."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmsa.models import ModelConfig
from hmsa.training import checkpoint, distributed
from hmsa.training.config import TrainerConfig
from hmsa.training.data import EvalDataset, Item, TrainDataset
from hmsa.models.runtime import pick_device
from hmsa.training.loop import TrainResult, fit, kept_result


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
