"""Labelling the coarse images: three PNGs per image, written atomically, resumable, and
shared between processes.

- ``<stem>_autoLabelTrainIds.png``: the refined labels (trainIds, 255 ignore; see ``refinement``);
- ``<stem>_autoConfidence.png``: the confidence, 8-bit (round(255 * p));
- ``<stem>_autoPredTrainIds.png``: the raw argmax, so that coverage and accuracy can be
  studied at any threshold later without running the teacher again.

An image whose label file exists is skipped, so an interrupted run resumes; a stamp of the
teacher and settings makes sure it resumes only labels of the same teacher and settings;
``rank``/``world`` shard the images between processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hmsa.autolabel.config import AutoLabelConfig
from hmsa.autolabel.refinement import Refinement, confidence_to_u8, teacher_labels
from hmsa.autolabel.teacher import load_teacher, predict, teacher_runtime
from hmsa.io.images import read_image, write_png_atomic
from hmsa.data.labels import LabelSet
from hmsa.io.files import atomic_path, remove_stale_temps, under
from hmsa.runtime.device import Runtime
from hmsa.runtime import distributed
log = logging.getLogger(__name__)

SUFFIXES = {"label": "_autoLabelTrainIds.png", "confidence": "_autoConfidence.png", "prediction": "_autoPredTrainIds.png"}

#: the file in the labels' folder naming the teacher and settings that made them
STAMP = "_auto_labels.json"


@dataclass(frozen=True)
class Job:
    """One coarse image to label: its id, city, image and human coarse label (absolute paths)."""

    image_id: str
    city: str
    image: str
    human: str | None


def output_paths(out_dir: Path, city: str, stem: str) -> dict[str, Path]:
    """The three files of one image."""
    return {kind: Path(out_dir) / city / f"{stem}{suffix}" for kind, suffix in SUFFIXES.items()}


class _Images(Dataset):
    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        return read_image(self.jobs[i].image), i


def write_outputs(job: Job, out_dir: Path, prediction: np.ndarray, confidence: np.ndarray, settings: Refinement,
                  labels: LabelSet | None = None) -> None:
    """Threshold and refine one image's prediction and write its three PNGs. The human coarse
    label is read (its label ids mapped by ``labels``) only when ``settings`` use it."""
    human = None
    if job.human and settings.uses_human:
        if labels is None:
            raise ValueError("union_classes or merge_human_coarse read the human coarse labels: give the data set's "
                             "label set (labels=...) to map their label ids to trainIds")
        with Image.open(job.human) as lab:
            human = labels.train_ids(np.asarray(lab))
    refined = teacher_labels(prediction, confidence, human, settings)
    paths = output_paths(out_dir, job.city, job.image_id)
    # the label file last: its presence marks the image as done
    write_png_atomic(prediction, paths["prediction"])
    write_png_atomic(confidence_to_u8(confidence), paths["confidence"])
    write_png_atomic(refined, paths["label"])


def label_images(model, jobs: list[Job], out_dir: Path, settings: Refinement, scales=(0.5, 1.0, 2.0),
                 flip: bool = False, batch_size: int = 4, readers: int = 1, writers: int = 2,
                 rank: int = 0, world: int = 1, progress: bool = True, rt: Runtime | None = None,
                 labels: LabelSet | None = None, above_one: str = "image_size") -> dict[str, int]:
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
            prediction, confidence = predict(model, images, scales, flip, rt, above_one)
            for k, i in enumerate(index.tolist()):
                pending.append(pool.submit(write_outputs, todo[i], out_dir, prediction[k], confidence[k], settings,
                                           labels))
        for future in pending:
            future.result()  # surface write errors
    return {"labelled": len(todo), "skipped": len(mine) - len(todo), "total": len(mine)}


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


# ------------------------------------------------------------------ the whole stage


def coarse_rows(cfg: AutoLabelConfig, image_manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows to label: the coarse images of ``splits``."""
    rows = image_manifest[image_manifest["split"].isin(cfg.splits) & (image_manifest["label_kind"] == "coarse")]
    if rows.empty:
        raise ValueError(f"auto_labeling.splits {cfg.splits}: no coarse images to label")
    return rows


