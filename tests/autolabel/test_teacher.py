"""The teacher: loaded from the catalog's bundle, refused for another label set, and its prediction."""

import numpy as np
import pytest
import torch

from hmsa.autolabel.config import AutoLabelConfig
from hmsa.autolabel.labelling import model_digest
from hmsa.autolabel.teacher import load_teacher, predict
from hmsa.data.labels import label_set


def test_the_catalog_teacher_is_the_bundles_model(bundle, teacher, cityscapes_labels):
    loaded = load_teacher(AutoLabelConfig(), bundle, cityscapes_labels)
    assert model_digest(loaded) == model_digest(teacher) and not loaded.training


def test_a_teacher_of_another_class_count_is_refused(bundle):
    """A 19-class (Cityscapes) teacher cannot label Mapillary images: its trainIds mean other classes."""
    with pytest.raises(ValueError, match=r"auto_labeling\.teacher \(catalog\): the teacher predicts 19 classes, "
                                         r"the data set's mapillary label set has 65"):
        load_teacher(AutoLabelConfig(), bundle, label_set("mapillary"))


def test_predict_gives_the_argmax_and_its_softmax_probability(teacher):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 48)
    pred, conf = predict(teacher, images, (1.0,), False)
    assert pred.dtype == np.uint8 and pred.shape == conf.shape == (2, 32, 48)
    with torch.no_grad():
        probs = torch.softmax(teacher.predict(images, scales=(1.0,), flip=False)["logits"].float(), dim=1)
    assert np.array_equal(pred, probs.argmax(dim=1).numpy())
    assert np.allclose(conf, probs.max(dim=1).values.numpy()) and (conf > 1 / 19).all()
