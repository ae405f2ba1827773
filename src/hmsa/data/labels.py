"""The Cityscapes label table: the one place label ids, trainIds, names and colours live.

Label PNGs on disk hold Cityscapes *label ids* (0..33). Training and evaluation use
*trainIds*: 19 classes numbered 0..18, with every other label id mapped to ``IGNORE_INDEX``.
License plate has label id -1 in the official table; an 8-bit PNG cannot hold -1, and
tools that write it store 255, so 255 is accepted as a label id that maps to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19


@dataclass(frozen=True)
class Label:
    """One row of the Cityscapes label table."""

    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# name, label id, trainId (255 = ignored in training and evaluation), colour (RGB)
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
    Label("license plate", -1, 255, (0, 0, 142)),
)

LABEL_BY_NAME: dict[str, Label] = {label.name: label for label in LABELS}

#: label id as stored in an 8-bit PNG (license plate's -1 stored as 255)
VALID_LABEL_IDS: frozenset[int] = frozenset(label.id % 256 for label in LABELS)

#: trainId -> class name, for the 19 training classes
TRAIN_CLASS_NAMES: tuple[str, ...] = tuple(
    label.name
    for label in sorted(
        (lab for lab in LABELS if lab.train_id != IGNORE_INDEX), key=lambda lab: lab.train_id
    )
)

#: trainId -> colour, for the 19 training classes
TRAIN_CLASS_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    LABEL_BY_NAME[name].color for name in TRAIN_CLASS_NAMES
)


def _build_palette() -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(TRAIN_CLASS_COLORS)] = TRAIN_CLASS_COLORS
    return palette


#: 256 x 3 lookup table: trainId -> RGB colour (ignore and unused ids black)
TRAIN_ID_PALETTE: np.ndarray = _build_palette()
TRAIN_ID_PALETTE.setflags(write=False)


def _build_id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in LABELS:
        lut[label.id % 256] = label.train_id
    return lut


#: 256-entry lookup table: uint8 label id -> trainId (unknown ids -> ignore)
ID_TO_TRAIN_ID: np.ndarray = _build_id_to_train_id()
ID_TO_TRAIN_ID.setflags(write=False)


def _build_train_id_to_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # ignore -> "unlabeled" (0)
    for label in LABELS:
        if label.train_id != IGNORE_INDEX:
            lut[label.train_id] = label.id
    return lut


#: 256-entry lookup table: trainId -> label id (ignore -> 0, "unlabeled")
TRAIN_ID_TO_ID: np.ndarray = _build_train_id_to_id()
TRAIN_ID_TO_ID.setflags(write=False)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map an array of uint8 Cityscapes label ids to trainIds (unknown ids become ignore)."""
    return ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds back to Cityscapes label ids, as the official evaluation expects."""
    return TRAIN_ID_TO_ID[np.asarray(train_ids, dtype=np.uint8)]


def unknown_label_ids(label_ids: np.ndarray) -> list[int]:
    """Return the sorted label ids in ``label_ids`` that are not in the Cityscapes table."""
    present = np.flatnonzero(np.bincount(np.asarray(label_ids, dtype=np.uint8).ravel(), minlength=256))
    return [int(v) for v in present if int(v) not in VALID_LABEL_IDS]
