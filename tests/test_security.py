"""Nothing is unpickled from files, no credential reaches MLflow, the outputs or the logs, and
Kedro's telemetry neither calls out nor writes into the project."""

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.helpers import copy_project, run, tiny_logged_model, tiny_project

SECRET = "s3cr3t-value-that-must-not-leak"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield owner, name, {k.arg: k.value for k in node.keywords}, node.lineno


def node_func(tree, line):
    """The called expression of the first call on ``line``."""
    return next(n.func for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line)


def test_no_code_path_unpickles_files():
    """torch.load only with weights_only=True; no pickle, no np.load(allow_pickle=True), no
    mlflow.pyfunc.load_model (hmsa reads a model's weights itself)."""
    offenders, loads = [], 0
    for path in sorted((PROJECT_ROOT / "src").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for owner, name, keywords, line in _calls(tree):
            where = f"{path.relative_to(PROJECT_ROOT)}:{line}"
            if owner == "torch" and name == "load":
                loads += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{where} torch.load without weights_only=True")
            if owner in ("pickle", "cloudpickle", "dill", "joblib") and name in ("load", "loads"):
                offenders.append(f"{where} {owner}.{name}")
            if name == "load_model" and "pyfunc" in ast.unparse(node_func(tree, line)):
                offenders.append(f"{where} mlflow.pyfunc.load_model (runs the model's code or pickle)")
            if name == "load" and owner == "np":
                flag = keywords.get("allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    offenders.append(f"{where} np.load(allow_pickle=True)")
    assert loads >= 2  # checkpoints and pretrained weights: the checker sees them
    assert offenders == []


@pytest.mark.slow
def test_credentials_in_the_environment_are_not_logged(tmp_path):
    project = tiny_project(tmp_path / "project")
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "MLFLOW_TRACKING_PASSWORD": SECRET, "AZURE_STORAGE_KEY": SECRET,
           "GOOGLE_APPLICATION_CREDENTIALS": f"/{SECRET}.json", "HMSA_TOKEN": SECRET}
    result = run(["kedro", "run", "--pipelines", "data_ingestion,teacher_training"], project, env=env)
    assert SECRET not in result.stdout + result.stderr
    leaks = [str(p) for p in Path(project).rglob("*")
             if p.is_file() and "src" not in p.parts and "conf" not in p.parts and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert (project / "mlflow.db").is_file()  # the store was written and searched


def test_kedro_telemetry_consent_is_off_so_pyproject_stays_untouched(tmp_path):
    """Without the opt-out variables the CI and the Makefile set, a bare `kedro` command (as the
    README's `kedro run --env ...` examples) must not write a project_id into the tracked
    pyproject.toml: the project's .telemetry says consent: false, with which kedro-telemetry
    also sends nothing."""
    project = copy_project(tmp_path / "project")
    before = (project / "pyproject.toml").read_bytes()
    opted_in = {"KEDRO_DISABLE_TELEMETRY": "", "DO_NOT_TRACK": ""}  # empty: not set, for kedro-telemetry
    proc = run(["kedro", "registry", "list"], project, env=opted_in)
    assert "__default__" in proc.stdout
    assert (project / "pyproject.toml").read_bytes() == before
    (project / ".telemetry").unlink()  # the check can fail: without the file kedro-telemetry writes its id
    run(["kedro", "registry", "list"], project, env=opted_in)
    assert b"kedro_telemetry" in (project / "pyproject.toml").read_bytes()


class _Planted:
    """A pickle that, when unpickled, creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_model_from_a_shared_store_never_runs_pickled_code(tmp_path, monkeypatch):
    """Whoever can write a model's artifacts (a shared tracking server) must not be able to
    run code on the machines that load it: the model is logged from code (no pickle in it),
    and hmsa reads only its description and its weights (weights_only). A malicious pickle is
    planted where each loader looks: hmsa predict (registry alias, file:// folder, bundle
    file), the auto-labelling teacher from the registry, and MLflow's own pyfunc loader (what
    `mlflow models serve` uses)."""
    import pickle
    import shutil

    import mlflow
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from hmsa.commands import predict
    from hmsa.mlops import tracking
    from hmsa.autolabel.config import AutoLabelConfig
    from hmsa.autolabel.teacher import load_teacher
    from hmsa.data.labels import label_set

    info = tiny_logged_model(tmp_path, monkeypatch, "hmsa-student")
    mlflow.MlflowClient().set_registered_model_alias("hmsa-student", "champion", "1")
    stored = Path(mlflow.MlflowClient().get_logged_model(info["model_uri"].split("/")[-1]).artifact_location
                  .removeprefix("file://"))
    folder, served = tmp_path / "copied", tmp_path / "served"  # a model folder a user was given
    shutil.copytree(stored, folder)
    shutil.copytree(stored, served)
    # what MLflow stores: this source file and the weights, no pickled object
    assert list(folder.rglob("*.pkl")) == []
    assert (yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"].get("model_code_path")
            is not None)

    marker = tmp_path / "code-ran"
    poison = pickle.dumps(_Planted(marker))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8)).save(photo)

    # 1. the model folder rewritten as a cloudpickle model would be: hmsa never unpickles it
    (folder / "python_model.pkl").write_bytes(poison)
    description = yaml.safe_load((folder / "MLmodel").read_text())
    pyfunc = description["flavors"]["python_function"]
    pyfunc.pop("model_code_path", None)
    pyfunc["python_model"] = "python_model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(description))
    out = tmp_path / "out"
    assert predict.main(["predict", str(photo), "--model", folder.as_uri(), "--out", str(out), "--no-progress"]) == 0
    assert (out / "photo_labelIds.png").is_file() and not marker.exists()
    # the same planted into the registered model's own artifacts: the champion, and the teacher
    (stored / "python_model.pkl").write_bytes(poison)
    (stored / "MLmodel").write_text(yaml.safe_dump(description))
    assert predict.main(["predict", str(photo), "--out", str(tmp_path / "out2"), "--no-progress"]) == 0
    teacher = load_teacher(AutoLabelConfig(teacher="models:/hmsa-student@champion"), {}, label_set("cityscapes"))
    assert isinstance(teacher, torch.nn.Module) and not marker.exists()

    # 2. the weights replaced by a malicious pickle: refused by name, nothing runs
    weights = next(stored.rglob("model_bundle.pt"))
    weights.write_bytes(poison)
    with pytest.raises(tracking.ModelLoadError, match="pickled Python objects"):
        tracking.load_segmenter("models:/hmsa-student@champion")
    bundle_file = tmp_path / "student.pt"
    bundle_file.write_bytes(poison)
    assert predict.main(["predict", str(photo), "--model", str(bundle_file), "--out", str(out), "--no-progress"]) == 2
    assert not marker.exists()

    # 3. MLflow's own loader (mlflow models serve) of an untouched model with a pickle planted beside it
    (served / "python_model.pkl").write_bytes(poison)
    labels = mlflow.pyfunc.load_model(str(served)).predict(np.zeros((1, 40, 72, 3), np.uint8))
    assert labels.shape == (1, 40, 72) and not marker.exists()
