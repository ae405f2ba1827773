"""Training benchmarks: throughput, and activation memory of HMSA against its baselines."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml

from hmsa.models import ModelConfig, build_model
from hmsa.models.fusion import Fused, ScaleOutput
from hmsa.models.loss import SegmentationLoss
from hmsa.training.config import RoleConfig
from hmsa.runtime.device import cpu_has_native_bf16, uses_channels_last
from hmsa.training.loop import fit, poly_lambda, recomputes_loss

DEFAULT_PARAMS = Path("conf/base/parameters_teacher_training.yml")


def default_role(path: Path = DEFAULT_PARAMS) -> RoleConfig:
    """The teacher's configuration as the project ships it."""
    return RoleConfig.model_validate(yaml.safe_load(path.read_text())["teacher"])


def saved_activation_bytes(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor,
                           recompute: bool = True) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one training step, with the
    label-size loss recomputed in backward (``recompute``, the CUDA default) or kept.

    Parameters are left out: the count is the activation memory a step needs.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = SegmentationLoss(recompute=recompute)(model(images), target)["total"]
    loss.backward()
    return sum(storages.values())


def _images_per_s(model_cfg: ModelConfig, batch: int, crop: tuple[int, int], steps: int,
                  bf16: bool = False, channels_last: bool = False, recompute: bool = True,
                  aux_size: str = "label") -> float:
    """Training images per second of the model alone (no data loading), CPU, fp32 or bf16 autocast."""
    torch.manual_seed(0)
    model = build_model(model_cfg).train()
    criterion = SegmentationLoss(recompute=recompute, aux_size=aux_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(batch, 3, *crop)
    target = torch.randint(0, model_cfg.num_classes, (batch, *crop))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(images), target)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def _claims_student_model() -> ModelConfig:
    """The default student's model on conf/claims' trunk (MobileNetV2), without pretrained weights."""
    role = RoleConfig.model_validate(yaml.safe_load(DEFAULT_PARAMS.with_name("parameters_student_training.yml")
                                                    .read_text())["student"])
    return role.model.model_copy(update={"trunk": "mobilenetv2", "pretrained": "none"})


def _claims_precision(quick: bool) -> dict[str, dict]:
    """Training step time of conf/claims' memory format (channels-last) and of bf16 autocast
    over fp32 contiguous, side by side on a MobileNetV2 model."""
    model = _claims_student_model()
    crop, batch, steps = ((64, 64), 2, 1) if quick else ((256, 256), 4, 4)
    out = {}
    for kind in ("hmsa", "explicit"):
        cfg = model.model_copy(update={"kind": kind})
        # the three settings alternated, best of two each: the machine is shared and noisy
        speed: dict[str, list[float]] = {"fp32": [], "channels_last": [], "bf16": []}
        for _ in range(2):
            speed["fp32"].append(_images_per_s(cfg, batch, crop, steps))
            speed["channels_last"].append(_images_per_s(cfg, batch, crop, steps, channels_last=True))
            speed["bf16"].append(_images_per_s(cfg, batch, crop, steps, bf16=True, channels_last=True))
        best = {k: max(v) for k, v in speed.items()}
        out[f"train_time_ratio_channels_last_over_contiguous_{kind}"] = {
            "value": round(best["fp32"] / best["channels_last"], 2), "unit": "x",
            "conditions": f"training step, channels-last (conf/claims) over contiguous memory, both fp32, {kind}, "
                          f"mobilenetv2, crop {crop}, batch {batch}, model only, best of 2 alternated runs; goal < 1. "
                          f"bf16 autocast + channels-last over fp32 contiguous: {best['fp32'] / best['bf16']:.2f}x "
                          f"(CPU native bf16: {cpu_has_native_bf16()})",
        }
    return out


def _leaves(x):
    """The model's outputs as fresh leaves that require grad: the loss alone, without the model."""
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_()
    if isinstance(x, Fused):
        outs = [ScaleOutput(o.scale, _leaves(o.logits), None if o.attn is None else _leaves(o.attn)) for o in x.outputs]
        return Fused(x.rule, outs, x.size, None if x.weights is None else _leaves(x.weights))
    if isinstance(x, dict):
        return {k: _leaves(v) for k, v in x.items()}
    return x


