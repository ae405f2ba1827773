"""The training and auto-labelling pipelines through `kedro run`, with MLflow's registry."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from hmsa.data.labels import CITYSCAPES
from tests.helpers import copy_project, free_port, mlflow_server, run, server, tiny_parameters, tiny_training


@pytest.mark.slow
def test_chain_against_a_tracking_server_trains_registers_and_serves_the_champion(tmp_path, monkeypatch):
    """The whole chain against a real `mlflow server` on loopback (registry, proxied artifacts),
    as a team shares one: MLFLOW_TRACKING_URI is the only setting. Runs, models, the champion
    alias, `hmsa predict`, `mlflow models serve` and the notebook all go through the server."""
    project = copy_project(tmp_path / "project")
    tiny_parameters(project)
    tiny_training(project, teacher={"devices": 2})  # the teacher under DDP: 2 CPU processes, gloo
    student = project / "conf/base/parameters_student_training.yml"
    params = yaml.safe_load(student.read_text())
    params["student"]["variants"] = ["single", "explicit", "human"]  # the paper's baselines, for the evaluation
    student.write_text(yaml.safe_dump(params, sort_keys=False))
    with mlflow_server(tmp_path / "mlflow") as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for this process and the notebook's kernel
        run(["kedro", "run"], project, env={"MLFLOW_TRACKING_URI": uri})  # the default chain
        # nothing stored locally: runs, models and artifacts are the server's
        assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
        _check_the_chain(project, uri)


def _check_the_chain(project, uri):
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hmsa")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # one kedro run, one MLflow run, DDP included
    only = runs[0]
    assert only.info.run_name == "data_ingestion+teacher_training+auto_labeling+student_training+evaluation"
    for role in ("teacher", "student"):
        history = client.get_metric_history(only.info.run_id, f"{role}/val/mIoU")
        assert [m.step for m in history] == [1, 2]  # once per epoch: rank 0 alone logs
        assert (project / f"data/06_models/{role}.pt").is_file()
        assert (project / f"data/08_reporting/{role}_training_curve.csv").is_file()
    assert sorted(p.name for p in (project / "data/06_models/checkpoints/teacher").iterdir()) == ["best.pt", "last.pt"]

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name in ("hmsa-teacher", "hmsa-student"):
        version = client.get_model_version_by_alias(name, "newest")
        assert version.run_id == only.info.run_id
    model = mlflow.pyfunc.load_model("models:/hmsa-student@newest")
    image = np.array(Image.open(sorted((project / "data/01_raw/synthcity/leftImg8bit/val").rglob("*.png"))[0]))
    labels = model.predict(image[None], params={"scales": [0.5, 1.0, 2.0], "flip": True})
    assert labels.shape == (1, *image.shape[:2]) and labels.dtype == np.uint8 and labels.max() < 19

    # evaluation: every model in the table and in MLflow, champions aliased
    results = pd.read_csv(project / "data/08_reporting/evaluation_results.csv")
    models = ["teacher", "student", "student_single", "student_explicit", "student_human"]
    assert list(results["model"].unique()) == models
    metrics = client.get_run(only.info.run_id).data.metrics
    assert "mIoU/student/hierarchical/0.5-1.0-2.0" in metrics and "mIoU/student_single/average/0.5-1.0-2.0/flip" in metrics
    assert metrics["best_mIoU"] == pytest.approx(results["miou"].max())
    artifacts = {a.path for a in client.list_artifacts(only.info.run_id, "evaluation")}
    assert {"evaluation/evaluation_results.csv", "evaluation/evaluation_attention.png"} <= artifacts
    champions = json.loads((project / "data/08_reporting/evaluation_champions.json").read_text())
    assert sorted(champions) == sorted(models)
    for label, entry in champions.items():
        version = client.get_model_version_by_alias(entry["registered_model"], "champion")
        assert int(version.version) == entry["version"]
        assert float(version.tags["hmsa.val_miou"]) == pytest.approx(results.query("model == @label")["miou"].max(),
                                                                     abs=1e-6)
    assert len(list((project / "data/07_model_output/cityscapes_results").rglob("*_pred_labelIds.png"))) == 2

    # the champion from the server: `hmsa predict` (its default model), `mlflow models serve`, the notebook
    val = sorted((project / "data/01_raw/synthcity/leftImg8bit/val").rglob("*.png"))[0]
    run(["hmsa", "predict", str(val), "--out", "predictions", "--no-progress"], project, env={"MLFLOW_TRACKING_URI": uri})
    predicted = CITYSCAPES.train_ids(np.asarray(Image.open(project / "predictions" / f"{val.stem}_labelIds.png")))
    champion = mlflow.pyfunc.load_model("models:/hmsa-student@champion")
    assert np.array_equal(predicted, champion.predict(image[None], params={"scales": [0.5, 1.0, 2.0]})[0])
    _serve_champion_and_query_it(project, image, uri)
    _execute_the_notebook(project)

    # auto-labels: 3 PNGs per coarse image, a manifest the student read, a quality report
    assert len(list((project / "data/04_feature/auto_labels").rglob("*_autoLabelTrainIds.png"))) == 4
    quality = json.loads((project / "data/08_reporting/metrics/auto_labeling.json").read_text())
    assert quality["human_coarse"]["accuracy"] == 1.0 and quality["auto_labels"]["images"] == 4
    info = json.loads((project / "data/04_feature/auto_labels_info.json").read_text())
    assert info["teacher_source"] == "catalog"
    labels = sorted((project / "data/04_feature/auto_labels").rglob("*_autoLabelTrainIds.png"))
    mtimes = [p.stat().st_mtime_ns for p in labels]
    # the teacher from the registry is the catalog's teacher: its labels are kept, nothing is relabelled
    run(["kedro", "run", "--pipelines", "auto_labeling", "--params", "auto_labeling.teacher=models:/hmsa-teacher@newest"],
        project, env={"MLFLOW_TRACKING_URI": uri})
    again = json.loads((project / "data/04_feature/auto_labels_info.json").read_text())
    assert again["teacher_source"] == "models:/hmsa-teacher@newest"
    assert again["teacher_digest"] == info["teacher_digest"]
    assert [p.stat().st_mtime_ns for p in labels] == mtimes


@pytest.mark.slow
def test_torchrun_two_processes_one_writer(tmp_path):
    """`torchrun -m hmsa`: both ranks train (DDP, gloo) and share the evaluation (the grid and the
    Cityscapes-format export); rank 0 alone logs and writes, and the results equal one process's."""
    project = copy_project(tmp_path)
    tiny_parameters(project)
    tiny_training(project)
    run(["kedro", "run", "--pipelines", "data_ingestion"], project)
    run(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "hmsa", "--pipelines", "teacher_training"], project)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hmsa")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'teacher_training'")
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "teacher/val/mIoU")
    assert [m.step for m in history] == [1, 2]
    versions = client.search_model_versions("name = 'hmsa-teacher'")
    assert len(versions) == 1
    registry = yaml.safe_load((project / "data/06_models/teacher_registry.json").read_text())
    assert registry["version"] == 1  # written by rank 0, not overwritten by rank 1

    # evaluation: each rank scores half of val, the confusion matrices are summed over the ranks
    run(["kedro", "run", "--pipelines", "auto_labeling,student_training"], project)
    run(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "hmsa", "--pipelines", "evaluation"], project)
    confusions = project / "data/07_model_output/evaluation_confusions.json"
    shared = json.loads(confusions.read_text())
    shared_table = pd.read_csv(project / "data/08_reporting/evaluation_results.csv")
    exported = project / "data/07_model_output/cityscapes_results"
    shared_pngs = {p.relative_to(exported): p.read_bytes() for p in exported.rglob("*_pred_labelIds.png")}
    assert len(shared_pngs) == 2  # one predicted by each rank, all written by rank 0
    run(["kedro", "run", "--pipelines", "evaluation"], project)  # one process, the whole set
    assert shared_pngs == {p.relative_to(exported): p.read_bytes() for p in exported.rglob("*_pred_labelIds.png")}
    alone = json.loads(confusions.read_text())
    assert sorted(shared) == sorted(alone) == ["student", "teacher"]
    for model in alone:  # equal pixel counts: no image scored twice or left out
        assert np.array_equal(np.array(shared[model]["matrix"]), np.array(alone[model]["matrix"]))
        assert np.array(alone[model]["matrix"]).sum() > 0
    pd.testing.assert_frame_equal(shared_table, pd.read_csv(project / "data/08_reporting/evaluation_results.csv"))


