"""MLflow as a team uses it: one tracking URI for every command, read from mlflow.yml or
$MLFLOW_TRACKING_URI. (The whole chain against a real `mlflow server`:
tests/pipelines/test_training_pipelines.py.)"""

import mlflow
import pytest
import requests

from tests.helpers import free_port, run, server, tiny_project


@pytest.mark.slow
def test_an_unreachable_tracking_server_stops_the_run_before_it_starts(tmp_path):
    project = tiny_project(tmp_path / "project")
    uri = f"http://127.0.0.1:{free_port()}"
    failed = run(["kedro", "run", "--pipelines", "data_ingestion"], project, check=False,
                 env={"MLFLOW_TRACKING_URI": uri})
    assert failed.returncode != 0
    said = failed.stdout + failed.stderr
    assert f"The MLflow tracking server {uri} does not answer" in said and "MLFLOW_TRACKING_URI" in said
    assert not any(p.is_file() for p in (project / "data").rglob("*"))  # nothing ran, nothing written
    assert not (project / "mlflow.db").exists()


@pytest.mark.slow
def test_kedro_mlflow_ui_shows_the_store_of_mlflow_yml_or_mlflow_tracking_uri(tmp_path):
    """`make mlflow-ui` is kedro-mlflow's `kedro mlflow ui`: it reads the URI as `kedro run` does."""
    project = tiny_project(tmp_path / "project")
    mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").create_experiment("in-the-project-store")
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'team.db'}").create_experiment("in-the-team-store")
    for env, shown, hidden in (({}, "in-the-project-store", "in-the-team-store"),
                               ({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'team.db'}"}, "in-the-team-store",
                                "in-the-project-store")):
        port = free_port()
        cmd = ["kedro", "mlflow", "ui", "--port", str(port), "--host", "127.0.0.1"]
        url = f"http://127.0.0.1:{port}"
        with server(cmd, url, project, tmp_path / f"ui-{port}.log", env=env):
            names = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 100},
                                 timeout=30).text
        assert shown in names and hidden not in names
