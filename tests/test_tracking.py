"""The MLflow store checked before a run, credentials kept out of messages, resumed runs linked."""

import mlflow
import pytest

from hmsa.mlops.tracking import EpochLogger, StoreError, check_store, without_credentials


def test_a_store_that_is_not_a_database_is_named_with_what_to_do(tmp_path):
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(StoreError) as err:
        check_store("sqlite:///mlflow.db", tmp_path)
    text = str(err.value)
    assert str(tmp_path / "mlflow.db") in text and "mv mlflow.db mlflow.db.broken" in text


def test_a_folder_store_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "mlruns").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        check_store("mlruns", tmp_path)


def test_usable_stores_pass(tmp_path):
    check_store("sqlite:///mlflow.db", tmp_path)  # not there yet: MLflow creates it
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'real.db'}").search_experiments()
    check_store(f"sqlite:///{tmp_path / 'real.db'}", tmp_path)
    check_store("databricks", tmp_path)  # other stores: MLflow's own checks


def test_a_tracking_server_that_answers_passes(tmp_path):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_store(f"http://127.0.0.1:{server.server_address[1]}", tmp_path)  # any answer: it runs
    finally:
        server.shutdown()
        server.server_close()


def test_the_store_check_closes_its_connection(tmp_path, monkeypatch):
    import sqlite3

    import hmsa.mlops.tracking

    opened, connect = [], sqlite3.connect

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.db, self.closed = connect(*args, **kwargs), False
            opened.append(self)

        def execute(self, *args):
            return self.db.execute(*args)

        def close(self):
            self.closed = True
            self.db.close()

    sqlite3.connect(tmp_path / "real.db").close()
    monkeypatch.setattr(hmsa.mlops.tracking.sqlite3, "connect", Recorded)
    check_store("sqlite:///real.db", tmp_path)
    assert len(opened) == 1 and opened[0].closed


def test_credentials_never_appear_in_messages(tmp_path):
    assert without_credentials("https://alice:s3cret@host:5000/x") == "https://***@host:5000/x"
    assert without_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_a_resumed_run_is_linked_to_the_killed_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("e")
    killed = client.create_run(experiment).info.run_id  # left RUNNING, as a kill -9 leaves it
    finished = client.create_run(experiment).info.run_id
    client.set_terminated(finished, "FINISHED")
    resumed = client.create_run(experiment).info.run_id
    EpochLogger(resumed, uri).resumed(killed, "teacher")
    EpochLogger(resumed, uri).resumed(finished, "student")
    EpochLogger(resumed, uri).resumed(resumed, "other")  # the same run: nothing to link
    tags = client.get_run(resumed).data.tags
    assert tags["hmsa.teacher.resumed_from_run"] == killed and tags["hmsa.student.resumed_from_run"] == finished
    assert "hmsa.other.resumed_from_run" not in tags
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["hmsa.teacher.resumed_by_run"] == resumed
    assert client.get_run(finished).info.status == "FINISHED"  # a finished run stays finished


