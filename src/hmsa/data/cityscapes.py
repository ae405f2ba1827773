"""The Cityscapes directory layout and file naming, in one place.

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtCoarse/<split>/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png

``seq`` and ``frame`` are six digits. SynthCity adds one folder that real Cityscapes does
not have, ``heldout/gtFine/train_extra/...``: the fine ground truth of its coarse-only
images, kept apart so that training never sees it and auto-label quality can be measured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_DIR = "leftImg8bit"
HELDOUT_DIR = "heldout"
LABEL_DIRS = {"fine": "gtFine", "coarse": "gtCoarse"}
LABEL_KINDS = tuple(LABEL_DIRS)

# Cityscapes' images are PNGs; converted Mapillary images are kept as JPEGs
_IMAGE_NAME = re.compile(r"^(?P<city>[^_/]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.(png|jpg)$")
_LABEL_NAME = re.compile(
    r"^(?P<city>[^_/]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_(?P<dir>gtFine|gtCoarse)_labelIds\.png$"
)


def image_id(city: str, seq: int, frame: int) -> str:
    """The ``<city>_<seq>_<frame>`` stem that names every file of one image."""
    return f"{city}_{seq:06d}_{frame:06d}"


def image_relpath(split: str, city: str, stem: str) -> str:
    """Path of an image relative to the data root."""
    return f"{IMAGE_DIR}/{split}/{city}/{stem}_leftImg8bit.png"


def label_relpath(kind: str, split: str, city: str, stem: str) -> str:
    """Path of a label-id PNG (``kind`` fine or coarse) relative to the data root."""
    folder = LABEL_DIRS[kind]
    return f"{folder}/{split}/{city}/{stem}_{folder}_labelIds.png"


def heldout_relpath(split: str, city: str, stem: str) -> str:
    """Path of SynthCity's held-out fine label of a coarse-only image."""
    return f"{HELDOUT_DIR}/{label_relpath('fine', split, city, stem)}"


@dataclass(frozen=True)
class IndexEntry:
    """One (image, label file) pair found in a Cityscapes-layout tree."""

    split: str
    city: str
    image_id: str
    label_kind: str
    image_path: str
    label_path: str
    heldout_fine_path: str | None


@dataclass(frozen=True)
class FileProblem:
    """A file the layout scan found wrong, and what is wrong with it."""

    path: str
    problem: str


@dataclass
class TreeIndex:
    """The result of scanning a tree: entries to check, and problems already found."""

    entries: list[IndexEntry]
    problems: list[FileProblem]
    empty_splits: list[str]


def _list_files(folder: Path) -> list[tuple[str, str]]:
    """(city, file name) of every file one level below ``folder``'s city folders, sorted."""
    found: list[tuple[str, str]] = []
    if not folder.is_dir():
        return found
    with os.scandir(folder) as cities:
        for city in sorted(cities, key=lambda e: e.name):
            if not city.is_dir():
                continue
            with os.scandir(city.path) as files:
                found.extend((city.name, f.name) for f in files if f.is_file())
    found.sort()
    return found


def index_tree(root: Path, splits: dict[str, list[str]]) -> TreeIndex:
    """Scan a Cityscapes-layout tree and pair every image with its label files.

    ``splits`` maps a split name to the label kinds it must have, e.g.
    ``{"train": ["fine"], "val": ["fine"], "train_extra": ["coarse"]}``. An image without a
    required label file, a label file without its image, and a file whose name does not
    follow the Cityscapes pattern are reported as problems; a split with no image is
    reported in ``empty_splits``.
    """
    root = Path(root)
    entries: list[IndexEntry] = []
    problems: list[FileProblem] = []
    empty: list[str] = []
    for split, kinds in splits.items():
        images = _list_files(root / IMAGE_DIR / split)
        stems: set[tuple[str, str]] = set()
        for city, name in images:
            match = _IMAGE_NAME.match(name)
            rel = f"{IMAGE_DIR}/{split}/{city}/{name}"
            if match is None or match["city"] != city:
                problems.append(
                    FileProblem(
                        rel,
                        "file name does not follow <city>_<seq>_<frame>_leftImg8bit.png "
                        "inside its city folder; rename or remove it",
                    )
                )
                continue
            stem = name[: -len("_leftImg8bit.png")]  # .jpg: as long
            stems.add((city, stem))
            heldout = heldout_relpath(split, city, stem)
            heldout = heldout if (root / heldout).is_file() else None
            for kind in kinds:
                label = label_relpath(kind, split, city, stem)
                if not (root / label).is_file():
                    problems.append(
                        FileProblem(
                            rel,
                            f"image has no {kind} label file: expected {label}; "
                            "add the label or remove the image",
                        )
                    )
                    continue
                entries.append(
                    IndexEntry(split, city, stem, kind, rel, label, heldout if kind == "coarse" else None)
                )
        for kind in kinds:
            folder = LABEL_DIRS[kind]
            for city, name in _list_files(root / folder / split):
                match = _LABEL_NAME.match(name)
                if match is None:
                    continue  # *_color.png, *_instanceIds.png, *_polygons.json are not ours to check
                stem = name[: -len(f"_{folder}_labelIds.png")]
                if (city, stem) not in stems:
                    problems.append(
                        FileProblem(
                            f"{folder}/{split}/{city}/{name}",
                            f"label file has no image: expected {image_relpath(split, city, stem)}",
                        )
                    )
        if not images:
            empty.append(split)
    return TreeIndex(entries, problems, empty)
