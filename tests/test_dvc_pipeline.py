"""dvc.yaml reproduces the Kedro stages, and the default remote round-trips the outputs."""

import json
import shutil

import mlflow
import pytest

from hmsa import provenance
from hmsa.hooks import TAG_GIT_COMMIT, TAG_RAW_DATA_HASH
from tests.conftest import PROJECT_ROOT
from tests.helpers import copy_project, run, tiny_parameters, tiny_training


@pytest.mark.slow
def test_dvc_repro_then_nothing_to_do_then_push_and_pull(tmp_path):
    project = copy_project(tmp_path / "repo")
    (project / ".dvc").mkdir()
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", project / ".dvc" / "config")
    tiny_parameters(project)
    tiny_training(project)
    run(["git", "init", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "project"], project)

    first = run(["dvc", "repro"], project)
    for stage in ("data_ingestion", "teacher_training", "auto_labeling", "student_training", "evaluation"):
        assert f"Running stage '{stage}'" in first.stdout
    lock = (project / "dvc.lock").read_text()
    assert provenance.dvc_hash(project / "data/01_raw/synthcity") in lock

    # every MLflow run can be traced to its code, data and parameters
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hmsa").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["auto_labeling", "data_ingestion", "evaluation", "student_training", "teacher_training"])
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    raw = provenance.dvc_hash(project / "data/01_raw/synthcity")
    for r in runs:
        assert r.data.tags[TAG_GIT_COMMIT].removesuffix("-dirty") == commit, r.info.run_name
        assert r.data.tags[TAG_RAW_DATA_HASH] == raw, r.info.run_name
        assert r.data.params, r.info.run_name
    assert client.get_run(next(r.info.run_id for r in runs if r.info.run_name == "teacher_training")
                          ).data.params["teacher.trainer.epochs"] == "2"

    second = run(["dvc", "repro"], project)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout
    assert "up to date" in run(["dvc", "status"], project).stdout

    metrics = json.dumps(json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout))
    for name in ("data_ingestion", "teacher_training", "student_training", "evaluation"):
        assert f"data/08_reporting/metrics/{name}.json" in metrics
    assert "hierarchical/0.5-1.0-2.0" in metrics

    # `dvc plots show` renders every declared plot, the evaluation's included
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    names = json.dumps(plots)
    for plot in ("evaluation_per_class.csv", "evaluation_attention.png", "teacher_training_curve.csv"):
        assert plot in names
    assert not plots.get("errors")

    # the metrics file is meant for git, the data for DVC
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    assert "data/08_reporting/metrics/data_ingestion.json" in status
    assert "synthcity" not in status and "teacher.pt" not in status and "mlflow.db" not in status
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "ingested"], project)

    # push to the default remote (a folder next to the repo's .dvc/), pull into a fresh clone
    run(["dvc", "push"], project)
    assert any((project / "dvc-storage").rglob("*"))
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "remote", "modify", "--local", "local", "url", str(project / "dvc-storage")], clone)
    run(["dvc", "pull"], clone)
    assert provenance.dvc_hash(clone / "data/01_raw/synthcity") == provenance.dvc_hash(project / "data/01_raw/synthcity")
    for out in ("data/03_primary/image_manifest.parquet", "data/06_models/student.pt",
                "data/08_reporting/evaluation_results.csv"):
        assert (clone / out).read_bytes() == (project / out).read_bytes()
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert "Running stage" not in run(["dvc", "repro"], clone).stdout  # restored, not retrained