def _serve_champion_and_query_it(project, image, uri):
    """`mlflow models serve` on loopback, the champion from the tracking server ``uri``,
    answers an image with the label map the model gives."""
    import requests

    port = free_port()
    cmd = ["mlflow", "models", "serve", "-m", "models:/hmsa-student@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with server(cmd, f"http://127.0.0.1:{port}/ping", project, project / "serve.log", timeout=180,
                env={"MLFLOW_TRACKING_URI": uri}):
        body = {"inputs": image[None].tolist(), "params": {"scales": [0.5, 1.0], "flip": False}}
        reply = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        # an image scaled to [0, 1], and a scale over the logged limit: 400s that say why
        floats = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": (image[None] / 255).tolist()},
                               timeout=120)
        huge = requests.post(f"http://127.0.0.1:{port}/invocations",
                             json={"inputs": image[None].tolist(), "params": {"scales": [1.0, 60.0]}}, timeout=120)
    assert floats.status_code == 400 and "multiply by 255" in floats.json()["message"], floats.text[:2000]
    assert huge.status_code == 400 and "over serving.max_scale (4)" in huge.json()["message"], huge.text[:2000]
    assert "stack_trace" not in floats.json() and "stack_trace" not in huge.json()
    assert reply.status_code == 200, reply.text[:2000]
    served = np.asarray(reply.json()["predictions"], dtype=np.uint8)
    local = mlflow.pyfunc.load_model("models:/hmsa-student@champion").predict(
        image[None], params={"scales": [0.5, 1.0], "flip": False})
    assert served.shape == (1, *image.shape[:2]) and np.array_equal(served, local)