def test_runs_left_running_by_a_dead_process_are_marked_killed(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from hmsa.mlops.tracking import TAG_HOST, TAG_PID, claim_run

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("hmsa")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that no longer exists

    def running(host, pid):
        run = client.create_run(experiment)
        client.set_tag(run.info.run_id, TAG_HOST, host)
        client.set_tag(run.info.run_id, TAG_PID, str(pid))
        return run.info.run_id

    killed = running(socket.gethostname(), gone.pid)  # e.g. an evaluation stopped by kill -9
    alive = running(socket.gethostname(), os.getppid())  # a run still going in another process
    elsewhere = running("another-host", gone.pid)  # not ours to judge
    finished = running(socket.gethostname(), gone.pid)
    client.set_terminated(finished, "FINISHED")
    current = client.create_run(experiment).info.run_id

    assert claim_run(current, client) == [killed]
    status = {run_id: client.get_run(run_id).info.status for run_id in (killed, alive, elsewhere, finished, current)}
    assert status == {killed: "KILLED", alive: "RUNNING", elsewhere: "RUNNING", finished: "FINISHED", current: "RUNNING"}
    tags = client.get_run(current).data.tags
    assert tags[TAG_HOST] == socket.gethostname() and tags[TAG_PID] == str(os.getpid())


def test_a_logged_model_loads_quietly_and_predicts_as_the_network(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import numpy as np
    import torch

    from hmsa.models import ModelConfig, build_model
    from hmsa.mlops.serving import predict_labels
    from hmsa.mlops.tracking import log_and_register
    from tests.models.conftest import TINY

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # this test's own store, here and in the child process (in-process Kedro runs of earlier
    # tests may have set other tracking and registry URIs, in mlflow and in the environment)
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(variable, store)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        torch.manual_seed(0)
        model = build_model(ModelConfig(kind="hmsa", **TINY)).eval()
        bundle = {"model_config": model.cfg.model_dump(), "state_dict": model.state_dict()}
        experiment = mlflow.MlflowClient().create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_and_register(bundle, "hmsa-test", pip_requirements=[])
        uri = f"models:/hmsa-test@{info['alias']}"
        # a fresh process, as `hmsa predict` or `mlflow models serve` loads it (MLflow warns once per process)
        loading = subprocess.run(
            [sys.executable, "-W", "always", "-c", f"import mlflow; mlflow.pyfunc.load_model({uri!r})"],
            capture_output=True, text=True, timeout=300, env=os.environ)
        assert loading.returncode == 0, loading.stderr
        assert "type hint" not in loading.stderr.lower(), loading.stderr
        loaded = mlflow.pyfunc.load_model(uri)
        images = np.random.default_rng(0).integers(0, 255, (2, 40, 72, 3), dtype=np.uint8)
        labels = loaded.predict(images, params={"scales": [0.5, 1.0], "flip": True})
        assert labels.dtype == np.uint8 and labels.shape == (2, 40, 72)
        np.testing.assert_array_equal(labels, predict_labels(model, images, (0.5, 1.0), True))
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_every_command_reads_the_tracking_uri_as_kedro_run_does(tmp_path, monkeypatch):
    """mlflow.yml's server.mlflow_tracking_uri (default: $MLFLOW_TRACKING_URI, else the embedded
    sqlite store, made absolute against the project), conf/<env> over conf/base."""
    import shutil

    from hmsa.mlops.tracking import champion_uri, tracking_uri
    from tests.conftest import PROJECT_ROOT

    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy2(PROJECT_ROOT / "pyproject.toml", project)
    (project / "notebooks").mkdir()
    (project / "conf" / "local").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(project) == f"sqlite:///{project / 'mlflow.db'}"
    assert tracking_uri(project / "notebooks") == f"sqlite:///{project / 'mlflow.db'}"  # from any folder of it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(project) == "http://127.0.0.1:5000"
    (project / "conf" / "team").mkdir()
    (project / "conf" / "team" / "mlflow.yml").write_text("server:\n  mlflow_tracking_uri: https://mlflow.example.org\n")
    assert tracking_uri(project, env="team") == "https://mlflow.example.org"
    # each environment's champion is its own student's
    assert champion_uri(project) == "models:/hmsa-student@champion"
    assert champion_uri(project, env="claims") == "models:/hmsa-student-claims@champion"


def test_an_unreachable_tracking_server_is_named_without_its_credentials(tmp_path):
    with pytest.raises(StoreError, match=r"tracking server http://\*\*\*@127.0.0.1:9 does not answer.*MLFLOW_TRACKING_URI"
                       ) as err:
        check_store("http://alice:s3cret@127.0.0.1:9", tmp_path)
    assert "s3cret" not in str(err.value)


def test_an_experiment_dvc_runs_in_a_copy_logs_to_the_store_of_the_repository_it_came_from(tmp_path):
    """Queued and --temp `dvc exp run`s run in a copy that DVC deletes afterwards: a relative
    embedded store there would take the runs with it."""
    from hmsa.mlops.tracking import parent_store

    repo, copy = tmp_path / "repo", tmp_path / "copy"
    repo.mkdir()
    copy.mkdir()
    moved = parent_store("sqlite:///mlflow.db", copy, repo, "hmsa")
    assert moved == f"sqlite:///{repo / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(moved).get_experiment_by_name("hmsa")
    assert experiment.artifact_location == (repo / "mlruns").as_uri()  # artifacts stay with the repository too
    assert parent_store("sqlite:///mlflow.db", repo, repo, "hmsa") is None  # not a copy
    assert parent_store(f"sqlite:///{tmp_path / 'abs.db'}", copy, repo, "hmsa") is None  # an absolute store stays
    assert parent_store("http://127.0.0.1:5000", copy, repo, "hmsa") is None  # a server is shared anyway


def test_the_served_model_refuses_bad_requests_with_a_400_that_says_what_to_change(tmp_path, monkeypatch):
    """Through MLflow's scoring-server handler (what `mlflow models serve` runs per request):
    floats in [0, 1] (once cast to a black uint8 image and answered 200), scales and images
    over the logged limits, and an unknown fusion are 400s naming the problem, without a
    stack trace; a good request is answered."""
    import json

    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    from tests.helpers import tiny_logged_model

    info = tiny_logged_model(tmp_path, monkeypatch, limits={"max_image_pixels": 40 * 72, "max_scale": 2.0})
    served = mlflow.pyfunc.load_model(info["model_uri"])
    image = np.random.default_rng(0).integers(0, 255, (1, 40, 72, 3), dtype=np.uint8)

    def ask(inputs, **params):
        body = json.dumps({"inputs": inputs, "params": params})
        try:
            reply = invocations(body, "application/json", served, served.metadata.get_input_schema())
        except MlflowException as err:
            return err.get_http_status_code(), err.message, err.serialize_as_json()
        return reply.status, reply.response, reply.response

    status, text, _ = ask(image.tolist(), scales=[0.5, 1.0])
    assert status == 200 and np.asarray(json.loads(text)["predictions"]).shape == (1, 40, 72)
    refusals = {
        "pixel values must be integers 0..255 (uint8 RGB), got floating-point values in [0, 0.996078] (an image "
        "scaled to [0, 1]: multiply by 255 and round)": ask((image / 255.0).tolist()),
        "scales: 60 is over serving.max_scale (2)": ask(image.tolist(), scales=[1.0, 60.0]),
        "41 x 72 = 2,952 pixels are over this model's serving.max_image_pixels (2,880)":
            ask(np.zeros((1, 41, 72, 3), int).tolist()),
        "pixel values must be 0..255 (uint8 RGB), got int64 values in [0, 300]": ask([[[[0, 300, 1]]]]),
        "fusion": ask(image.tolist(), scales=[0.5, 1.0], fusion="no-such-rule"),
    }
    for expected, (status, message, body) in refusals.items():
        assert status == 400 and expected in message, (expected, message)
        assert "Traceback" not in body and "stack_trace" not in body
