"""Model sizes: parameters and FLOPs of each trunk/head pair (no timing, so no noise).

FLOPs are counted by PyTorch's ``FlopCounterMode`` (2 per multiply-add: convolutions and
matrix products) for one forward pass of the HMSA model at scale 1.0, on the meta device:
shapes only, nothing is computed or allocated, so the paper's full size costs nothing here.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from hmsa.models import build_model
from hmsa.models.config import ModelConfig

#: (name, the ModelConfig fields that differ from the code defaults)
PAIRS = {
    "hrnet_w48_ocr": dict(trunk="hrnet_w48", output_stride=4, head="ocr"),
    "hrnet_w18_small_ocr": dict(trunk="hrnet_w18_small", output_stride=4, head="ocr"),
    "resnet50_deeplabv3plus_os8": dict(trunk="resnet50", output_stride=8),
    "mobilenetv2_deeplabv3plus_os16": dict(trunk="mobilenetv2", output_stride=16),
    "resnet18_deeplabv3plus_os16": dict(trunk="resnet18", output_stride=16),
}
FULL_SIZE = (1024, 2048)  # one Cityscapes image


def size_of(fields: dict, size: tuple[int, int]) -> tuple[float, float]:
    """(million parameters, GFLOPs of one 1.0-scale forward at ``size``) of an HMSA model."""
    with torch.device("meta"):
        model = build_model(ModelConfig(kind="hmsa", **fields)).eval()
        images = torch.empty(1, 3, *size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.run_scale(images, 1.0)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, counter.get_total_flops() / 1e9


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """params_M/<pair> and gflops/<pair> for every pair in ``PAIRS``."""
    size = (256, 512) if quick else FULL_SIZE
    figures: dict[str, dict] = {}
    for name, fields in PAIRS.items():
        params, gflops = size_of(fields, size)
        heads = "trunk + segmentation head + auxiliary output + HMSA attention head, paper's channel widths"
        figures[f"params_M/{name}"] = {"value": round(params, 2), "unit": "M", "conditions": heads}
        figures[f"gflops/{name}"] = {
            "value": round(gflops, 1), "unit": "GFLOP",
            "conditions": f"one forward at scale 1.0, {size[0]}x{size[1]}, batch 1; 2 FLOPs per multiply-add",
        }
    return figures
