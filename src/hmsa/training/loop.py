"""The training loop, shared by teacher, student and the baselines.

SGD with momentum and a poly learning-rate schedule, mixed precision on CUDA, a checkpoint
after every epoch (atomic), resume from the last one, the best checkpoint by val mIoU, and
DistributedDataParallel when run in several processes (see ``distributed.py``). Only rank 0
writes checkpoints and calls ``log_fn``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from hmsa.evaluation.metrics import confusion_matrix, mean_iou
from hmsa.models import ModelConfig, build_model
from hmsa.models.loss import SegmentationLoss, class_balanced_weights
from hmsa.runtime.device import cpu_has_native_bf16, pick_device, uses_channels_last
from hmsa.training import checkpoint
from hmsa.training.config import TrainerConfig

log = logging.getLogger(__name__)

#: trainer fields that do not change what is learned: a checkpoint stays resumable across them
_NON_SEMANTIC = {"num_workers", "progress_bar", "resume", "val_batch_size", "checkpoint_dir", "device", "devices", "keep",
                 "recompute_loss"}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """The kept weights (``trainer.keep``: best by val mIoU, or last) with the configuration,
    the best epoch and its val mIoU, and the per-epoch history."""

    model_config: dict
    state_dict: dict
    best_miou: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    #: the epoch whose weights ``state_dict`` holds
    kept_epoch: int = -1


def kept_result(cfg: TrainerConfig, history: list[dict]) -> TrainResult:
    """The weights ``cfg.keep`` asks for, read from ``cfg.checkpoint_dir`` (best.pt or last.pt)."""
    ckpt_dir = Path(cfg.checkpoint_dir)
    best = checkpoint.load(ckpt_dir / "best.pt")
    if cfg.keep == "best":
        return TrainResult(best["model_config"], best["state_dict"], best["best_miou"], best["best_epoch"], history,
                           best["best_epoch"])
    last = checkpoint.load(ckpt_dir / "last.pt")
    return TrainResult(best["model_config"], last["state_dict"], best["best_miou"], best["best_epoch"], history,
                       last["epoch"] + 1)


def fingerprint(model_cfg: ModelConfig, cfg: TrainerConfig, data_key: str = "") -> str:
    """Identifies a training setup (model, trainer, data); a checkpoint is resumed only under the same one."""
    trainer = {k: v for k, v in cfg.model_dump().items() if k not in _NON_SEMANTIC}
    text = json.dumps({"model": model_cfg.model_dump(), "trainer": trainer, "data": data_key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _precision(cfg: TrainerConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype. CUDA: bf16 or fp16 (``auto`` picks bf16 where the GPU supports it).
    CPU: none (fp32) unless ``bf16`` is asked for: oneDNN runs it natively on CPUs with
    AVX512-BF16 or AMX (a 0.63-0.83x training step here), emulated and slower elsewhere."""
    if cfg.precision == "fp32" or (device.type != "cuda" and cfg.precision == "auto"):
        return None
    if device.type != "cuda":
        if cfg.precision == "fp16":
            raise ValueError("trainer.precision fp16 needs a CUDA device; on the CPU set trainer.precision "
                             "to bf16 (mixed precision) or fp32")
        if not cpu_has_native_bf16():
            log.warning("trainer.precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so autocast "
                        "emulates it and training runs slower than fp32; set trainer.precision: fp32")
        return torch.bfloat16
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def recomputes_loss(cfg: TrainerConfig, device: torch.device) -> bool:
    """recompute_loss on, or auto on CUDA, where memory is scarce; the CPU keeps the tensors."""
    return cfg.recompute_loss == "on" or (cfg.recompute_loss == "auto" and device.type == "cuda")


