"""Auto-labelling benchmark: throughput, and how much of the time goes to file I/O."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmsa.autolabel.labelling import Job, label_images, write_outputs
from hmsa.autolabel.refinement import Refinement
from hmsa.autolabel.teacher import predict
from hmsa.bench.training import default_role
from hmsa.data import cityscapes
from hmsa.io.images import read_image
from hmsa.data.synthetic import SynthCitySpec, generate
from hmsa.models import build_model


def run(workers: int, quick: bool = False) -> dict[str, dict]:
    """autolabel_images_per_s with readers and writer threads; compute-only and I/O-only times beside it."""
    n = 8 if quick else 32
    size = (64, 128) if quick else (256, 512)
    scales = (0.5, 1.0, 2.0)
    torch.manual_seed(0)
    model = build_model(default_role().model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        generate(root, SynthCitySpec(height=size[0], width=size[1], images={"train_extra": n}), workers=workers)
        index = cityscapes.index_tree(root, {"train_extra": ["coarse"]})
        jobs = [Job(e.image_id, e.city, str(root / e.image_path), str(root / e.label_path)) for e in index.entries]
        settings = Refinement()
        start = time.perf_counter()
        label_images(model, jobs, Path(tmp) / "out", settings, scales, batch_size=4, readers=1, writers=2,
                     progress=False)
        total = time.perf_counter() - start
        # the same work split apart: teacher compute alone, then reading + writing alone
        images = torch.rand(4, 3, *size)
        start = time.perf_counter()
        for _ in range(0, n, 4):
            predict(model, images, scales, False)
        compute = time.perf_counter() - start
        pred, conf = np.zeros(size, np.uint8), np.full(size, 0.95)
        start = time.perf_counter()
        for job in jobs:
            read_image(job.image)
            write_outputs(job, Path(tmp) / "io", pred, conf, settings)
        io = time.perf_counter() - start
    return {
        "autolabel_images_per_s": {
            "value": round(n / total, 2), "unit": "images/s",
            "conditions": f"{size[0]}x{size[1]}, scales {list(scales)}, default teacher architecture, batch 4, "
                          "1 reader process, 2 writer threads",
        },
        "autolabel_io_share": {
            "value": round(io / (io + compute), 3), "unit": "share",
            "conditions": f"I/O alone {io:.1f} s vs teacher compute alone {compute:.1f} s for {n} images; "
                          f"overlapped run took {total:.1f} s ({total / (io + compute):.2f} of the serial sum)",
        },
    }
