import numpy as np
import pytest
import torch

from hmsa.evaluation.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def test_confusion_matrix_against_a_loop():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 9, 7))
    target[0, 0, :] = 255
    pred = rng.integers(0, 4, size=(3, 9, 7))
    expected = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            expected[t, p] += 1
    got = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 4).numpy()
    assert np.array_equal(got, expected)


def test_iou_and_nanmean_over_present_classes():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(3 / 4) and iou[1] == pytest.approx(2 / 3) and np.isnan(iou[2])
    assert mean_iou(cm) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert pixel_accuracy(cm) == pytest.approx(5 / 6)
