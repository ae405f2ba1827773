"""Nothing is unpickled from files, and no credential reaches MLflow, the outputs or the logs."""

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.helpers import run, tiny_project

SECRET = "s3cr3t-value-that-must-not-leak"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield owner, name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_no_code_path_unpickles_files():
    """torch.load only with weights_only=True; no pickle, no np.load(allow_pickle=True)."""
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