def class_threshold_list(thresholds: pd.DataFrame | None, labels: LabelSet) -> list[float] | None:
    """The thresholds column of the auto_label_thresholds table, refused when it was calibrated
    for another label set's classes (a stale table from another data set)."""
    if thresholds is None:
        return None
    if thresholds["class_name"].tolist() != list(labels.class_names):
        raise ValueError(f"auto_label_thresholds: its classes are not those of the {labels.name} label set; "
                         "calibrate again (node label_thresholds)")
    return thresholds["threshold"].tolist()


def _barrier(world: int, rt: Runtime) -> None:
    """Wait for every process under torchrun (joining their group first, a no-op once joined)."""
    if world > 1:
        distributed.init(rt.device.type == "cuda")
        torch.distributed.barrier()


def label_manifest(rows: pd.DataFrame) -> pd.DataFrame:
    """The manifest the student reads: each image with its auto-label files (paths relative to
    the labels' folder) beside its human coarse label and held-out truth."""
    manifest = rows[["split", "city", "image_id", "image_path", "label_path", "heldout_fine_path"]].rename(
        columns={"label_path": "human_label_path"}).reset_index(drop=True)
    for kind, suffix in SUFFIXES.items():
        manifest[f"{kind}_path"] = manifest["city"] + "/" + manifest["image_id"] + suffix
    return manifest


def label_coarse_images(cfg: AutoLabelConfig, teacher_bundle: dict, image_manifest: pd.DataFrame, root: str | Path,
                        out_dir: str | Path, labels: LabelSet,
                        thresholds: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Label every coarse image of ``splits`` into ``out_dir`` (this process's share under
    torchrun), after rank 0 has cleared labels of another teacher or settings.

    Returns the manifest the student reads and where the labels are, with what made them.
    """
    rows, root, out_dir = coarse_rows(cfg, image_manifest), Path(root), Path(out_dir)
    jobs = [Job(r.image_id, r.city, str(under(root, r.image_path)), str(under(root, r.label_path)))
            for r in rows.itertuples(index=False)]
    refinement = cfg.refinement(labels, class_threshold_list(thresholds, labels))
    rank, world, _ = distributed.env_world()
    rt = teacher_runtime(cfg)
    model = rt.model(load_teacher(cfg, teacher_bundle, labels))
    stamp = {"teacher": model_digest(model), "refinement": dataclasses.asdict(refinement),
             "scales": sorted(cfg.scales), "flip": cfg.flip, "precision": rt.describe().rsplit(", ", 1)[1],
             "fuse_above_one": cfg.fuse_above_one}
    if rank == 0:
        prepare_output(out_dir, stamp)
    _barrier(world, rt)  # rank 0 has cleared stale labels before anyone writes
    counts = label_images(model, jobs, out_dir, refinement, cfg.scales, cfg.flip, cfg.batch_size, cfg.readers,
                          cfg.writers, rank, world, cfg.progress_bar, rt, labels, cfg.fuse_above_one)
    log.info("auto-labelling: %d labelled, %d already done (rank %d of %d)", counts["labelled"], counts["skipped"],
             rank, world)
    _barrier(world, rt)  # every shard is written before anyone reads the whole set
    info = {"root": str(out_dir), "teacher_source": cfg.teacher, "teacher_digest": stamp["teacher"],
            "threshold": cfg.threshold, "threshold_rule": cfg.threshold_rule, "merge_human_coarse": cfg.merge_human_coarse,
            "union_classes": cfg.union_classes, "union_order": cfg.union_order, "border": cfg.border,
            "keep_box": cfg.keep_box, "scales": cfg.scales, "flip": cfg.flip, "fuse_above_one": cfg.fuse_above_one}
    return label_manifest(rows), info
