from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from hmsa.pipeline_registry import STAGES, default_chain, run_name

from .conftest import PROJECT_ROOT


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