def for_device(model: torch.nn.Module, cfg: TrainerConfig, device: torch.device, world: int) -> torch.nn.Module:
    """The device's settings: channels-last memory by ``hmsa.runtime.device``'s rule (CUDA, or a
    CPU with oneDNN), and on CUDA the recipe's BatchNorm statistics synchronised across DDP
    processes (SyncBatchNorm: batch 1 per GPU) and cuDNN's autotuner (fixed crop sizes)."""
    cuda = device.type == "cuda"
    if world > 1 and cuda:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if uses_channels_last(cfg.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True
    return model


def poly_lambda(total: int, power: float) -> Callable[[int], float]:
    """lr factor (1 - it/total) ** power."""
    return lambda it: max(0.0, 1.0 - it / max(1, total)) ** power


@torch.no_grad()
def validate(model, dataset: Dataset, device: torch.device, batch_size: int = 4, scales=(1.0,),
             rank: int = 0, world: int = 1) -> float:
    """mIoU over ``dataset`` (sharded over ranks, confusion summed), at the given scales."""
    model.eval()
    shard = Subset(dataset, list(range(rank, len(dataset), world)))
    num_classes = model.cfg.num_classes
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for images, masks in DataLoader(shard, batch_size=batch_size):
        logits = model.predict(images.to(device), scales=scales)["logits"]
        cm += confusion_matrix(logits.argmax(1), masks.to(device), num_classes)
    if world > 1:
        dist.all_reduce(cm)
    return mean_iou(cm.cpu().numpy())


def _metrics(row: dict) -> dict[str, float]:
    """An epoch's history row as MLflow metric names."""
    return {f"train/{k}": v for k, v in row.items() if k not in ("epoch", "iteration", "val_miou")} | {
        "val/mIoU": row["val_miou"]}


@runtime_checkable
class EpochLogger(Protocol):
    """Where ``fit`` reports, on rank 0: each epoch's metrics, the run that ``last.pt`` will name
    (``run_id``), and which run wrote the checkpoint a resumed training continues (``resumed``)."""

    run_id: str | None

    def __call__(self, metrics: dict[str, float], step: int) -> None: ...

    def resumed(self, previous_run_id: str | None) -> None: ...


@dataclass
class _PlainLogger:
    """A bare ``(metrics, step)`` function as an ``EpochLogger``: no run to name or to link."""

    fn: Callable[[dict, int], None]
    run_id: str | None = None

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.fn(metrics, step)

    def resumed(self, previous_run_id: str | None) -> None:
        pass


@dataclass
class _Setup:
    """What one training process builds before its first step."""

    device: torch.device
    model: torch.nn.Module
    net: torch.nn.Module  # ``model``, wrapped in DDP when there are several processes
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: RandomSampler | DistributedSampler
    total: int  # iterations
    epochs: int
    channels_last: bool
    autocast_dtype: torch.dtype | None


@dataclass
class _Progress:
    """Where training stands: what ``last.pt`` saves and a resumed run restores."""

    start_epoch: int = 0
    iteration: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)