def _loss_cost(quick: bool) -> dict[str, dict]:
    """What the loss at the label size costs in a training step of conf/claims' students
    (MobileNetV2, channels-last, fp32): its share of the step (forward and backward of the loss
    alone, on the model's outputs), and the step with the loss recomputed in backward
    (``recompute_loss`` on, the CUDA default) over the step with its tensors kept (off, the
    CPU default): the recomputation's price for its memory."""
    model_cfg = _claims_student_model()
    settings = [((64, 64), 2)] if quick else [((256, 256), 4), ((512, 512), 1)]
    repeats, steps = (1, 1) if quick else (3, 3)
    out = {}
    for kind in ("hmsa", "explicit"):
        torch.manual_seed(0)
        model = build_model(model_cfg.model_copy(update={"kind": kind})).train().to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        for crop, batch in settings:
            images = torch.rand(batch, 3, *crop).contiguous(memory_format=torch.channels_last)
            target = torch.randint(0, model_cfg.num_classes, (batch, *crop))

            def step(criterion):
                loss = criterion(model(images), target)["total"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            def loss_only():
                with torch.no_grad():
                    outputs = model(images)
                leaves = _leaves(outputs)
                start = time.perf_counter()
                SegmentationLoss()(leaves, target)["total"].backward()
                return time.perf_counter() - start

            def timed(fn):
                fn()  # warm-up
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                return (time.perf_counter() - start) / steps

            # alternated, best of ``repeats`` each: the machine is shared and noisy
            times: dict[str, list[float]] = {"checkpointed": [], "plain": [], "loss": [], "aux_at_logits": []}
            for _ in range(repeats):
                times["checkpointed"].append(timed(lambda: step(SegmentationLoss())))
                times["plain"].append(timed(lambda: step(SegmentationLoss(recompute=False))))
                times["loss"].append(min(loss_only() for _ in range(steps)))
                times["aux_at_logits"].append(timed(lambda: step(SegmentationLoss(recompute=False, aux_size="logits"))))
            best = {k: min(v) for k, v in times.items()}
            name = f"{kind}_crop{crop[0]}"
            share = (f"the loss alone (forward + backward, on the model's outputs: fusion, upsampling to the label "
                     f"size, cross-entropy) over a whole training step; {kind}, mobilenetv2, channels-last fp32, crop "
                     f"{crop}, batch {batch}; step {best['checkpointed']:.3f} s, loss {best['loss']:.3f} s")
            out[f"train_loss_share_{name}"] = {"value": round(best["loss"] / best["checkpointed"], 3),
                                               "unit": "share", "conditions": share}
            out[f"train_time_ratio_loss_checkpoint_{name}"] = {
                "value": round(best["checkpointed"] / best["plain"], 2), "unit": "x",
                "conditions": f"training step with the loss recomputed in backward (recompute_loss on, the CUDA "
                              f"default) over the same loss with its tensors kept (off, the CPU default); {kind}, crop {crop}, batch {batch}, best of {repeats} alternated",
            }
            out[f"train_time_ratio_aux_loss_at_logits_{name}"] = {
                "value": round(best["aux_at_logits"] / best["plain"], 2), "unit": "x",
                "conditions": f"training step with the aux and per-scale terms scored at their logits' stride "
                              f"(trainer.aux_loss_size logits) over at the label size (label, the paper's code); "
                              f"both with the tensors kept; {kind}, crop {crop}, batch {batch}, best of {repeats} "
                              f"alternated",
            }
    return out


def _synthcity_items(root: Path, images: int, height: int, width: int) -> list:
    """``images`` generated SynthCity training pairs (fine labels) under ``root``."""
    from hmsa.data.synthetic import SynthCitySpec, generate
    from hmsa.training.data import Item

    generate(root, SynthCitySpec(height=height, width=width, images={"train": images}), workers=1)
    return [Item(str(p), str(p).replace("leftImg8bit", "gtFine").replace("_gtFine.png", "_gtFine_labelIds.png"))
            for p in sorted((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))]


def _bare_loop(model_cfg: ModelConfig, cfg, train_set, class_pixels) -> float:
    """Seconds for ``cfg.epochs`` of a plain PyTorch loop: the same model, loss, optimiser,
    schedule, data loader, memory layout and batch as ``fit``, and nothing else."""
    from torch.utils.data import DataLoader

    from hmsa.models.loss import class_balanced_weights

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    channels_last = uses_channels_last(cfg.channels_last, device)
    model = build_model(model_cfg).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    weights = class_balanced_weights(class_pixels, cfg.class_weight_power) if cfg.class_weights == "balanced" else None
    criterion = SegmentationLoss(cfg.aux_weight, cfg.scale_weight, weights, recompute=recomputes_loss(cfg, device),
                                 aux_size=cfg.aux_loss_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                        drop_last=True, persistent_workers=cfg.num_workers > 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(cfg.epochs * len(loader), cfg.poly_power))
    for _ in range(cfg.epochs):
        for images, masks in loader:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss = criterion(model(images), masks)["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - start


def _loop_overhead(quick: bool) -> dict[str, dict]:
    """The project's training loop (``training.loop.fit``) against a bare PyTorch loop on the
    same model, data, augmentation and batch, side by side: what the loop itself costs
    (checkpoints, its bookkeeping), with validation, logging and the progress bar left out.

    The loop's own costs are below 1% of a step, well under this machine's run-to-run noise
    (about 5% on 100 images): so the two run in pairs after a warm-up, in alternating order
    (bare first, then the project first, ...), and the figure is the median of the pairs'
    ratios, with their range in the conditions."""
    import statistics
    import tempfile

    from torch.utils.data import Subset

    from hmsa.training.data import TrainDataset, label_pixel_totals

    role = default_role()
    # a quarter of the default epoch (400 images): per-epoch costs (checkpoints, loader start)
    # weigh on each image 4 times as much as in a real run (at 24 images: 16 times)
    images, size, epochs, pairs = (4, (64, 128), 1, 1) if quick else (100, (256, 512), 1, 3)
    trainer = role.trainer.model_copy(update={"epochs": epochs, "max_iterations": None, "progress_bar": False,
                                              "resume": False, "device": "cpu", "devices": 1})
    if quick:
        trainer = trainer.model_copy(update={"crop": (64, 64), "batch_size": 2})
    model_cfg = role.model.model_copy(update={"pretrained": "none"})  # the same either way; no file to read
    with tempfile.TemporaryDirectory() as tmp:
        items = _synthcity_items(Path(tmp) / "data", images, *size)
        class_pixels = label_pixel_totals(items)
        train_set = TrainDataset(items, trainer.crop, trainer.scale_range, trainer.color_jitter)
        # the other loader layout: no worker process (loading between steps) or one worker
        other = trainer.model_copy(update={"num_workers": 1 if trainer.num_workers == 0 else 0})

        def project(i: int) -> float:
            cfg = trainer.model_copy(update={"checkpoint_dir": str(Path(tmp) / f"ckpt{i}")})
            start = time.perf_counter()
            fit(model_cfg, cfg, train_set, None, class_pixels)
            return time.perf_counter() - start

        # warm-up: the process's first steps pay for oneDNN's kernel choices and the allocator
        _bare_loop(model_cfg, trainer, Subset(train_set, range(2 * trainer.batch_size)), class_pixels)
        times: dict[str, list[float]] = {"bare": [], "project": [], "other": []}
        for i in range(pairs):
            if i % 2 == 0:
                times["bare"].append(_bare_loop(model_cfg, trainer, train_set, class_pixels))
                times["project"].append(project(i))
            else:
                times["project"].append(project(i))
                times["bare"].append(_bare_loop(model_cfg, trainer, train_set, class_pixels))
            times["other"].append(_bare_loop(model_cfg, other, train_set, class_pixels))
    ratios = [p / b for p, b in zip(times["project"], times["bare"])]
    workers = [b / o for b, o in zip(times["bare"], times["other"])]
    seen = epochs * (len(train_set) // trainer.batch_size) * trainer.batch_size
    bare, own = statistics.median(times["bare"]), statistics.median(times["project"])
    return {"train_loop_overhead": {
        "value": round(statistics.median(ratios), 3), "unit": "x",
        "conditions": f"time per training image, hmsa.training.loop.fit over a bare PyTorch loop (same model "
                      f"{model_cfg.kind}/{model_cfg.trunk}, data: {images} SynthCity images {size[0]}x{size[1]}, "
                      f"augmentation, crop {tuple(trainer.crop)}, batch {trainer.batch_size}, {trainer.num_workers} "
                      f"loader worker(s), {epochs} epochs), no validation or logging; median of {pairs} pairs in "
                      f"alternating order after a warm-up (pairs {min(ratios):.3f} to {max(ratios):.3f}); bare "
                      f"{bare / seen * 1000:.0f} ms/image, project {own / seen * 1000:.0f} ms/image; goal <= 1.05",
    }, "train_time_ratio_loader_workers": {
        "value": round(statistics.median(workers), 3), "unit": "x",
        "conditions": f"time per training image of the bare loop with trainer.num_workers {trainer.num_workers} (the "
                      f"default) over {other.num_workers}, median of the same {pairs} rounds as train_loop_overhead; "
                      f"below 1: the default is the faster layout on this machine",
    }}


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """train_images_per_s and the two memory ratios, measured side by side."""
    role = default_role()
    crop = (64, 128) if quick else (256, 512)
    batch = 2
    results: dict[str, dict] = {}
    steps = 1 if quick else 4
    train_crop = (64, 64) if quick else tuple(role.trainer.crop)
    cpu = torch.device("cpu")
    as_trained = {"channels_last": uses_channels_last(role.trainer.channels_last, cpu),
                  "recompute": recomputes_loss(role.trainer, cpu), "aux_size": role.trainer.aux_loss_size}
    model = role.model.model_copy(update={"pretrained": "none"})
    speed: dict[str, list[float]] = {"hmsa": [], "single": [], "explicit": []}
    for _ in range(1 if quick else 2):  # alternated, best of two: the machine is shared and noisy
        for kind in speed:
            speed[kind].append(_images_per_s(model.model_copy(update={"kind": kind}), role.trainer.batch_size,
                                             train_crop, steps, **as_trained))
    speed = {k: max(v) for k, v in speed.items()}
    results["train_images_per_s"] = {
        "value": round(speed["hmsa"], 2), "unit": "images/s",
        "conditions": f"default teacher config (HMSA, {role.model.trunk}), crop {train_crop}, batch {role.trainer.batch_size}, "
                      f"CPU fp32 as the trainer runs it (channels-last {as_trained['channels_last']}, loss recomputed "
                      f"{as_trained['recompute']}, aux and per-scale loss at the {as_trained['aux_size']} size), model only (no data loading), best of 2 alternated; single-scale "
                      f"trains at {speed['single']:.2f}, explicit attention (0.5,1,2) at {speed['explicit']:.2f}",
    }
    results["train_time_ratio_hmsa_over_single"] = {
        "value": round(speed["single"] / speed["hmsa"], 2), "unit": "x",
        "conditions": "time per training image, HMSA (0.5,1) over single-scale (1.0), same trunk, batch and run as "
                      "train_images_per_s; the trunk's arithmetic alone is 1.25; goal <= 1.35",
    }
    results["train_time_ratio_explicit_over_hmsa"] = {
        "value": round(speed["hmsa"] / speed["explicit"], 2), "unit": "x",
        "conditions": "time per training image, explicit (0.5,1,2) over HMSA (0.5,1), same run and settings as "
                      "train_images_per_s",
    }
    results.update(_claims_precision(quick))
    results.update(_loss_cost(quick))
    # in a fresh interpreter: after the other benchmarks' large steps this process runs the same
    # loops up to 10% slower, the project's more than the bare one (1.09 against 0.99 fresh)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        results.update(fresh.submit(_loop_overhead, quick).result())
    memory = {}
    for kind in ("single", "hmsa", "explicit"):
        torch.manual_seed(0)
        model = build_model(role.model.model_copy(update={"kind": kind})).train()
        images, target = torch.rand(batch, 3, *crop), torch.randint(0, 19, (batch, *crop))
        memory[kind] = saved_activation_bytes(model, images, target)
    cond = f"saved-for-backward bytes of one training step, {role.model.trunk}, crop {crop}, batch {batch}"
    results["train_memory_ratio_explicit_over_hmsa"] = {
        "value": round(memory["explicit"] / memory["hmsa"], 2), "unit": "x",
        "conditions": f"{cond}: explicit (0.5,1,2) {memory['explicit'] / 2**20:.0f} MiB / HMSA (0.5,1) "
                      f"{memory['hmsa'] / 2**20:.0f} MiB; paper ~4 (5.25/1.25 = 4.2), goal >= 4.0",
    }
    results["train_memory_ratio_hmsa_over_single"] = {
        "value": round(memory["hmsa"] / memory["single"], 2), "unit": "x",
        "conditions": f"{cond}: HMSA / single (1.0) {memory['single'] / 2**20:.0f} MiB; limit 1.25, goal <= 1.35",
    }
    return results
