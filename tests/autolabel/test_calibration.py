"""Per-class thresholds calibrated on fine labels, and the fixed rule's table."""

import numpy as np
import pytest
import torch

from hmsa.autolabel import calibration
from hmsa.autolabel.config import AutoLabelConfig
from hmsa.autolabel.refinement import NEVER, confidence_to_u8
from hmsa.autolabel.teacher import predict

FAST = {"readers": 0, "progress_bar": False, "scales": [0.5, 1.0], "device": "cpu", "precision": "fp32",
        "channels_last": "off"}


def test_confidence_counts_match_the_teachers_own_predictions(teacher):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 48)
    pred, conf = predict(teacher, images, (0.5, 1.0), False)
    labels = torch.from_numpy(pred.astype(np.int64))
    labels[0, :4] = 255  # ignored rows are not counted
    wrong = labels.clone()
    wrong[1] = (wrong[1] + 1) % 19
    total, correct = calibration.confidence_counts(teacher, [(images, labels), (images, wrong)], 19, (0.5, 1.0), False)
    assert total.shape == correct.shape == (19, 256)
    valid = int((labels != 255).sum())
    assert total.sum() == 2 * valid and correct.sum() == valid + int((labels[0] != 255).sum())  # image 1 wrong once
    level = confidence_to_u8(conf)
    assert total[int(pred[1, 0, 0]), int(level[1, 0, 0])] >= 2  # image 1 counted in both batches


def test_the_fixed_rule_loads_no_teacher(manifest, tiny_tree_master, cityscapes_labels):
    """An empty bundle would fail to load: the fixed rule never asks for the teacher."""
    table = calibration.thresholds(AutoLabelConfig(threshold=0.8, **FAST), {}, manifest, tiny_tree_master,
                                   cityscapes_labels)
    assert table["class_name"].tolist() == list(cityscapes_labels.class_names)
    assert (table["threshold"] == 0.8).all() and (table["calibration_pixels"] == 0).all()


def test_per_class_thresholds_are_calibrated_on_the_fine_val_images(manifest, tiny_tree_master, bundle,
                                                                    cityscapes_labels):
    state = dict(bundle["state_dict"])
    state["seg_head.classifier.2.bias"] = state["seg_head.classifier.2.bias"].clone()
    state["seg_head.classifier.2.bias"][0] += 20  # a teacher that says road everywhere, sure of it
    cfg = AutoLabelConfig(threshold_rule="per_class", target_accuracy=0.01, **FAST)
    table = calibration.thresholds(cfg, {**bundle, "state_dict": state}, manifest, tiny_tree_master,
                                   cityscapes_labels).set_index("class_name")
    assert table.index.tolist() == list(cityscapes_labels.class_names)
    # right on the road pixels of the two 32 x 64 val images, wrong elsewhere: 1% right is reached at once
    road = table.loc["road"]
    assert road["threshold"] == 0.0 and 0 < road["calibration_pixels"] <= 2 * 32 * 64
    assert 0.01 <= road["calibration_accuracy"] < 1
    assert (table.drop(index="road")["threshold"] == NEVER).all()  # never predicted
    strict = calibration.thresholds(cfg.model_copy(update={"target_accuracy": 1.0}), {**bundle, "state_dict": state},
                                    manifest, tiny_tree_master, cityscapes_labels)
    assert (strict["threshold"] == NEVER).all()


def test_a_calibration_split_without_fine_labels_is_refused_by_name(manifest, tiny_tree_master, bundle,
                                                                    cityscapes_labels):
    cfg = AutoLabelConfig(threshold_rule="per_class", calibration_split="train_extra", **FAST)
    with pytest.raises(ValueError, match="auto_labeling.calibration_split 'train_extra' has no images with fine"):
        calibration.thresholds(cfg, bundle, manifest, tiny_tree_master, cityscapes_labels)
