import pytest

from hmsa.project.config import ParameterError, check_parameters, parameter_blocks, parse_params
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


def _defaults() -> dict:
    from kedro.config import OmegaConfigLoader

    from hmsa.settings import CONFIG_LOADER_ARGS
    from tests.conftest import PROJECT_ROOT

    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)["parameters"]


def test_every_block_of_the_shipped_configuration_validates():
    params = _defaults()
    assert sorted(params) == sorted(parameter_blocks())
    check_parameters(params)


@pytest.mark.parametrize("change, message", [
    ({"studnet": {"trainer": {"seed": 1}}}, r"Unknown parameter block\(s\) \['studnet'\]"),
    ({"student": {"trainer": {"epohcs": 3}}}, r"(?s)parameters_student.*student\.trainer\.epohcs: unknown parameter"),
    ({"teacher": {"trainer": {"lr": "fast"}}}, r"teacher\.trainer\.lr: .*\(got 'fast'\)"),
    ({"evaluation": {"scale_sets": [[0.5, 2.0]]}}, r"1\.0 must be in the list.*in scale set \[0\.5, 2\.0\]"),
    ({"auto_labeling": {"scales": [0.0, 1.0]}}, r"every scale must be > 0"),
    ({"student": {"model": {"lo_scale": -0.5}}}, r"student\.model\.lo_scale: .*greater than 0"),
    ({"auto_labeling": {"threshold": 1.5}}, r"auto_labeling\.threshold"),
    ({"data": {"source": "cityscapes"}}, r"cityscapes_root must be set"),
])
def test_a_bad_parameter_anywhere_fails_before_the_run(change, message):
    params = _defaults()
    for key, block in change.items():
        params[key] = _merge(params.get(key, {}), block)
    with pytest.raises(ParameterError, match=message):
        check_parameters(params)


def _merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_a_bad_value_is_named_with_the_file_that_set_it(tmp_path):
    """conf/local overrides conf/base: the error names the file the bad value came from
    (or --params), not the base file that holds the default."""
    from hmsa.project.config import setting_source
    from tests.helpers import copy_project

    project = copy_project(tmp_path / "project")
    (project / "conf/local/parameters_mine.yml").write_text("student:\n  trainer:\n    epochs: -3\n")
    (project / "conf/claims/parameters_extra.yml").write_text("teacher:\n  trainer:\n    lr: fast\n")
    params = _defaults()
    params["student"] = _merge(params["student"], {"trainer": {"epochs": -3}})
    with pytest.raises(ParameterError, match=r"student\.trainer\.epochs: .*\(set in conf/local/parameters_mine\.yml\)"):
        check_parameters(params, setting_source(project))
    with pytest.raises(ParameterError, match=r"student\.trainer\.epochs: .*\(set in --params\)"):
        check_parameters(params, setting_source(project, runtime={"student": {"trainer": {"epochs": -3}}}))
    params["student"] = _merge(params["student"], {"trainer": {"epochs": 2, "crop": ["a", 64]}})
    with pytest.raises(ParameterError, match=r"student\.trainer\.crop\.0: .*\(set in --params\)"):
        check_parameters(params, setting_source(project, runtime={"student.trainer.crop": "[a,64]"}))
    params = _defaults()
    params["teacher"] = _merge(params["teacher"], {"trainer": {"lr": "fast"}})
    with pytest.raises(ParameterError, match=r"in conf/claims/parameters_extra\.yml:\n  teacher\.trainer\.lr: "):
        check_parameters(params, setting_source(project, "claims"))


def test_a_setting_that_moved_says_where_it_went():
    from hmsa.project.config import parse_block

    with pytest.raises(ParameterError, match=r"paths.auto_labels: moved: set the catalog's auto_labels_folder"):
        parse_block("paths", {"auto_labels": "data/04_feature/auto_labels"})
    with pytest.raises(ParameterError, match=r"data.synthetic_root: moved: set paths.synthcity"):
        parse_block("data", {"synthetic_root": "elsewhere"})
