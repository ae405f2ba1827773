"""Thresholds, the human coarse labels' union and merge, the border, and the threshold tables."""

import numpy as np
import pandas as pd
import pytest

from hmsa.autolabel.refinement import (NEVER, Refinement, box_mask, class_thresholds, fixed_threshold_table,
                                       hard_labels, refine, teacher_labels, threshold_table)

from .conftest import BUS, CAR, ROAD, TRAIN, TRUCK


def test_threshold_keeps_pixels_at_and_above_it():
    pred = np.array([[1, 2, 3, 4]], dtype=np.uint8)
    conf = np.array([[0.8999, 0.9, 0.9001, 1.0]])
    assert hard_labels(pred, conf, 0.9).tolist() == [[255, 2, 3, 4]]
    assert hard_labels(pred, conf, 0.0).tolist() == [[1, 2, 3, 4]]
    assert hard_labels(pred, conf, 1.0).tolist() == [[255, 255, 255, 4]]


def test_threshold_outside_zero_one_is_refused():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
            Refinement(threshold=bad)


def test_a_negative_border_is_refused():
    with pytest.raises(ValueError, match=r"auto_labeling\.border must be >= 0, got -1"):
        Refinement(border=-1)


def test_ignore_propagates_without_merge():
    labels = np.array([[255, ROAD, 255]], dtype=np.uint8)
    human = np.array([[CAR, 255, 255]], dtype=np.uint8)
    out = refine(labels, human, Refinement(union_classes=()))
    assert out.tolist() == [[255, ROAD, 255]]  # teacher abstains: stays ignore; human void changes nothing


def test_merge_fills_only_where_the_teacher_abstains():
    labels = np.array([[255, ROAD, 255]], dtype=np.uint8)
    human = np.array([[CAR, CAR, 255]], dtype=np.uint8)
    out = refine(labels, human, Refinement(merge_human_coarse=True, union_classes=()))
    assert out.tolist() == [[CAR, ROAD, 255]]


def test_union_classes_take_the_human_region():
    labels = np.array([[ROAD, 255, BUS, CAR]], dtype=np.uint8)
    human = np.array([[BUS, TRUCK, 255, CAR]], dtype=np.uint8)
    out = refine(labels, human, Refinement(union_classes=(TRUCK, BUS, TRAIN)))
    assert out.tolist() == [[BUS, TRUCK, BUS, CAR]]


def test_without_union_or_merge_the_human_labels_change_nothing():
    """TrainIds belong to a label set, so no class is united by default."""
    labels = np.array([[ROAD, 255]], dtype=np.uint8)
    human = np.array([[BUS, TRUCK]], dtype=np.uint8)
    assert not Refinement().uses_human
    assert refine(labels, human, Refinement()).tolist() == [[ROAD, 255]]
    assert Refinement(union_classes=(BUS,)).uses_human and Refinement(merge_human_coarse=True).uses_human


def test_the_union_goes_before_or_after_the_threshold():
    # pixel:       teacher sure   | teacher unsure    | teacher sure, not a bus | unsure, no human bus
    prediction = np.array([[BUS, CAR, CAR, ROAD]], dtype=np.uint8)
    confidence = np.array([[0.95, 0.5, 0.95, 0.5]])
    human = np.array([[BUS, BUS, BUS, 255]], dtype=np.uint8)
    after = Refinement(threshold=0.9, union_classes=(BUS,))
    before = Refinement(threshold=0.9, union_classes=(BUS,), union_first=True)
    # threshold first: the human bus region keeps its label even where the teacher is unsure
    assert teacher_labels(prediction, confidence, human, after).tolist() == [[BUS, BUS, BUS, 255]]
    # union first (the authors' order): the unsure union pixel is thresholded away like any other
    assert teacher_labels(prediction, confidence, human, before).tolist() == [[BUS, 255, BUS, 255]]


def test_union_first_adds_only_classes_the_teacher_predicts_in_the_image():
    prediction = np.array([[CAR, CAR, ROAD]], dtype=np.uint8)
    confidence = np.ones((1, 3))
    human = np.array([[TRUCK, TRUCK, 255]], dtype=np.uint8)  # the teacher predicts no truck anywhere
    before = Refinement(threshold=0.9, union_classes=(TRUCK,), union_first=True)
    assert teacher_labels(prediction, confidence, human, before).tolist() == [[CAR, CAR, ROAD]]
    prediction[0, 2] = TRUCK  # now it does, elsewhere: the human truck region joins it
    assert teacher_labels(prediction, confidence, human, before).tolist() == [[TRUCK, TRUCK, TRUCK]]
    # a per-class threshold reads the class after the union (truck is never labelled here)
    never_truck = Refinement(union_classes=(TRUCK,), union_first=True,
                             class_thresholds=tuple(NEVER if c == TRUCK else 0.5 for c in range(19)))
    assert teacher_labels(prediction, confidence, human, never_truck).tolist() == [[255, 255, 255]]


