"""Evaluate a model over a grid of (fusion rule, scale set, flip) in one pass over the data.

Each image is run once at every scale of the grid (and once more mirrored when flip is
asked for); every fusion rule and scale subset is then computed from those cached per-scale
outputs. The grid costs as many forward passes as its largest setting, not the sum of all.
Predictions are upsampled to the label size and scored there: the confusion matrix is
accumulated over the whole set at full label resolution, ignoring 255.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hmsa.evaluation.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from hmsa.models.heads import resize
from hmsa.runtime.device import Runtime
from hmsa.models.segmenter import require_finite

#: the fusion name of a single-scale setting ([1.0]): no fusion happens
SINGLE = "single"


@dataclass(frozen=True)
class Setting:
    """One cell of the grid."""

    fusion: str
    scales: tuple[float, ...]
    flip: bool

    @property
    def scales_key(self) -> str:
        """``0.5-1.0-2.0``: the scale set as a name part."""
        return "-".join(f"{s:g}" if s != int(s) else f"{s:.1f}" for s in self.scales)

    @property
    def name(self) -> str:
        """``hierarchical/0.5-1.0-2.0`` (``/flip`` appended when flipped)."""
        return f"{self.fusion}/{self.scales_key}" + ("/flip" if self.flip else "")


def settings_for(model, scale_sets: Sequence[Sequence[float]], fusions: Sequence[str],
                 flips: Sequence[bool]) -> list[Setting]:
    """The grid cells that apply to ``model``: [1.0] once per flip (fusion ``single``);
    hierarchical only for HMSA models; explicit only for explicit-attention models, on
    exactly the scales they were trained on."""
    cells: list[Setting] = []
    for scales in scale_sets:
        scales = tuple(sorted(float(s) for s in scales))
        for flip in flips:
            if scales == (1.0,):
                cells.append(Setting(SINGLE, scales, bool(flip)))
                continue
            for rule in fusions:
                try:
                    model.check_fusion(rule, scales)
                except ValueError:
                    continue
                cells.append(Setting(rule, scales, bool(flip)))
    return list(dict.fromkeys(cells))


def _fused(model, outs: dict[float, dict], setting: Setting, size, above_one: str) -> torch.Tensor:
    if setting.fusion == SINGLE:
        return resize(outs[1.0]["logits"], size)
    order = model.check_fusion(setting.fusion, setting.scales)
    return model.fuse_outputs({s: outs[s] for s in order}, setting.fusion, size, above_one)[0]


@torch.no_grad()
def predict_grid(model, images: torch.Tensor, settings: Sequence[Setting],
                 above_one: str = "image_size") -> dict[Setting, torch.Tensor]:
    """Logits at the images' size for every setting, from one forward pass per scale (and flip);
    ``above_one`` as in ``hmsa.models.fusion.fuse``."""
    scales = sorted({s for cell in settings for s in cell.scales})
    outs = model.scale_outputs(images, scales)
    outs_flipped = model.scale_outputs(images.flip(-1), scales) if any(c.flip for c in settings) else None
    size = images.shape[-2:]
    result = {}
    for cell in settings:
        logits = _fused(model, outs, cell, size, above_one)
        if cell.flip:
            logits = (logits + _fused(model, outs_flipped, cell, size, above_one).flip(-1)) / 2
        result[cell] = logits
    return result


@dataclass
class GridResult:
    """Confusion matrices per setting, and the scores derived from them."""

    confusions: dict[Setting, np.ndarray]

    def scores(self, setting: Setting) -> dict:
        """mIoU, pixel accuracy and per-class IoU of one setting."""
        cm = self.confusions[setting]
        return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm), "iou": iou_per_class(cm)}

    def best(self) -> Setting:
        """The setting with the highest mIoU (the first one on a tie)."""
        return max(self.confusions, key=lambda s: self.scores(s)["miou"])


def evaluate_grid(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], settings: Sequence[Setting],
                  device: torch.device | Runtime, on_batch=None, combine=None, name: str = "the model",
                  above_one: str = "image_size") -> GridResult:
    """Accumulate a confusion matrix per setting over ``batches`` of (images, trainId labels).

    ``combine``, when given, is applied to the stacked matrices at the end: with each process
    holding a share of the data, summing them over the processes gives the whole set's.
    Non-finite logits stop it (``NonFiniteOutputError`` naming ``name``): a broken model is
    never scored, so never crowned. ``device`` may be a ``Runtime`` (layout and autocast too)."""
    rt = device if isinstance(device, Runtime) else Runtime(device)
    device = rt.device
    num_classes = model.cfg.num_classes
    confusions = {cell: torch.zeros(num_classes, num_classes, dtype=torch.long, device=device) for cell in settings}
    model.eval()
    for images, labels in batches:
        images, labels = rt.images(images), labels.to(device)
        with rt.autocast():
            grid = predict_grid(model, images, settings, above_one)
        for cell, logits in grid.items():
            logits = logits.float()
            require_finite(logits, f"{name}, evaluated at {cell.name}")
            if logits.shape[-2:] != labels.shape[-2:]:
                logits = resize(logits, labels.shape[-2:])
            confusions[cell] += confusion_matrix(logits.argmax(1), labels, num_classes)
        if on_batch is not None:
            on_batch(len(images))
    if combine is not None and confusions:
        stacked = combine(torch.stack(list(confusions.values())))
        confusions = dict(zip(confusions, stacked))
    return GridResult({cell: cm.cpu().numpy() for cell, cm in confusions.items()})


def batches_of(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], batch_size: int):
    """Stack consecutive (image, label) pairs into batches of up to ``batch_size``; a batch
    ends early where the image size changes, so sets of mixed sizes work too."""
    images, labels = [], []
    for image, label in pairs:
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield torch.stack(images), torch.stack(labels)
            images, labels = [], []
        images.append(image)
        labels.append(label)
    if images:
        yield torch.stack(images), torch.stack(labels)
