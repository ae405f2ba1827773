"""Inference benchmarks: what multi-scale fusion costs on top of the forward passes it needs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from hmsa.bench.training import default_role
from hmsa.evaluation.grid import Setting, evaluate_grid
from hmsa.models import build_model

SCALES = (0.5, 1.0, 2.0)


def _median_times(jobs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each job, the jobs interleaved round by round (fair on a noisy machine)."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():
        job()  # warm-up
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """ms_inference_overhead, hmsa_over_avg_inference_time and eval_images_per_s."""
    size = (64, 128) if quick else (256, 512)
    batch, rounds = 2, (2 if quick else 7)
    torch.manual_seed(0)
    model = build_model(default_role().model).eval()
    images = torch.rand(batch, 3, *size)

    def per_scale():
        with torch.inference_mode():
            for scale in SCALES:
                model.run_scale(images, scale)

    def fused(rule: str):
        def job():
            with torch.inference_mode():
                model.predict(images, SCALES, fusion_rule=rule)
        return job

    t = _median_times({"forward": per_scale, "hierarchical": fused("hierarchical"), "average": fused("average")},
                      rounds)
    labels = torch.randint(0, 19, (batch, *size))
    setting = Setting("hierarchical", SCALES, False)
    n_batches = 2 if quick else 4
    with torch.inference_mode():
        start = time.perf_counter()
        evaluate_grid(model, [(images, labels)] * n_batches, [setting], torch.device("cpu"))
        seconds = time.perf_counter() - start
    where = f"{size[0]}x{size[1]}, batch {batch}, default teacher architecture, CPU fp32, median of {rounds} rounds"
    return {
        "ms_inference_overhead": {
            "value": round(t["hierarchical"] / t["forward"], 3), "unit": "x",
            "conditions": f"HMSA inference on {list(SCALES)} ({t['hierarchical'] * 1000:.0f} ms) over the sum of its "
                          f"per-scale forward passes ({t['forward'] * 1000:.0f} ms); {where}; goal <= 1.05",
        },
        "hmsa_over_avg_inference_time": {
            "value": round(t["hierarchical"] / t["average"], 3), "unit": "x",
            "conditions": f"hierarchical over average fusion ({t['average'] * 1000:.0f} ms), same model and scales; "
                          f"{where}; goal ~1.0",
        },
        "eval_images_per_s": {
            "value": round(batch * n_batches / seconds, 2), "unit": "images/s",
            "conditions": f"evaluation (predict, upsample, argmax, confusion matrix), hierarchical {list(SCALES)}, "
                          f"{size[0]}x{size[1]}, batch {batch}, model only (no image decoding)",
        },
    }
