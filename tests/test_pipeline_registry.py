import json

import pytest
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from hmsa.pipeline_registry import STAGES, default_chain, run_name
from hmsa.pipelines._namespaces import MODELS

from .conftest import PROJECT_ROOT
from .helpers import copy_project, run


def test_default_chain_keeps_workflow_order_and_only_existing_stages():
    assert default_chain(["evaluation", "data_ingestion", "other"]) == ("data_ingestion", "evaluation")
    assert STAGES == ("data_ingestion", "teacher_training", "auto_labeling", "student_training", "evaluation")


def test_project_registers_its_pipelines():
    bootstrap_project(PROJECT_ROOT)
    assert "data_ingestion" in pipelines
    default = {n.name for n in pipelines["__default__"].nodes}
    assert {n.name for n in pipelines["data_ingestion"].nodes} <= default
    # every registered pipeline is a stage of the workflow: no placeholders
    assert set(pipelines) - {"__default__"} <= set(STAGES)


def test_run_names_follow_the_workflow_order():
    available = ["data_ingestion", "teacher_training", "student_training"]
    assert run_name(["student_training", "data_ingestion"], available) == "data_ingestion+student_training"
    assert run_name(["__default__"], available) == "data_ingestion+teacher_training+student_training"


def test_an_unknown_pipeline_name_is_refused_with_the_names_there_are():
    """`kedro run --pipelines nosuch`: Kedro would fail importing hmsa.pipelines.nosuch."""
    import pytest

    from hmsa.pipeline_registry import UnknownPipelineError

    bootstrap_project(PROJECT_ROOT)
    pipelines.set_requested(["nosuch", "teacher_training"])
    try:
        with pytest.raises(UnknownPipelineError) as raised:
            pipelines["teacher_training"]
        assert str(raised.value) == (
            "--pipelines nosuch: no such pipeline. The pipelines are: auto_labeling, data_ingestion, evaluation, "
            "student_training, teacher_training; __default__ (no --pipelines) runs them all: data_ingestion -> "
            "teacher_training -> auto_labeling -> student_training -> evaluation.")
        pipelines.set_requested(["teacher_training"])
        assert "teacher_training" in pipelines
    finally:
        pipelines.set_requested(None)


@pytest.mark.slow
def test_kedro_viz_builds_the_site_with_each_trained_model_as_a_namespace_group(tmp_path):
    """`kedro viz build` (make viz) on a copy of the project: the teacher, the student and each
    baseline are groups of their own, holding their nodes and datasets."""
    project = copy_project(tmp_path / "project")
    run(["kedro", "viz", "build"], project)
    main = json.loads((project / "build/api/main").read_text())
    groups = main["modular_pipelines"]
    assert sorted(set(groups) - {"__root__"}) == sorted(MODELS)
    names = {n["id"]: n["name"] for n in main["nodes"]}
    for namespace in MODELS:
        children = {names.get(c["id"], c["id"]) for c in groups[namespace]["children"]}
        assert any("train" in name.lower() for name in children), (namespace, children)
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {"__default__", "teacher_training", "student_training", "evaluation"} <= pipelines