def _execute_the_notebook(project):
    """notebooks/hmsa_results.ipynb runs top to bottom against this project's MLflow store."""
    import shutil

    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import PROJECT_ROOT

    notebooks = project / "notebooks"
    shutil.copytree(PROJECT_ROOT / "notebooks", notebooks)
    nb = nbformat.read(notebooks / "hmsa_results.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "models:/hmsa-student@champion: version" in text
    assert "hierarchical" in text and "student_explicit" in text  # the mIoU table of the evaluation run


@pytest.mark.slow
def test_one_baseline_trains_alone_under_its_namespace(default_run, tmp_path):
    """`kedro run --namespaces student_single`: the single-scale baseline is trained, stored and
    registered under its own names; no other model is touched."""
    import shutil

    from hmsa.training import checkpoint

    project = shutil.copytree(default_run, tmp_path / "project", symlinks=True)
    models = project / "data/06_models"
    assert "not_trained" in checkpoint.load(models / "student_single.pt")  # the default run did not ask for it
    before = {p.name: p.read_bytes() for p in models.glob("*.pt") if p.name != "student_single.pt"}
    run(["kedro", "run", "--namespaces", "student_single", "--params", "student.variants=[single]"], project)
    bundle = checkpoint.load(models / "student_single.pt")
    assert bundle["model_config"]["kind"] == "single"
    assert {p.name: p.read_bytes() for p in models.glob("*.pt") if p.name != "student_single.pt"} == before
    registry = json.loads((models / "student_single_registry.json").read_text())
    assert registry["registered_model"] == "hmsa-student-single" and registry["version"] == 1
    metrics = json.loads((project / "data/08_reporting/metrics/student_single_training.json").read_text())
    assert metrics["student_single"]["epochs"] == len(
        pd.read_csv(project / "data/08_reporting/student_single_training_curve.csv"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    latest = client.search_runs([client.get_experiment_by_name("hmsa").experiment_id], order_by=["start_time DESC"])[0]
    assert latest.info.run_name.endswith("(student_single)")
    assert "student_single/val/mIoU" in latest.data.metrics
