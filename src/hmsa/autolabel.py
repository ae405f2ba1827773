"""Auto-labelling (HMSA.md section 6): a teacher turns coarse images into dense labels.

For each image the teacher's multi-scale prediction gives a class (argmax) and a
confidence (max softmax probability) per pixel. Three PNGs are written per image:

- ``<stem>_autoLabelTrainIds.png``: trainIds; pixels below the threshold are 255 (ignore),
  then the options below are applied;
- ``<stem>_autoConfidence.png``: the confidence, 8-bit (round(255 * p));
- ``<stem>_autoPredTrainIds.png``: the raw argmax, so that coverage and accuracy can be
  studied at any threshold later without running the teacher again.

Options: ``merge_human_coarse`` keeps the human coarse label where the teacher abstains;
``union_classes`` gives the human coarse region of those classes (truck, bus, train by
default) its human label, a union with the teacher's region; ``border`` pixels along the
image edges become ignore. Files are written atomically and an image whose files all exist
is skipped, so an interrupted run resumes; ``rank``/``world`` shard the images between
processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hmsa.data.images import MAX_IMAGE_PIXELS, read_rgb
from hmsa.fileio import atomic_path, remove_stale_temps
from hmsa.models.runtime import Runtime
from hmsa.data.labels import CITYSCAPES, IGNORE_INDEX, LABEL_BY_NAME, NUM_CLASSES, TRAIN_CLASS_NAMES

log = logging.getLogger(__name__)

SUFFIXES = {"label": "_autoLabelTrainIds.png", "confidence": "_autoConfidence.png", "prediction": "_autoPredTrainIds.png"}


@dataclass(frozen=True)
class Refinement:
    """How teacher labels are thresholded and combined with the human coarse labels."""

    threshold: float = 0.9
    merge_human_coarse: bool = False
    union_classes: tuple[int, ...] = tuple(LABEL_BY_NAME[n].train_id for n in ("truck", "bus", "train"))
    border: int = 0
    #: one threshold per trainId (``threshold_rule: per_class``), in place of ``threshold``
    class_thresholds: tuple[float, ...] | None = None

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"auto_labeling.threshold must be in [0, 1], got {self.threshold}")
        if self.class_thresholds is not None and len(self.class_thresholds) != NUM_CLASSES:
            raise ValueError(f"class thresholds: {len(self.class_thresholds)} values for {NUM_CLASSES} classes")

    def thresholds(self) -> float | np.ndarray:
        """The threshold, or the per-class array indexed by the predicted trainId."""
        return self.threshold if self.class_thresholds is None else np.asarray(self.class_thresholds)
        if self.border < 0:
            raise ValueError(f"auto_labeling.border must be >= 0, got {self.border}")


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


#: a class whose val predictions never reach the target accuracy gets this threshold: never labelled
NEVER = 1.01


def confidence_counts(model, batches, scales, flip: bool, rt: Runtime | None = None,
                      num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Over labelled ``batches`` of (images, trainIds): per predicted class, the pixels at each
    8-bit confidence level (as the confidence PNGs store it), and how many of them are right."""
    total = np.zeros(num_classes * 256, dtype=np.int64)
    correct = np.zeros(num_classes * 256, dtype=np.int64)
    for images, labels in batches:
        prediction, confidence = predict(model, images, scales, flip, rt)
        truth = labels.numpy()
        valid = truth != IGNORE_INDEX
        pred = prediction[valid].astype(np.int64)
        cell = pred * 256 + confidence_to_u8(confidence)[valid]
        total += np.bincount(cell, minlength=total.size)
        correct += np.bincount(cell[pred == truth[valid]], minlength=total.size)
    return total.reshape(num_classes, 256), correct.reshape(num_classes, 256)


def class_thresholds(total: np.ndarray, correct: np.ndarray, target: float) -> np.ndarray:
    """Each class's lowest confidence threshold at which the pixels predicted as that class are
    at least ``target`` correct (from :func:`confidence_counts`): a confident but unreliable
    class gets a high threshold or none (``NEVER``), a reliable one labels more pixels."""
    kept = total[:, ::-1].cumsum(axis=1)[:, ::-1]  # pixels at or above each level
    right = correct[:, ::-1].cumsum(axis=1)[:, ::-1]
    ok = (kept > 0) & (right >= target * kept)
    levels = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
    # level L holds confidences that round to L/255, i.e. from (L - 0.5)/255: the same pixels as the counts
    return np.where(levels >= 0, np.maximum(levels - 0.5, 0) / 255.0, NEVER)


