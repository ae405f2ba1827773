"""kill -9 in the middle of each long stage, then the same command again: nothing is lost,
nothing is done twice, nothing is half-written, and the results are those of an
uninterrupted run. The runs are real `kedro run` processes on tiny data, each in a copy of
the shared default run (``default_run``) with the stage's outputs removed."""

import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from hmsa.training import checkpoint
from tests.helpers import kill_at, run

pytestmark = pytest.mark.slow


def _copy(project, tmp_path, *stale):
    """A copy of the shared default run, with the outputs ``stale`` (paths under data/) removed."""
    copy = shutil.copytree(project, tmp_path / "project", symlinks=True)
    for path in stale:
        shutil.rmtree(copy / "data" / path)
    return copy


def _set(project, role: str, **trainer):
    path = project / "conf" / "base" / f"parameters_{role}_training.yml"
    params = yaml.safe_load(path.read_text())
    params[role]["trainer"].update(trainer)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _runs(project, name):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hmsa")
    return client, client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'",
                                      order_by=["attributes.start_time ASC"])


def test_kill_during_teacher_training_resumes_in_a_linked_run(default_run, tmp_path):
    project = _copy(default_run, tmp_path, "06_models")
    _set(project, "teacher", epochs=6, checkpoint_dir="data/06_models/checkpoints/teacher")
    # save_atomic runs twice per epoch while improving (best.pt, last.pt): the 4th call is in epoch 2 or 3
    kill_at(["run", "--pipelines", "teacher_training"], project, "hmsa.training.checkpoint:save_atomic", point=4)
    done = checkpoint.load(project / "data/06_models/checkpoints/teacher/last.pt")["epoch"] + 1
    assert 1 <= done < 6 and not (project / "data/06_models/teacher.pt").exists()

    again = run(["kedro", "run", "--pipelines", "teacher_training"], project)
    assert "Resuming from" in again.stdout + again.stderr
    curve = pd.read_csv(project / "data/08_reporting/teacher_training_curve.csv")
    assert curve["epoch"].tolist() == [1, 2, 3, 4, 5, 6]

    client, runs = _runs(project, "teacher_training")
    killed, resumed = runs
    assert resumed.data.tags["hmsa.teacher.resumed_from_run"] == killed.info.run_id
    assert killed.data.tags["hmsa.teacher.resumed_by_run"] == resumed.info.run_id
    assert killed.info.status == "KILLED" and resumed.info.status == "FINISHED"
    whole = client.get_metric_history(resumed.info.run_id, "teacher/val/mIoU")
    assert [m.step for m in sorted(whole, key=lambda m: m.step)] == [1, 2, 3, 4, 5, 6]
    before = {m.step: m.value for m in client.get_metric_history(killed.info.run_id, "teacher/val/mIoU")}
    assert before and all({m.step: m.value for m in whole}[step] == value for step, value in before.items())

    # and the result is the uninterrupted run's, bit for bit
    reference = _copy(default_run, tmp_path / "reference", "06_models")
    _set(reference, "teacher", epochs=6, checkpoint_dir="data/06_models/checkpoints/teacher")
    run(["kedro", "run", "--pipelines", "teacher_training"], reference)
    a = checkpoint.load(project / "data/06_models/teacher.pt")["state_dict"]
    b = checkpoint.load(reference / "data/06_models/teacher.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_kill_during_auto_labelling_relabels_nothing_and_leaves_no_broken_png(default_run, tmp_path):
    project = _copy(default_run, tmp_path, "04_feature/auto_labels")
    labels = project / "data/04_feature/auto_labels"
    # one writer thread, three PNGs per image, the label last: the 7th write is the third image's first
    kill_at(["run", "--pipelines", "auto_labeling", "--params", "auto_labeling.writers=1"], project,
            "hmsa.autolabel.labelling:write_png_atomic", point=7)
    finished = {p: p.stat().st_mtime_ns for p in labels.rglob("*.png")}
    assert len([p for p in finished if p.name.endswith("_autoLabelTrainIds.png")]) == 2

    run(["kedro", "run", "--pipelines", "auto_labeling"], project)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # nothing relabelled
    # the rerun ended the MLflow run the kill left RUNNING
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hmsa").experiment_id],
                              filter_string="attributes.run_name = 'auto_labeling'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    pngs = sorted(labels.rglob("*.png"))
    assert len(pngs) == 12 and not list(labels.rglob(".*"))  # 4 images x 3 PNGs, no temp files left
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # a truncated PNG raises here
    # the same labels as a run that was never interrupted
    reference = _copy(default_run, tmp_path / "reference", "04_feature/auto_labels")
    run(["kedro", "run", "--pipelines", "auto_labeling"], reference)
    for png in pngs:
        twin = reference / png.relative_to(project)
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(twin)))


def test_kill_during_evaluation_keeps_the_last_results_and_the_rerun_gives_the_same(default_run, tmp_path):
    project = _copy(default_run, tmp_path)  # evaluated in the default run
    metrics = project / "data/08_reporting/metrics/evaluation.json"
    results = project / "data/08_reporting/evaluation_results.csv"
    first, first_table = json.loads(metrics.read_text()), results.read_bytes()

    kill_at(["run", "--pipelines", "evaluation"], project, "hmsa.evaluation.grid:predict_grid", point=2)
    assert json.loads(metrics.read_text()) == first and results.read_bytes() == first_table  # kept whole
    run(["kedro", "run", "--pipelines", "evaluation"], project)
    assert json.loads(metrics.read_text()) == first
    assert results.read_bytes() == first_table
