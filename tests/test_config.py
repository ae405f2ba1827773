import pytest

from hmsa.config import ParameterError, parse_params
from hmsa.data.config import DataConfig


def test_defaults_validate():
    cfg = parse_params(DataConfig, {}, "data")
    assert cfg.source == "synthetic" and cfg.on_bad_file == "fail"


def test_typo_is_named_with_its_full_key():
    with pytest.raises(ParameterError, match=r"data\.on_bad_fiel: unknown parameter"):
        parse_params(DataConfig, {"on_bad_fiel": "skip"}, "data")


def test_nested_typo_is_named():
    with pytest.raises(ParameterError, match=r"data\.synthetic\.heigth: unknown parameter"):
        parse_params(DataConfig, {"synthetic": {"heigth": 64}}, "data")


def test_wrong_type_and_value_are_named():
    with pytest.raises(ParameterError) as err:
        parse_params(DataConfig, {"workers": "many", "on_bad_file": "ignore"}, "data", "conf/x.yml")
    text = str(err.value)
    assert "data.workers" in text and "data.on_bad_file" in text and "conf/x.yml" in text


def test_cityscapes_source_needs_a_root():
    with pytest.raises(ParameterError, match="cityscapes_root must be set"):
        parse_params(DataConfig, {"source": "cityscapes"}, "data")


def test_unknown_label_kind_in_splits():
    with pytest.raises(ParameterError, match="label kinds"):
        parse_params(DataConfig, {"splits": {"train": ["medium"]}}, "data")


def test_non_mapping_block_is_refused():
    with pytest.raises(ParameterError, match="must be a mapping"):
        parse_params(DataConfig, [1, 2], "data")