def _set_up(model_cfg: ModelConfig, cfg: TrainerConfig, train_set: Dataset, class_pixels, rank: int, world: int,
            local_rank: int) -> _Setup:
    device = pick_device(cfg.device, local_rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = for_device(build_model(model_cfg), cfg, device, world).to(device)
    weights = None
    if cfg.class_weights == "balanced":
        if class_pixels is None:
            raise ValueError("trainer.class_weights=balanced needs the class pixel counts of the training set")
        weights = class_balanced_weights(class_pixels, cfg.class_weight_power)
    criterion = SegmentationLoss(cfg.aux_weight, cfg.scale_weight, weights,
                                 recompute=recomputes_loss(cfg, device), aux_size=cfg.aux_loss_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sampler = (DistributedSampler(train_set, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
               if world > 1 else RandomSampler(train_set, generator=torch.Generator()))
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        drop_last=len(train_set) >= cfg.batch_size * world, pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed + rank),
    )
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(f"no training batch: {len(train_set)} samples for batch_size {cfg.batch_size} x {world} processes")
    total = min(cfg.max_iterations or cfg.epochs * per_epoch, cfg.epochs * per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total, cfg.poly_power))
    autocast_dtype = _precision(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Setup(device, model, net, criterion, optimizer, scheduler, scaler, loader, sampler, total,
                  math.ceil(total / per_epoch), uses_channels_last(cfg.channels_last, device), autocast_dtype)


def _resume(run: _Setup, path: Path, key: str, logger: EpochLogger | None, main: bool) -> _Progress:
    """The progress ``path`` (last.pt) holds when it was made by the same setup (``key``), with
    the weights and optimiser state put back; a fresh start otherwise. The logger hears of the
    earlier run and gets the earlier epochs again, so that its run holds the whole curve."""
    if not path.is_file():
        return _Progress()
    state = checkpoint.load(path)
    if state.get("fingerprint") != key or "state_dict" not in state:  # (older checkpoints: "model")
        if main:
            log.warning("%s was made with other settings: starting afresh", path)
        return _Progress()
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    progress = _Progress(state["epoch"] + 1, state["iteration"], state["best_miou"], state["best_epoch"],
                         json.loads(state["history"]))
    log.info("Resuming from %s after epoch %d (iteration %d)", path, progress.start_epoch, progress.iteration)
    if logger is not None:
        logger.resumed(state.get("mlflow_run_id"))
        for row in progress.history:
            logger(_metrics(row), row["epoch"])
    return progress


def _train_epoch(run: _Setup, epoch: int, progress: _Progress, world: int, show: bool, last_path: Path) -> dict:
    """One epoch of SGD steps (up to the run's last iteration); its history row, without validation."""
    run.net.train()
    sums: dict[str, float] = {}
    seen, steps, start = 0, 0, time.perf_counter()
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{run.epochs}", disable=None if show else True, leave=False,
               mininterval=2)
    for images, masks in bar:
        if progress.iteration >= run.total:
            break
        images = images.to(run.device, non_blocking=True)
        masks = masks.to(run.device, non_blocking=True)
        if run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=run.autocast_dtype or torch.float32,
                            enabled=run.autocast_dtype is not None):
            parts = run.criterion(run.net(images), masks)
        loss = parts["total"]
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss.item()} at iteration {progress.iteration + 1} (lr "
                f"{run.scheduler.get_last_lr()[0]:.3g}); lower trainer.lr. The last good checkpoint is kept at {last_path}."
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        progress.iteration += 1
        steps += 1
        seen += images.shape[0] * world
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        if show:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}",
                            img_s=f"{seen / (time.perf_counter() - start):.1f}")
    seconds = time.perf_counter() - start
    steps = max(1, steps)
    row = {"epoch": epoch + 1, "iteration": progress.iteration, "lr": run.scheduler.get_last_lr()[0],
           "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}
    row.update({f"loss_{name}" if name != "total" else "loss": value / steps for name, value in sums.items()})
    return row


def _save_checkpoints(run: _Setup, model_cfg: ModelConfig, progress: _Progress, epoch: int, improved: bool,
                      key: str, ckpt_dir: Path, run_id: str | None) -> None:
    """best.pt when the epoch improved, and last.pt always: the same format, last.pt with the
    optimiser, schedule and history a resumed run needs (atomic writes: a kill keeps the old)."""
    weights = {"model_config": model_cfg.model_dump(), "state_dict": run.model.state_dict(),
               "best_miou": progress.best_miou, "best_epoch": progress.best_epoch, "epoch": epoch}
    if improved:
        checkpoint.save_atomic(weights, ckpt_dir / "best.pt")
    checkpoint.save_atomic(weights | {
        "fingerprint": key, "iteration": progress.iteration, "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "history": json.dumps(progress.history), "mlflow_run_id": run_id or "",
    }, ckpt_dir / "last.pt")


def fit(model_cfg: ModelConfig, cfg: TrainerConfig, train_set: Dataset, val_set: Dataset | None,
        class_pixels: np.ndarray | None = None, log_fn: EpochLogger | Callable[[dict, int], None] | None = None,
        rank: int = 0, world: int = 1, local_rank: int = 0, data_key: str = "") -> TrainResult:
    """Train ``model_cfg`` on ``train_set``; validate on ``val_set`` after each epoch.

    Writes ``last.pt`` and ``best.pt`` into ``cfg.checkpoint_dir`` (rank 0), returns the
    weights ``cfg.keep`` names (see :func:`kept_result`), and resumes from ``last.pt`` when
    it was made by the same setup (see :func:`fingerprint`; ``data_key`` identifies the
    training data). ``log_fn`` is an ``EpochLogger``, or a bare ``(metrics, step)`` function.
    """
    main = rank == 0
    logger = None if log_fn is None or not main else log_fn if isinstance(log_fn, EpochLogger) else _PlainLogger(log_fn)
    ckpt_dir = Path(cfg.checkpoint_dir)
    run = _set_up(model_cfg, cfg, train_set, class_pixels, rank, world, local_rank)
    key = fingerprint(model_cfg, cfg, data_key)
    progress = _resume(run, ckpt_dir / "last.pt", key, logger, main) if cfg.resume else _Progress()
    for epoch in range(progress.start_epoch, run.epochs):
        if world > 1:
            run.sampler.set_epoch(epoch)
        else:
            run.sampler.generator.manual_seed(cfg.seed + epoch)
        # every random draw of an epoch (augmentation, worker seeds, dropout) depends on
        # (seed, epoch, rank) only, so that a resumed run continues bit for bit
        epoch_seed = (cfg.seed * 1_000_003 + epoch) * 1_009 + rank
        torch.manual_seed(epoch_seed)
        run.loader.generator.manual_seed(epoch_seed)
        row = _train_epoch(run, epoch, progress, world, main and cfg.progress_bar, ckpt_dir / "last.pt")
        row["val_miou"] = (validate(run.model, val_set, run.device, cfg.val_batch_size, model_cfg.val_scales, rank,
                                    world) if val_set is not None and len(val_set) else float("nan"))
        progress.history.append(row)
        improved = row["val_miou"] > progress.best_miou or progress.best_epoch < 0
        if improved:
            progress.best_miou, progress.best_epoch = row["val_miou"], epoch + 1
        if main:
            log.info("epoch %d/%d: loss %.4f, val mIoU %.4f, %.1f images/s",
                     epoch + 1, run.epochs, row["loss"], row["val_miou"], row["images_per_s"])
            _save_checkpoints(run, model_cfg, progress, epoch, improved, key, ckpt_dir,
                              logger.run_id if logger is not None else None)
            if logger is not None:
                logger(_metrics(row), epoch + 1)
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.barrier()
    return kept_result(cfg, progress.history)
