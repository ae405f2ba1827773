"""Mapillary Vistas: its layout, and its conversion into the tree the workflow reads.

Mapillary Vistas v1.2 as downloaded::

    training/images/<key>.jpg        training/v1.2/labels/<key>.png   (v1.0/1.1: training/labels/)
    validation/images/<key>.jpg      validation/v1.2/labels/<key>.png

Label PNGs hold ids 0..65 (65 = unlabeled, ignored; ``hmsa.data.labels.MAPILLARY``). There is
no coarse split, so there is nothing to auto-label: the Mapillary environment trains the
student on ``training`` alone (see conf/mapillary/).

Conversion resizes every pair so that its long edge is ``long_edge`` pixels (the paper: 2177;
images bilinear, labels nearest) and writes it in the Cityscapes layout with one pseudo-city,
``mapillary``: ``leftImg8bit/{train,val}/mapillary/mapillary_<n>_000019_leftImg8bit.jpg`` and
``gtFine/.../mapillary_<n>_000019_gtFine_labelIds.png`` (<n>: the key's rank in its split).
``keys.csv`` maps each image id back to its Mapillary key. Like SynthCity, the tree is built in
a temporary folder and swapped in whole, and rebuilt only when the source files or the
settings change.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from hmsa.data import cityscapes
from hmsa.io.images import to_rgb
from hmsa.runtime.jobs import run_jobs
from hmsa.io.files import rebuild_stamped

log = logging.getLogger(__name__)

SPLITS = {"training": "train", "validation": "val"}
CITY = "mapillary"
STAMP_FILE = "conversion.json"
KEYS_FILE = "keys.csv"
CONVERTER_VERSION = 1


class MapillaryError(ValueError):
    """The Mapillary root is missing, has the wrong layout, or has unpaired files."""


class MapillarySpec(BaseModel):
    """How Mapillary Vistas is converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: every image is resized so that its long edge has this many pixels (the paper: 2177)
    long_edge: int = Field(2177, ge=16)
    #: JPEG quality of the converted images
    jpeg_quality: int = Field(95, ge=50, le=100)


def _label_dir(split_dir: Path) -> Path | None:
    for candidate in (split_dir / "v1.2" / "labels", split_dir / "labels"):
        if candidate.is_dir():
            return candidate
    return None


def index_source(root: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """(key, image, label) of every pair, per workflow split (train, val), sorted by key.

    A missing split folder, an image without its label and a label without its image are
    errors that name the file and say what to do."""
    root = Path(root)
    if not root.is_dir():
        raise MapillaryError(
            f"data.mapillary_root: {root} does not exist. Set it (or MAPILLARY_DATASET, with --env mapillary) to "
            "the folder that holds training/ and validation/ of Mapillary Vistas."
        )
    pairs: dict[str, list[tuple[str, Path, Path]]] = {}
    for folder, split in SPLITS.items():
        images_dir, labels_dir = root / folder / "images", _label_dir(root / folder)
        if not images_dir.is_dir() or labels_dir is None:
            raise MapillaryError(
                f"data.mapillary_root: {root} has no {folder}/images/ with {folder}/v1.2/labels/ (or {folder}/labels/): "
                "point it at the Mapillary Vistas folder that holds training/ and validation/."
            )
        images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
        labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix.lower() == ".png"}
        unpaired = sorted(set(images) ^ set(labels))
        if unpaired:
            key = unpaired[0]
            what = (f"image {images[key]} has no label {labels_dir / (key + '.png')}" if key in images
                    else f"label {labels[key]} has no image in {images_dir}")
            raise MapillaryError(f"Mapillary {folder}: {len(unpaired)} unpaired file(s), e.g. {what}; "
                                 "add the missing files or remove the unpaired ones.")
        if not images:
            raise MapillaryError(f"Mapillary {folder}: no images in {images_dir}")
        pairs[split] = [(key, images[key], labels[key]) for key in sorted(images)]
    return pairs


def _fingerprint(pairs: dict[str, list[tuple[str, Path, Path]]], spec: MapillarySpec) -> dict:
    digest = hashlib.sha256()
    for split, items in sorted(pairs.items()):
        for key, image, label in items:
            for path in (image, label):
                stat = path.stat()
                digest.update(f"{split}|{key}|{path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return {"converter_version": CONVERTER_VERSION, "spec": spec.model_dump(), "source_files": digest.hexdigest()}


def resized_size(width: int, height: int, long_edge: int) -> tuple[int, int]:
    """(width, height) with the long edge at ``long_edge`` and the aspect ratio kept."""
    scale = long_edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _convert_one(args: tuple[Path, str, int, Path, Path, int, int]) -> None:
    dest, split, number, image_path, label_path, long_edge, quality = args
    stem = cityscapes.image_id(CITY, number, 19)
    with Image.open(image_path) as img:
        image = Image.fromarray(to_rgb(img, image_path))  # 16-bit scaled, not clipped
    with Image.open(label_path) as lab:
        lab.load()
        if lab.size != image.size:
            raise MapillaryError(
                f"label {label_path} is {lab.size[0]}x{lab.size[1]} but its image {image_path} is "
                f"{image.size[0]}x{image.size[1]}; labels must match their image"
            )
        ids = Image.fromarray(np.asarray(lab, dtype=np.uint8))  # palette indices are the class ids
    size = resized_size(*image.size, long_edge)
    image_out = dest / f"{cityscapes.IMAGE_DIR}/{split}/{CITY}/{stem}_leftImg8bit.jpg"
    label_out = dest / cityscapes.label_relpath("fine", split, CITY, stem)
    image_out.parent.mkdir(parents=True, exist_ok=True)
    label_out.parent.mkdir(parents=True, exist_ok=True)
    image.resize(size, Image.Resampling.BILINEAR).save(image_out, quality=quality)
    ids.resize(size, Image.Resampling.NEAREST).save(label_out, compress_level=1)


def ensure_converted(source: Path, dest: Path, spec: MapillarySpec, workers: int = 1) -> bool:
    """Convert the Mapillary tree at ``source`` into ``dest`` unless ``dest`` already holds
    this conversion of these files. Returns True when it converted."""
    pairs = index_source(Path(source))
    jobs = [(split, n, image, label) for split, items in pairs.items() for n, (_, image, label) in enumerate(items)]
    start = time.perf_counter()

    def fill(tmp: Path) -> int:
        args = [(tmp, split, n, image, label, spec.long_edge, spec.jpeg_quality) for split, n, image, label in jobs]
        run_jobs(_convert_one, args, workers)
        with open(tmp / KEYS_FILE, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "image_id", "mapillary_key"])
            for split, items in pairs.items():
                writer.writerows((split, cityscapes.image_id(CITY, n, 19), key) for n, (key, _, _) in enumerate(items))
        return len(args)

    built, count = rebuild_stamped(dest, STAMP_FILE, _fingerprint(pairs, spec), fill, "a Mapillary conversion",
                                   "paths.mapillary")
    if not built:
        log.info("Mapillary conversion at %s is up to date", dest)
        return False
    log.info("Converted Mapillary Vistas: %d images (long edge %d px) in %.1f s into %s",
             count, spec.long_edge, time.perf_counter() - start, dest)
    return True
