"""How the teacher's prediction becomes a label: a confidence threshold (one, or one per
class), the human coarse labels' union and merge, and the ignored edges.

Pixels below the threshold become ignore (255). ``union_classes`` gives the human coarse
region of those classes their human label, a union with the teacher's region: after the
threshold (the human region keeps its label where the teacher is unsure), or before it (the
authors' order, ``union_first``: the union region is thresholded like every other pixel, and
a class joins only where the teacher predicts it somewhere in the image).
``merge_human_coarse`` keeps the human coarse label where the teacher abstains. ``border``
pixels along the image edges, and everything outside ``keep_box`` (a box relative to the
image size: the authors keep rows 15:840 and columns 14:2030 of a 1024 x 2048 Cityscapes
image, which drops the ego vehicle's bonnet), become ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmsa.data.labels import IGNORE_INDEX

#: a class whose val predictions never reach the target accuracy gets this threshold: never labelled
NEVER = 1.01


@dataclass(frozen=True)
class Refinement:
    """How teacher labels are thresholded and combined with the human coarse labels.

    Its fields are stamped beside the labels (``labelling.prepare_output``): a new field
    would make every earlier set of labels look stale and be made afresh.
    """

    threshold: float = 0.9
    merge_human_coarse: bool = False
    #: trainIds whose human coarse region keeps its label; none by default, since trainIds
    #: belong to a label set (``AutoLabelConfig.refinement`` maps class names to them)
    union_classes: tuple[int, ...] = ()
    border: int = 0
    #: one threshold per trainId (``threshold_rule: per_class``), in place of ``threshold``
    class_thresholds: tuple[float, ...] | None = None
    #: the union before the threshold (the authors' order), not after it
    union_first: bool = False
    #: (top, bottom, left, right) as fractions of the height and width: pixels outside are ignored
    keep_box: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"auto_labeling.threshold must be in [0, 1], got {self.threshold}")
        if self.border < 0:
            raise ValueError(f"auto_labeling.border must be >= 0, got {self.border}")
        if self.keep_box is not None:
            top, bottom, left, right = self.keep_box
            if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
                raise ValueError(f"auto_labeling.keep_box must be [top, bottom, left, right] with 0 <= top < bottom <= 1 "
                                 f"and 0 <= left < right <= 1 (fractions of the image), got {list(self.keep_box)}")

    def thresholds(self) -> float | np.ndarray:
        """The threshold, or the per-class array indexed by the predicted trainId."""
        return self.threshold if self.class_thresholds is None else np.asarray(self.class_thresholds)

    @property
    def uses_human(self) -> bool:
        """Whether the human coarse labels change anything: without union or merge they do not."""
        return bool(self.union_classes) or self.merge_human_coarse


def confidence_to_u8(confidence: np.ndarray) -> np.ndarray:
    """Max softmax probability in [0, 1] -> 8-bit PNG values."""
    return np.clip(np.rint(np.asarray(confidence, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def hard_labels(prediction: np.ndarray, confidence: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """The teacher's class where its confidence is >= threshold, ignore (255) elsewhere.
    ``threshold`` is one number, or one per class (indexed by the predicted class)."""
    threshold = np.asarray(threshold)
    if threshold.ndim:
        threshold = threshold[np.asarray(prediction, dtype=np.intp)]
    return np.where(np.asarray(confidence) >= threshold, prediction, IGNORE_INDEX).astype(np.uint8)


def teacher_labels(prediction: np.ndarray, confidence: np.ndarray, human: np.ndarray | None,
                   settings: Refinement) -> np.ndarray:
    """One image's label (trainIds, 255 ignore) from the teacher's prediction and confidence and
    the human coarse label, by every rule of ``settings`` (module docstring)."""
    if settings.union_first and human is not None:
        prediction = union_where_predicted(prediction, human, settings.union_classes)
    return refine(hard_labels(prediction, confidence, settings.thresholds()), human, settings)


def union_where_predicted(prediction: np.ndarray, human: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The authors' union: each of ``classes`` that the teacher predicts somewhere in the image
    also takes the human coarse region of that class (before any threshold)."""
    out = np.array(prediction, copy=True)
    for c in sorted(classes):
        if (prediction == c).any():
            out[human == c] = c
    return out


def refine(labels: np.ndarray, human: np.ndarray | None, settings: Refinement) -> np.ndarray:
    """Apply the union (unless ``union_first`` did it already), merge and edge options to
    thresholded labels (trainIds)."""
    out = labels.copy()
    if human is not None:
        if settings.union_classes and not settings.union_first:
            union = np.isin(human, settings.union_classes)
            out[union] = human[union]
        if settings.merge_human_coarse:
            fill = (out == IGNORE_INDEX) & (human != IGNORE_INDEX)
            out[fill] = human[fill]
    if settings.border:
        b = settings.border
        out[:b, :] = IGNORE_INDEX
        out[-b:, :] = IGNORE_INDEX
        out[:, :b] = IGNORE_INDEX
        out[:, -b:] = IGNORE_INDEX
    if settings.keep_box is not None:
        out[~box_mask(out.shape[:2], settings.keep_box)] = IGNORE_INDEX
    return out


def box_mask(shape: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """True inside ``box`` (top, bottom, left, right as fractions of ``shape``), each edge
    rounded to the nearest pixel: the authors' 15:840, 14:2030 at 1024 x 2048, and the same
    part of the image at any other size."""
    height, width = shape
    top, bottom = (int(np.rint(f * height)) for f in box[:2])
    left, right = (int(np.rint(f * width)) for f in box[2:])
    inside = np.zeros(shape, dtype=bool)
    inside[top:bottom, left:right] = True
    return inside


def class_thresholds(total: np.ndarray, correct: np.ndarray, target: float) -> np.ndarray:
    """Each class's lowest confidence threshold at which the pixels predicted as that class are
    at least ``target`` correct (from ``calibration.confidence_counts``): a confident but
    unreliable class gets a high threshold or none (``NEVER``), a reliable one labels more pixels."""
    kept = total[:, ::-1].cumsum(axis=1)[:, ::-1]  # pixels at or above each level
    right = correct[:, ::-1].cumsum(axis=1)[:, ::-1]
    ok = (kept > 0) & (right >= target * kept)
    levels = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
    # level L holds confidences that round to L/255, i.e. from (L - 0.5)/255: the same pixels as the counts
    return np.where(levels >= 0, np.maximum(levels - 0.5, 0) / 255.0, NEVER)


def fixed_threshold_table(class_names: Sequence[str], threshold: float) -> pd.DataFrame:
    """The threshold table of ``threshold_rule: fixed``: the same threshold for every class,
    nothing calibrated."""
    return pd.DataFrame({"class_name": list(class_names), "threshold": threshold, "calibration_pixels": 0,
                         "calibration_accuracy": np.nan})


def threshold_table(class_names: Sequence[str], thresholds: np.ndarray, total: np.ndarray,
                    correct: np.ndarray) -> pd.DataFrame:
    """Each class's calibrated threshold, with the calibration pixels it keeps and how many of
    them the teacher gets right (``total`` and ``correct`` per class and 8-bit level)."""
    table = []
    for c, name in enumerate(class_names):
        keep = np.arange(256) >= np.ceil(thresholds[c] * 255 - 1e-9)  # the levels kept (see class_thresholds)
        kept, right = int(total[c][keep].sum()), int(correct[c][keep].sum())
        table.append({"class_name": name, "threshold": round(float(thresholds[c]), 6), "calibration_pixels": kept,
                      "calibration_accuracy": right / kept if kept else np.nan})
    return pd.DataFrame(table)