def test_the_keep_box_is_the_authors_ego_mask_at_any_resolution():
    import yaml

    from tests.conftest import PROJECT_ROOT

    conf = yaml.safe_load((PROJECT_ROOT / "conf/cityscapes/parameters_auto_labeling.yml").read_text())["auto_labeling"]
    box = tuple(conf["keep_box"])
    full = box_mask((1024, 2048), box)  # the authors' drop mask: rows 15:840, columns 14:2030 kept
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (15, 840, 14, 2030)
    assert full.sum() == (840 - 15) * (2030 - 14)
    quarter = box_mask((256, 512), box)  # the same part of the image, edges rounded to the nearest pixel
    rows, cols = np.flatnonzero(quarter.any(axis=1)), np.flatnonzero(quarter.any(axis=0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (4, 210, 4, 508)
    out = refine(np.zeros((256, 512), dtype=np.uint8), None, Refinement(keep_box=box))
    assert (out[~quarter] == 255).all() and (out[quarter] == 0).all()
    assert out[-1].tolist() == [255] * 512  # the bonnet at the bottom: ignored


@pytest.mark.parametrize("box", [(0.5, 0.4, 0.0, 1.0), (0.0, 1.2, 0.0, 1.0), (-0.1, 1.0, 0.0, 1.0)])
def test_a_keep_box_that_is_not_inside_the_image_is_refused(box):
    with pytest.raises(ValueError, match=r"auto_labeling\.keep_box must be \[top, bottom, left, right\]"):
        Refinement(keep_box=box)


def test_border_becomes_ignore():
    out = refine(np.zeros((5, 6), dtype=np.uint8), None, Refinement(border=1))
    assert (out[0] == 255).all() and (out[:, -1] == 255).all() and (out[1:4, 1:5] == 0).all()


def test_per_class_thresholds_are_each_class_lowest_level_at_the_target_accuracy(cityscapes_labels):
    n = cityscapes_labels.num_classes
    total, correct = np.zeros((n, 256), np.int64), np.zeros((n, 256), np.int64)
    total[0, 100], correct[0, 100] = 50, 50  # road: always right, even unsure -> labelled from level 0
    total[1, [100, 200, 250]] = 100  # sidewalk: right only when confident
    correct[1, [100, 200, 250]] = [0, 97, 100]
    total[2, 255], correct[2, 255] = 100, 50  # building: confidently wrong half the time -> never labelled
    t = class_thresholds(total, correct, target=0.98)
    assert t[0] == 0.0
    assert t[1] == pytest.approx(100.5 / 255)  # just above level 100: levels 200 and 250 keep 197/200 right
    assert t[2] == NEVER and t[3] == NEVER  # never right enough; never predicted
    pred = np.array([[0, 1, 1, 2]], dtype=np.uint8)
    conf = np.array([[0.1, 100 / 255, 101 / 255, 1.0]])
    assert hard_labels(pred, conf, t).tolist() == [[0, 255, 1, 255]]

    table = threshold_table(cityscapes_labels.class_names, t, total, correct).set_index("class_name")
    assert list(table.index) == list(cityscapes_labels.class_names)
    # sidewalk keeps levels 101..255: 200 pixels, 197 right; building keeps nothing (NEVER)
    assert table.loc["sidewalk", "calibration_pixels"] == 200
    assert table.loc["sidewalk", "calibration_accuracy"] == pytest.approx(197 / 200)
    assert table.loc["sidewalk", "threshold"] == round(100.5 / 255, 6)
    assert table.loc["road", "calibration_pixels"] == 50 and table.loc["road", "calibration_accuracy"] == 1.0
    assert table.loc["building", "calibration_pixels"] == 0 and np.isnan(table.loc["building", "calibration_accuracy"])


def test_the_fixed_rule_gives_every_class_the_one_threshold():
    table = fixed_threshold_table(["road", "sky"], 0.85)
    expected = pd.DataFrame({"class_name": ["road", "sky"], "threshold": [0.85, 0.85], "calibration_pixels": [0, 0],
                             "calibration_accuracy": [np.nan, np.nan]})
    pd.testing.assert_frame_equal(table, expected)
