"""Where and how a model runs: device, memory layout and precision, chosen by a documented rule.

Training, evaluation, auto-labelling and ``hmsa predict`` share these rules, so that every
stage runs a model the same way:

- **channels-last** (``auto``): on CUDA, and on a CPU with oneDNN (PyTorch's x86 builds),
  whose NHWC convolution kernels avoid the layout reorders around every convolution. Side
  by side on a 2-core AMD EPYC (``make bench``), a MobileNetV2 HMSA training step took 0.82-
  0.88x the contiguous step's time and inference 0.83x.
- **inference precision** (``auto``): bf16 autocast where the hardware runs bf16 natively
  (CUDA that supports it, or a CPU with AVX512-BF16 or AMX), fp32 elsewhere: emulated bf16
  is slower than fp32. Natively it halves the inference time of the same model, and the
  bench reports the mIoU it moves (``eval_miou_change_bf16``).
- **training precision** stays fp32 on the CPU unless asked for (see ``training.loop``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``choice`` auto | cpu | cuda: cuda when asked for (or available with auto), else cpu."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is visible; use auto or cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or the private op gone
        return False


def channels_last_by_default(device: torch.device) -> bool:
    """The ``channels_last: auto`` rule (module docstring): CUDA, or a CPU with oneDNN."""
    return device.type == "cuda" or torch.backends.mkldnn.is_available()


def uses_channels_last(setting: str, device: torch.device) -> bool:
    """``setting`` on | off | auto (see :func:`channels_last_by_default`)."""
    return setting == "on" or (setting == "auto" and channels_last_by_default(device))


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for inference, None for fp32 (the ``precision: auto`` rule in the
    module docstring); fp16 only on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown value {precision!r}; choose one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


@dataclass(frozen=True)
class Runtime:
    """How one process runs a model for inference: its device, layout and autocast dtype."""

    device: torch.device
    channels_last: bool = False
    dtype: torch.dtype | None = None

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device and in the layout, in eval mode."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.eval()

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch on the device and in the layout."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` (nothing for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        """For logs: e.g. ``cpu, channels-last, bf16``."""
        dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{self.device}, {'channels-last' if self.channels_last else 'contiguous'}, {dtype}"


def runtime(device: str = "auto", precision: str = "auto", channels_last: str = "auto",
            local_rank: int = 0) -> Runtime:
    """The inference runtime for the settings ``device``, ``precision`` and ``channels_last``."""
    dev = pick_device(device, local_rank)
    return Runtime(dev, uses_channels_last(channels_last, dev), inference_dtype(precision, dev))