def refine(labels: np.ndarray, human: np.ndarray | None, settings: Refinement) -> np.ndarray:
    """Apply the union, merge and border options to thresholded labels (trainIds)."""
    out = labels.copy()
    if human is not None:
        if settings.union_classes:
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
    return out


@torch.no_grad()
def predict(model, images: torch.Tensor, scales, flip: bool, rt: Runtime | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(argmax trainIds, confidence) for a batch of float images in [0, 1], run as ``rt``
    says (default: fp32 on the model's device)."""
    rt = rt or Runtime(next(model.parameters()).device)
    with rt.autocast():
        logits = model.predict(rt.images(images), scales=scales, flip=flip)["logits"]
    probs = torch.softmax(logits.float(), dim=1)
    confidence, prediction = probs.max(dim=1)
    return prediction.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy()


def output_paths(out_dir: Path, city: str, stem: str) -> dict[str, Path]:
    """The three files of one image."""
    return {kind: Path(out_dir) / city / f"{stem}{suffix}" for kind, suffix in SUFFIXES.items()}


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a PNG to a temporary file beside ``path``, then rename: never a half-written PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@dataclass(frozen=True)
class Job:
    """One coarse image to label: its id, city, image and human coarse label (absolute paths)."""

    image_id: str
    city: str
    image: str
    human: str | None


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, setting: str = "the pixel limit") -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [0, 1] (see ``hmsa.data.images.read_rgb``)."""
    return torch.from_numpy(read_rgb(path, max_pixels, setting)).permute(2, 0, 1).float().div(255)


class _Images(Dataset):
    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        return read_image(self.jobs[i].image), i


def write_outputs(job: Job, out_dir: Path, prediction: np.ndarray, confidence: np.ndarray, settings: Refinement) -> None:
    """Threshold and refine one image's prediction and write its three PNGs."""
    human = None
    if job.human:
        with Image.open(job.human) as lab:
            human = CITYSCAPES.train_ids(np.asarray(lab))
    labels = refine(hard_labels(prediction, confidence, settings.thresholds()), human, settings)
    paths = output_paths(out_dir, job.city, job.image_id)
    # the label file last: its presence marks the image as done
    write_png_atomic(prediction, paths["prediction"])
    write_png_atomic(confidence_to_u8(confidence), paths["confidence"])
    write_png_atomic(labels, paths["label"])


def label_images(model, jobs: list[Job], out_dir: Path, settings: Refinement, scales=(0.5, 1.0, 2.0),
                 flip: bool = False, batch_size: int = 4, readers: int = 1, writers: int = 2,
                 rank: int = 0, world: int = 1, progress: bool = True, rt: Runtime | None = None) -> dict[str, int]:
    """Label this process's share of ``jobs`` (every ``world``-th from ``rank``), skipping done ones.

    Reading (DataLoader workers) and writing (a thread pool) overlap the teacher's compute.
    Returns counts: ``labelled`` now, ``skipped`` (already done), ``total`` in this shard.
    """
    out_dir = Path(out_dir)
    mine = jobs[rank::world]
    todo = [j for j in mine if not output_paths(out_dir, j.city, j.image_id)["label"].is_file()]
    model.eval()
    loader = DataLoader(_Images(todo), batch_size=batch_size, num_workers=readers if todo else 0)
    with ThreadPoolExecutor(max_workers=max(1, writers)) as pool:
        pending = []
        for images, index in tqdm(loader, desc="auto-label", unit="batch", disable=None if progress else True):
            prediction, confidence = predict(model, images, scales, flip, rt)
            for k, i in enumerate(index.tolist()):
                pending.append(pool.submit(write_outputs, todo[i], out_dir, prediction[k], confidence[k], settings))
        for future in pending:
            future.result()  # surface write errors
    return {"labelled": len(todo), "skipped": len(mine) - len(todo), "total": len(mine)}


STAMP = "_auto_labels.json"


def model_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: which teacher made a set of labels."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_output(out_dir: Path, stamp: dict) -> bool:
    """Make ``out_dir`` hold labels of ``stamp`` (teacher digest + settings) only.

    Labels made by another teacher or other settings are removed, so that resuming never
    mixes them in. Returns True when old labels were removed.
    """
    out_dir = Path(out_dir)
    stamp = json.loads(json.dumps(stamp))  # tuples become lists, as in the file
    path = out_dir / STAMP
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = None
    cleared = False
    if current != stamp and out_dir.exists() and any(out_dir.iterdir()):
        log.warning("%s holds labels of another teacher or other settings: labelling afresh", out_dir)
        shutil.rmtree(out_dir)
        cleared = True
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # PNGs a killed run was writing
    if current != stamp:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return cleared


# ------------------------------------------------------------------ quality


def _read(path: str | Path, label_ids: bool = False) -> np.ndarray:
    with Image.open(path) as img:
        array = np.asarray(img)
    return CITYSCAPES.train_ids(array) if label_ids else array


#: the worst class is chosen among classes labelled on at least this many pixels (a handful of
#: pixels says nothing about a class)
MIN_CLASS_PIXELS = 1000

NO_TRUTH = "no held-out fine labels for these images: coverage and accuracy cannot be measured"


def quality(rows: pd.DataFrame, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)) -> dict[str, pd.DataFrame]:
    """Coverage and accuracy of auto-labels (and of human coarse labels) against held-out fine truth.

    ``rows`` has absolute paths: ``label``, ``confidence``, ``prediction``, ``human`` and
    ``fine`` (held-out truth; rows without it are left out of accuracy figures).
    Returns ``summary`` (one row per label source, with its worst class), ``per_class``, and
    ``sweep`` (threshold -> coverage, accuracy of the thresholded teacher). Per class:
    ``coverage`` and ``accuracy`` over the pixels whose truth is the class (how much of it is
    labelled, and labelled right), and ``label_accuracy`` over the pixels labelled as the class
    (how often that label is right: what a student trained on it is told).
    """
    conf_hist = np.zeros(256, dtype=np.int64)
    correct_hist = np.zeros(256, dtype=np.int64)
    stats = {src: {key: np.zeros(NUM_CLASSES, np.int64) for key in ("labelled", "correct", "labelled_as")}
             for src in ("auto", "human")}
    fine_pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    total = 0
    for row in rows.itertuples(index=False):
        if not isinstance(row.fine, str):
            continue
        fine = _read(row.fine, label_ids=True)
        valid = fine != IGNORE_INDEX
        total += int(valid.sum())
        fine_pixels += np.bincount(fine[valid], minlength=NUM_CLASSES)[:NUM_CLASSES]
        conf = _read(row.confidence)
        pred = _read(row.prediction)
        conf_hist += np.bincount(conf[valid], minlength=256)
        correct_hist += np.bincount(conf[valid & (pred == fine)], minlength=256)
        for src, labels in (("auto", _read(row.label)), ("human", _read(row.human, label_ids=True))):
            has = valid & (labels != IGNORE_INDEX)
            stats[src]["labelled"] += np.bincount(fine[has], minlength=NUM_CLASSES)[:NUM_CLASSES]
            stats[src]["correct"] += np.bincount(fine[has & (labels == fine)], minlength=NUM_CLASSES)[:NUM_CLASSES]
            stats[src]["labelled_as"] += np.bincount(labels[has], minlength=NUM_CLASSES)[:NUM_CLASSES]
    summary, per_class = [], []
    # real coarse sets (Cityscapes' train_extra) have no fine truth: then nothing can be measured
    note = "" if total else NO_TRUTH
    for src, s in stats.items():
        labelled, correct = int(s["labelled"].sum()), int(s["correct"].sum())
        # a label is right where label == truth, so the right pixels of label c are correct[c]
        label_accuracy = np.divide(s["correct"], s["labelled_as"], out=np.full(NUM_CLASSES, np.nan),
                                   where=s["labelled_as"] > 0)
        counted = s["labelled_as"] >= MIN_CLASS_PIXELS
        worst = int(np.nanargmin(np.where(counted, label_accuracy, np.nan))) if counted.any() else None
        summary.append({"source": src, "coverage": labelled / total if total else np.nan,
                        "accuracy": correct / labelled if labelled else np.nan, "pixels": total,
                        "worst_class": TRAIN_CLASS_NAMES[worst] if worst is not None else "",
                        "worst_class_accuracy": label_accuracy[worst] if worst is not None else np.nan, "note": note})
        for c, name in enumerate(TRAIN_CLASS_NAMES):
            if fine_pixels[c] or s["labelled_as"][c]:
                per_class.append({"source": src, "class_name": name,
                                  "coverage": s["labelled"][c] / fine_pixels[c] if fine_pixels[c] else np.nan,
                                  "accuracy": s["correct"][c] / s["labelled"][c] if s["labelled"][c] else np.nan,
                                  "labelled_as": int(s["labelled_as"][c]), "label_accuracy": label_accuracy[c]})
    sweep = []
    for t in thresholds:
        keep = np.arange(256) >= round(t * 255)
        kept = int(conf_hist[keep].sum())
        sweep.append({"threshold": t, "coverage": kept / total if total else np.nan,
                      "accuracy": int(correct_hist[keep].sum()) / kept if kept else np.nan})
    return {"summary": pd.DataFrame(summary), "per_class": pd.DataFrame(per_class), "sweep": pd.DataFrame(sweep)}


