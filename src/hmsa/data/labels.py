"""The label tables: the one place label ids, trainIds, names and colours live.

Two label sets: Cityscapes (below) and Mapillary Vistas v1.2 (``MAPILLARY``). A
``LabelSet`` holds what the workflow needs of either: class names and colours by trainId,
the label ids by name, and the lookup tables between the ids stored in label PNGs and
trainIds. Code reads labels only through a label set (``CITYSCAPES.train_ids``,
``.label_ids``, ``.palette``, ``.label_id``); the tables below are what the two are built from.

Label PNGs on disk hold Cityscapes *label ids* (0..33). Training and evaluation use
*trainIds*: 19 classes numbered 0..18, with every other label id mapped to ``IGNORE_INDEX``.
License plate has label id -1 in the official table; an 8-bit PNG cannot hold -1, and
tools that write it store 255, so 255 is accepted as a label id that maps to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Label:
    """One row of the Cityscapes label table."""

    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# name, label id, trainId (255 = ignored in training and evaluation), colour (RGB)
_CITYSCAPES_LABELS: tuple[Label, ...] = (
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

_LABEL_BY_NAME: dict[str, Label] = {label.name: label for label in _CITYSCAPES_LABELS}

#: label id as stored in an 8-bit PNG (license plate's -1 stored as 255)
_VALID_LABEL_IDS: frozenset[int] = frozenset(label.id % 256 for label in _CITYSCAPES_LABELS)

#: trainId -> class name, for the 19 training classes
_TRAIN_CLASS_NAMES: tuple[str, ...] = tuple(
    label.name
    for label in sorted(
        (lab for lab in _CITYSCAPES_LABELS if lab.train_id != IGNORE_INDEX), key=lambda lab: lab.train_id
    )
)

#: trainId -> colour, for the 19 training classes
_TRAIN_CLASS_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    _LABEL_BY_NAME[name].color for name in _TRAIN_CLASS_NAMES
)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _build_id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in _CITYSCAPES_LABELS:
        lut[label.id % 256] = label.train_id
    return lut


#: 256-entry lookup table: uint8 label id -> trainId (unknown ids -> ignore)
_ID_TO_TRAIN_ID: np.ndarray = _frozen(_build_id_to_train_id())


def _build_train_id_to_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # ignore -> "unlabeled" (0)
    for label in _CITYSCAPES_LABELS:
        if label.train_id != IGNORE_INDEX:
            lut[label.train_id] = label.id
    return lut


#: 256-entry lookup table: trainId -> label id (ignore -> 0, "unlabeled")
_TRAIN_ID_TO_ID: np.ndarray = _frozen(_build_train_id_to_id())


# --------------------------------------------------------------------------- label sets


@dataclass(frozen=True, eq=False)
class LabelSet:
    """The classes of one data set: names and colours by trainId, and the 256-entry lookup
    tables from the label ids stored in PNGs to trainIds (``to_train``) and back."""

    name: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    to_train: np.ndarray
    to_label: np.ndarray
    valid_ids: frozenset[int]
    #: how the valid label ids read in an error message
    id_range: str
    #: every label's id as stored in PNGs, by name (void labels too: SynthCity draws them)
    ids_by_name: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def palette(self) -> np.ndarray:
        """256 x 3, read-only: trainId -> RGB (ignore and unused ids black)."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = self.class_colors
        return _frozen(palette)

    def train_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """uint8 label ids -> trainIds (ids outside the table become ignore)."""
        return self.to_train[np.asarray(label_ids, dtype=np.uint8)]

    def label_ids(self, train_ids: np.ndarray) -> np.ndarray:
        """trainIds -> the label ids this data set's official tools read."""
        return self.to_label[np.asarray(train_ids, dtype=np.uint8)]

    def train_ids_of(self, names, setting: str = "class names") -> tuple[int, ...]:
        """The trainIds of the classes ``names``; a name this set lacks is refused naming
        ``setting``, since a class name of one data set is often not one of another's."""
        names = list(names)
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise ValueError(f"{setting}: {unknown} are not classes of the {self.name} label set; "
                             f"choose from {list(self.class_names)}")
        return tuple(self.class_names.index(n) for n in names)

    def label_id(self, name: str) -> int:
        """The id label PNGs store for the label ``name``."""
        try:
            return self.ids_by_name[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a label of the {self.name} label set") from None

    def unknown_ids(self, label_ids: np.ndarray) -> list[int]:
        """The sorted label ids present in ``label_ids`` that are not in the table."""
        present = np.flatnonzero(np.bincount(np.asarray(label_ids, dtype=np.uint8).ravel(), minlength=256))
        return [int(v) for v in present if int(v) not in self.valid_ids]


CITYSCAPES = LabelSet("cityscapes", _TRAIN_CLASS_NAMES, _TRAIN_CLASS_COLORS, _ID_TO_TRAIN_ID, _TRAIN_ID_TO_ID,
                      _VALID_LABEL_IDS, "the Cityscapes label table (0..33, 255)",
                      {label.name: label.id % 256 for label in _CITYSCAPES_LABELS})

# Mapillary Vistas v1.2: label PNGs hold ids 0..65 in this order; 65 is "unlabeled" (ignored).
# The 65 others are trained and evaluated, trainId = label id (as in the HMSA authors' setup).
MAPILLARY_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("animal--bird", (165, 42, 42)), ("animal--ground-animal", (0, 192, 0)),
    ("construction--barrier--curb", (196, 196, 196)), ("construction--barrier--fence", (190, 153, 153)),
    ("construction--barrier--guard-rail", (180, 165, 180)), ("construction--barrier--other-barrier", (90, 120, 150)),
    ("construction--barrier--wall", (102, 102, 156)), ("construction--flat--bike-lane", (128, 64, 255)),
    ("construction--flat--crosswalk-plain", (140, 140, 200)), ("construction--flat--curb-cut", (170, 170, 170)),
    ("construction--flat--parking", (250, 170, 160)), ("construction--flat--pedestrian-area", (96, 96, 96)),
    ("construction--flat--rail-track", (230, 150, 140)), ("construction--flat--road", (128, 64, 128)),
    ("construction--flat--service-lane", (110, 110, 110)), ("construction--flat--sidewalk", (244, 35, 232)),
    ("construction--structure--bridge", (150, 100, 100)), ("construction--structure--building", (70, 70, 70)),
    ("construction--structure--tunnel", (150, 120, 90)), ("human--person", (220, 20, 60)),
    ("human--rider--bicyclist", (255, 0, 0)), ("human--rider--motorcyclist", (255, 0, 100)),
    ("human--rider--other-rider", (255, 0, 200)), ("marking--crosswalk-zebra", (200, 128, 128)),
    ("marking--general", (255, 255, 255)), ("nature--mountain", (64, 170, 64)), ("nature--sand", (230, 160, 50)),
    ("nature--sky", (70, 130, 180)), ("nature--snow", (190, 255, 255)), ("nature--terrain", (152, 251, 152)),
    ("nature--vegetation", (107, 142, 35)), ("nature--water", (0, 170, 30)), ("object--banner", (255, 255, 128)),
    ("object--bench", (250, 0, 30)), ("object--bike-rack", (100, 140, 180)), ("object--billboard", (220, 220, 220)),
    ("object--catch-basin", (220, 128, 128)), ("object--cctv-camera", (222, 40, 40)),
    ("object--fire-hydrant", (100, 170, 30)), ("object--junction-box", (40, 40, 40)),
    ("object--mailbox", (33, 33, 33)), ("object--manhole", (100, 128, 160)), ("object--phone-booth", (142, 0, 0)),
    ("object--pothole", (70, 100, 150)), ("object--street-light", (210, 170, 100)),
    ("object--support--pole", (153, 153, 153)), ("object--support--traffic-sign-frame", (128, 128, 128)),
    ("object--support--utility-pole", (0, 0, 80)), ("object--traffic-light", (250, 170, 30)),
    ("object--traffic-sign--back", (192, 192, 192)), ("object--traffic-sign--front", (220, 220, 0)),
    ("object--trash-can", (140, 140, 20)), ("object--vehicle--bicycle", (119, 11, 32)),
    ("object--vehicle--boat", (150, 0, 255)), ("object--vehicle--bus", (0, 60, 100)),
    ("object--vehicle--car", (0, 0, 142)), ("object--vehicle--caravan", (0, 0, 90)),
    ("object--vehicle--motorcycle", (0, 0, 230)), ("object--vehicle--on-rails", (0, 80, 100)),
    ("object--vehicle--other-vehicle", (128, 64, 64)), ("object--vehicle--trailer", (0, 0, 110)),
    ("object--vehicle--truck", (0, 0, 70)), ("object--vehicle--wheeled-slow", (0, 0, 192)),
    ("void--car-mount", (32, 32, 32)), ("void--ego-vehicle", (120, 10, 10)),
)
MAPILLARY_UNLABELED = len(MAPILLARY_CLASSES)  # 65


