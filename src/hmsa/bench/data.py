"""Data benchmarks: SynthCity generation and ingestion throughput."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hmsa.data import cityscapes, ingest
from hmsa.data.synthetic import SynthCitySpec, generate

SPLITS = {"train": ["fine"], "val": ["fine"], "train_extra": ["coarse"]}


def _spec(height: int, width: int, images: int, seed: int = 0) -> SynthCitySpec:
    third = max(1, images // 3)
    return SynthCitySpec(seed=seed, height=height, width=width,
                         images={"train": third, "val": third, "train_extra": images - 2 * third})


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """Generation at the default SynthCity size, ingestion at Cityscapes' 1024x2048."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = 16 if quick else 96
        spec = _spec(256, 512, n)
        one = _timed(lambda: generate(tmp / "g1", spec, workers=1))
        many = _timed(lambda: generate(tmp / "gn", spec, workers=workers))
        results["synthcity_images_per_s"] = {
            "value": round(n / many, 2), "unit": "images/s",
            "conditions": f"256x512, {n} images, {workers} processes",
        }
        results["synthcity_parallel_speedup"] = {
            "value": round(one / many, 2), "unit": "x",
            "conditions": f"{workers} processes over 1, same run",
        }

        n = 9 if quick else 48
        root = tmp / "cityscapes_size"
        generate(root, _spec(1024, 2048, n), workers=workers)
        index = cityscapes.index_tree(root, SPLITS)
        timings = {}
        for w in (1, workers):
            timings[w] = _timed(lambda w=w: ingest.check_tree(root, index, workers=w))
        results["ingest_images_per_s"] = {
            "value": round(n / timings[workers], 2), "unit": "images/s",
            "conditions": f"1024x2048 (Cityscapes size), {n} images, {workers} processes; "
                          f"25,000 images would take {25000 * timings[workers] / n / 60:.0f} min",
        }
        results["ingest_parallel_speedup"] = {
            "value": round(timings[1] / timings[workers], 2), "unit": "x",
            "conditions": f"{workers} processes over 1, same run",
        }
    return results
