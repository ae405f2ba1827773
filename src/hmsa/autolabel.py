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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hmsa.data.images import MAX_IMAGE_PIXELS, read_rgb
from hmsa.fileio import atomic_path, remove_stale_temps
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

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"auto_labeling.threshold must be in [0, 1], got {self.threshold}")
        if self.border < 0:
            raise ValueError(f"auto_labeling.border must be >= 0, got {self.border}")


def confidence_to_u8(confidence: np.ndarray) -> np.ndarray:
    """Max softmax probability in [0, 1] -> 8-bit PNG values."""
    return np.clip(np.rint(np.asarray(confidence, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def hard_labels(prediction: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The teacher's class where its confidence is >= threshold, ignore (255) elsewhere."""
    return np.where(np.asarray(confidence) >= threshold, prediction, IGNORE_INDEX).astype(np.uint8)


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
def predict(model, images: torch.Tensor, scales, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(argmax trainIds, confidence) for a batch of float images in [0, 1]."""
    probs = torch.softmax(model.predict(images, scales=scales, flip=flip)["logits"].float(), dim=1)
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
    labels = refine(hard_labels(prediction, confidence, settings.threshold), human, settings)
    paths = output_paths(out_dir, job.city, job.image_id)
    # the label file last: its presence marks the image as done
    write_png_atomic(prediction, paths["prediction"])
    write_png_atomic(confidence_to_u8(confidence), paths["confidence"])
    write_png_atomic(labels, paths["label"])


def label_images(model, jobs: list[Job], out_dir: Path, settings: Refinement, scales=(0.5, 1.0, 2.0),
                 flip: bool = False, batch_size: int = 4, readers: int = 1, writers: int = 2,
                 rank: int = 0, world: int = 1, progress: bool = True) -> dict[str, int]:
    """Label this process's share of ``jobs`` (every ``world``-th from ``rank``), skipping done ones.

    Reading (DataLoader workers) and writing (a thread pool) overlap the teacher's compute.
    Returns counts: ``labelled`` now, ``skipped`` (already done), ``total`` in this shard.
    """
    out_dir = Path(out_dir)
    mine = jobs[rank::world]
    todo = [j for j in mine if not output_paths(out_dir, j.city, j.image_id)["label"].is_file()]
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(_Images(todo), batch_size=batch_size, num_workers=readers if todo else 0)
    with ThreadPoolExecutor(max_workers=max(1, writers)) as pool:
        pending = []
        for images, index in tqdm(loader, desc="auto-label", unit="batch", disable=None if progress else True):
            prediction, confidence = predict(model, images.to(device), scales, flip)
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


NO_TRUTH = "no held-out fine labels for these images: coverage and accuracy cannot be measured"


def quality(rows: pd.DataFrame, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)) -> dict[str, pd.DataFrame]:
    """Coverage and accuracy of auto-labels (and of human coarse labels) against held-out fine truth.

    ``rows`` has absolute paths: ``label``, ``confidence``, ``prediction``, ``human`` and
    ``fine`` (held-out truth; rows without it are left out of accuracy figures).
    Returns ``summary`` (one row per label source), ``per_class`` coverage and accuracy, and
    ``sweep`` (threshold -> coverage, accuracy of the thresholded teacher).
    """
    conf_hist = np.zeros(256, dtype=np.int64)
    correct_hist = np.zeros(256, dtype=np.int64)
    stats = {src: {"labelled": np.zeros(NUM_CLASSES, np.int64), "correct": np.zeros(NUM_CLASSES, np.int64)}
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
    summary, per_class = [], []
    # real coarse sets (Cityscapes' train_extra) have no fine truth: then nothing can be measured
    note = "" if total else NO_TRUTH
    for src, s in stats.items():
        labelled, correct = int(s["labelled"].sum()), int(s["correct"].sum())
        summary.append({"source": src, "coverage": labelled / total if total else np.nan,
                        "accuracy": correct / labelled if labelled else np.nan, "pixels": total, "note": note})
        for c, name in enumerate(TRAIN_CLASS_NAMES):
            if fine_pixels[c]:
                per_class.append({"source": src, "class_name": name,
                                  "coverage": s["labelled"][c] / fine_pixels[c],
                                  "accuracy": s["correct"][c] / s["labelled"][c] if s["labelled"][c] else np.nan})
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
    merge_human_coarse: bool = False
    union_classes: list[str] = Field(default_factory=lambda: ["truck", "bus", "train"])
    border: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1)
    readers: int = Field(1, ge=0)
    writers: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sweep_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    panels: int = Field(4, ge=0)
    progress_bar: bool = True

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

    def refinement(self) -> Refinement:
        """The labelling rules of these settings."""
        ids = tuple(TRAIN_CLASS_NAMES.index(n) for n in self.union_classes)
        return Refinement(self.threshold, self.merge_human_coarse, ids, self.border)