def _mapillary() -> LabelSet:
    n = len(MAPILLARY_CLASSES)
    to_train = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    to_train[:n] = np.arange(n)
    to_label = np.full(256, MAPILLARY_UNLABELED, dtype=np.uint8)
    to_label[:n] = np.arange(n)
    return LabelSet("mapillary", tuple(name for name, _ in MAPILLARY_CLASSES), tuple(c for _, c in MAPILLARY_CLASSES),
                    _frozen(to_train), _frozen(to_label), frozenset(range(n + 1)),
                    "the Mapillary Vistas v1.2 table (0..65)",
                    {**{name: i for i, (name, _) in enumerate(MAPILLARY_CLASSES)}, "unlabeled": MAPILLARY_UNLABELED})


MAPILLARY = _mapillary()
LABEL_SETS: dict[str, LabelSet] = {"cityscapes": CITYSCAPES, "mapillary": MAPILLARY}


def label_set(name: str) -> LabelSet:
    """A label set by name, with a clear error for an unknown one."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}") from None


def label_set_of(class_names) -> LabelSet:
    """The label set whose class names these are (e.g. a class-count table's columns)."""
    names = tuple(class_names)
    for labels in LABEL_SETS.values():
        if labels.class_names == names:
            return labels
    raise ValueError(f"classes {list(names)[:3]}... are not those of any label set ({sorted(LABEL_SETS)})")


def label_set_for(num_classes: int) -> LabelSet:
    """The label set of a model with ``num_classes`` outputs (19: Cityscapes, 65: Mapillary)."""
    for labels in LABEL_SETS.values():
        if labels.num_classes == num_classes:
            return labels
    raise ValueError(f"no label set has {num_classes} classes; known: "
                     + ", ".join(f"{n} ({s.num_classes})" for n, s in LABEL_SETS.items()))
