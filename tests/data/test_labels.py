import numpy as np
import pytest

from hmsa.data import labels

# a few rows of the official table, written out independently of the module
KNOWN = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 11: 2, 17: 5, 20: 7, 21: 8, 23: 10, 24: 11, 26: 13, 28: 15, 33: 18, 9: 255}


def test_nineteen_training_classes_in_order():
    assert labels.CITYSCAPES.num_classes == 19
    assert labels.CITYSCAPES.class_names[0] == "road" and labels.CITYSCAPES.class_names[18] == "bicycle"
    assert len(labels.CITYSCAPES.class_colors) == 19


def test_every_label_has_its_stored_id_by_name_void_ones_too():
    assert labels.CITYSCAPES.label_id("road") == 7 and labels.CITYSCAPES.label_id("ego vehicle") == 1
    assert labels.CITYSCAPES.label_id("license plate") == 255  # -1 in the official table, as 8-bit PNGs store it
    assert labels.MAPILLARY.label_id("unlabeled") == 65
    with pytest.raises(ValueError, match="'lamp post' is not a label of the cityscapes label set"):
        labels.CITYSCAPES.label_id("lamp post")


def test_label_ids_map_to_train_ids():
    ids = np.array(list(KNOWN), dtype=np.uint8)
    assert labels.CITYSCAPES.train_ids(ids).tolist() == list(KNOWN.values())


def test_unknown_and_license_plate_ids_are_ignored():
    assert labels.CITYSCAPES.train_ids(np.array([34, 100, 254, 255], dtype=np.uint8)).tolist() == [255] * 4


def test_round_trip_train_ids_to_label_ids():
    train_ids = np.arange(19, dtype=np.uint8)
    back = labels.CITYSCAPES.train_ids(labels.CITYSCAPES.label_ids(train_ids))
    assert back.tolist() == train_ids.tolist()
    assert labels.CITYSCAPES.label_ids(np.array([255], dtype=np.uint8)).tolist() == [0]


def test_unknown_label_ids_lists_only_ids_outside_the_table():
    arr = np.array([[7, 8, 34], [40, 255, 0]], dtype=np.uint8)
    assert labels.CITYSCAPES.unknown_ids(arr) == [34, 40]


def test_lookup_tables_are_read_only():
    assert not labels.CITYSCAPES.to_train.flags.writeable and not labels.CITYSCAPES.to_label.flags.writeable
    assert not labels.CITYSCAPES.palette.flags.writeable


def test_palette_is_built_once_and_colours_each_train_id():
    palette = labels.CITYSCAPES.palette
    assert palette is labels.CITYSCAPES.palette
    assert [tuple(c) for c in palette[:19]] == list(labels.CITYSCAPES.class_colors)
    assert not palette[19:].any()
