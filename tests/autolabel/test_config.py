"""The auto_labeling block: class names mapped by the data set's own label set."""

import pytest

from hmsa.autolabel.config import AutoLabelConfig
from hmsa.project.config import ParameterError, parse_params
from hmsa.data.labels import label_set

from .conftest import BUS, TRAIN, TRUCK


def test_per_class_rule_needs_its_thresholds(cityscapes_labels):
    cfg = AutoLabelConfig(threshold_rule="per_class")
    with pytest.raises(ValueError, match="per_class needs the thresholds calibrated on 'val'"):
        cfg.refinement(cityscapes_labels)
    thresholds = [0.5] * cityscapes_labels.num_classes
    assert cfg.refinement(cityscapes_labels, thresholds).thresholds().tolist() == thresholds
    assert AutoLabelConfig().refinement(cityscapes_labels).thresholds() == 0.9


def test_thresholds_of_another_class_count_are_refused(cityscapes_labels):
    cfg = AutoLabelConfig(threshold_rule="per_class")
    with pytest.raises(ValueError, match="auto_label_thresholds: 65 thresholds for the 19 classes of the cityscapes"):
        cfg.refinement(cityscapes_labels, [0.5] * 65)


def test_union_classes_are_the_trainids_of_the_data_sets_label_set(cityscapes_labels):
    assert AutoLabelConfig().refinement(cityscapes_labels).union_classes == (TRUCK, BUS, TRAIN)
    mapillary = label_set("mapillary")
    names = ["object--vehicle--truck", "object--vehicle--bus"]
    ids = AutoLabelConfig(union_classes=names).refinement(mapillary).union_classes
    assert ids == tuple(mapillary.class_names.index(n) for n in names) and ids != (TRUCK, BUS)


def test_a_union_class_the_data_set_lacks_is_refused_by_name():
    """Cityscapes' 'truck' is no Mapillary class: refused, not mapped through Cityscapes' table."""
    with pytest.raises(ValueError, match=r"auto_labeling\.union_classes: \['truck', 'bus', 'train'\] are not "
                                         r"classes of the mapillary label set"):
        AutoLabelConfig().refinement(label_set("mapillary"))


def test_a_union_class_of_no_label_set_is_refused_when_the_parameters_are_read():
    with pytest.raises(ParameterError, match=r"auto_labeling.*\['trucks'\] are not classes of any label set"):
        parse_params(AutoLabelConfig, {"union_classes": ["trucks", "bus"]}, "auto_labeling")


def test_a_label_set_gives_the_trainids_of_class_names(cityscapes_labels):
    assert cityscapes_labels.train_ids_of(["road", "bicycle"]) == (0, 18)
    assert cityscapes_labels.train_ids_of([]) == ()
    with pytest.raises(ValueError, match=r"my.setting: \['lorry'\] are not classes of the cityscapes label set"):
        cityscapes_labels.train_ids_of(["car", "lorry"], "my.setting")
