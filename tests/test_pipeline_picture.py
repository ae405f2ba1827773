"""The pipeline picture is drawn from the registered pipelines."""

from kedro.framework.project import configure_project

from hmsa.commands import pipeline_picture
from hmsa.pipeline_registry import STAGES, register_pipelines


def test_the_five_stages_and_what_flows_between_them(tmp_path):
    configure_project("hmsa")
    stages, nodes, flows = pipeline_picture.stage_graph(register_pipelines())
    assert stages == list(STAGES)
    assert "teacher.train" in nodes["teacher_training"] and "evaluate" in nodes["evaluation"]
    assert flows[("teacher_training", "auto_labeling")] == ["teacher.model"]
    assert "auto_label_manifest" in flows[("auto_labeling", "student_training")]
    assert ("evaluation", "student_training") not in flows  # only earlier stages feed later ones
    out = tmp_path / "pipeline.png"
    assert pipeline_picture.main([str(out)]) == 0 and out.stat().st_size > 10_000