# ------------------------------------------------------------------ settings


class AutoLabelConfig(BaseModel):
    """What ``auto_labeling:`` in a parameters file may say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: catalog: the teacher_model bundle; or an MLflow model URI such as models:/hmsa-teacher@newest
    teacher: str = "catalog"
    splits: list[str] = Field(default_factory=lambda: ["train_extra"])
    scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    flip: bool = False
    threshold: float = Field(0.9, ge=0.0, le=1.0)
    #: fixed: ``threshold`` for every class (the paper's rule); per_class: each class's lowest
    #: threshold at which the teacher's predictions on ``calibration_split`` are ``target_accuracy`` right
    threshold_rule: Literal["fixed", "per_class"] = "fixed"
    target_accuracy: float = Field(0.98, gt=0.0, le=1.0)
    calibration_split: str = "val"
    merge_human_coarse: bool = False
    union_classes: list[str] = Field(default_factory=lambda: ["truck", "bus", "train"])
    border: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1)
    readers: int = Field(1, ge=0)
    writers: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: inference precision and memory layout: auto follows hmsa.models.runtime's rule
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    sweep_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    panels: int = Field(4, ge=0)
    progress_bar: bool = True

    @field_validator("channels_last", mode="before")
    @classmethod
    def _on_off(cls, value):
        # YAML 1.1 and OmegaConf's --params read a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "AutoLabelConfig":
        from hmsa.models.fusion import check_scales

        check_scales(self.scales)
        unknown = [n for n in self.union_classes if n not in TRAIN_CLASS_NAMES]
        if unknown:
            raise ValueError(f"union_classes: {unknown} are not training classes; choose from {list(TRAIN_CLASS_NAMES)}")
        if self.teacher != "catalog" and not self.teacher.startswith(("models:/", "runs:/")):
            raise ValueError(f"teacher must be 'catalog' or an MLflow model URI (models:/NAME@ALIAS), got {self.teacher!r}")
        return self

    def refinement(self, class_thresholds=None) -> Refinement:
        """The labelling rules of these settings (with ``class_thresholds`` under ``per_class``)."""
        ids = tuple(TRAIN_CLASS_NAMES.index(n) for n in self.union_classes)
        per_class = None
        if self.threshold_rule == "per_class":
            if class_thresholds is None:
                raise ValueError("auto_labeling.threshold_rule per_class needs the thresholds calibrated on "
                                 f"'{self.calibration_split}' (the auto_label_thresholds table)")
            per_class = tuple(float(t) for t in class_thresholds)
        return Refinement(self.threshold, self.merge_human_coarse, ids, self.border, per_class)
