"""Training benchmarks: throughput, and activation memory of HMSA against its baselines."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from hmsa.models import ModelConfig, build_model
from hmsa.models.fusion import Fused, ScaleOutput
from hmsa.models.loss import SegmentationLoss
from hmsa.training.config import RoleConfig
from hmsa.training.loop import cpu_has_native_bf16

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
                  bf16: bool = False, channels_last: bool = False) -> float:
    """Training images per second of the model alone (no data loading), CPU, fp32 or bf16 autocast."""
    torch.manual_seed(0)
    model = build_model(model_cfg).train()
    criterion = SegmentationLoss()
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
            times: dict[str, list[float]] = {"checkpointed": [], "plain": [], "loss": []}
            for _ in range(repeats):
                times["checkpointed"].append(timed(lambda: step(SegmentationLoss())))
                times["plain"].append(timed(lambda: step(SegmentationLoss(recompute=False))))
                times["loss"].append(min(loss_only() for _ in range(steps)))
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
    return out


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """train_images_per_s and the two memory ratios, measured side by side."""
    role = default_role()
    crop = (64, 128) if quick else (256, 512)
    batch = 2
    results: dict[str, dict] = {}
    steps = 1 if quick else 4
    train_crop = (64, 64) if quick else tuple(role.trainer.crop)
    speed = {kind: _images_per_s(role.model.model_copy(update={"kind": kind}), role.trainer.batch_size, train_crop, steps)
             for kind in ("hmsa", "single", "explicit")}
    results["train_images_per_s"] = {
        "value": round(speed["hmsa"], 2), "unit": "images/s",
        "conditions": f"default teacher config (HMSA, {role.model.trunk}), crop {train_crop}, batch {role.trainer.batch_size}, "
                      f"CPU fp32, model only (no data loading); single-scale trains at {speed['single']:.2f}, "
                      f"explicit attention (0.5,1,2) at {speed['explicit']:.2f}",
    }
    results["train_time_ratio_explicit_over_hmsa"] = {
        "value": round(speed["hmsa"] / speed["explicit"], 2), "unit": "x",
        "conditions": "time per training image, explicit (0.5,1,2) over HMSA (0.5,1), same run and settings as "
                      "train_images_per_s",
    }
    results.update(_claims_precision(quick))
    results.update(_loss_cost(quick))
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
