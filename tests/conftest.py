"""Shared fixtures: a tiny SynthCity tree in the Cityscapes layout, and the project root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from hmsa.data.synthetic import SynthCitySpec, generate
from hmsa.models import ModelConfig, build_model
from tests.models.conftest import TINY

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: each worker, and the kedro and dvc runs it starts,
    # gets its share of the cores, not all of them (oversubscribed OpenMP threads run 10x slower)
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(_threads)


def pytest_collection_modifyitems(items):
    """The files with slow end-to-end tests first, each file's tests kept together (``make test``
    gives each worker whole files, so that their module fixtures are built once): the long ones
    start together and the short ones fill the gaps, not one long file running alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)

#: 2 cities in train, 32x64 images: small enough to copy and break in every test
TINY_SPEC = SynthCitySpec(
    seed=7,
    height=32,
    width=64,
    images={"train": 4, "val": 2, "train_extra": 4},
    cities={"train": ["alpha", "beta"], "val": ["gamma"], "train_extra": ["delta", "eps"]},
)
TINY_SPLITS = {"train": ["fine"], "val": ["fine"], "train_extra": ["coarse"]}


@pytest.fixture(autouse=True)
def _mlflow_store_restored():
    """MLflow keeps its tracking and registry URIs in globals and in os.environ, which every later
    test and subprocess would inherit: each test ends with those it started with."""
    import mlflow

    variables = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in variables}
    tracking, registry = mlflow.tracking._tracking_service.utils._tracking_uri, mlflow.tracking._model_registry.utils._registry_uri
    yield
    mlflow.tracking._tracking_service.utils._tracking_uri = tracking
    mlflow.tracking._model_registry.utils._registry_uri = registry
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_tree_master(tmp_path_factory) -> Path:
    """A tiny tree generated once per session; copy it (``tiny_tree``) before changing it."""
    root = tmp_path_factory.mktemp("master") / "synthcity"
    generate(root, TINY_SPEC, workers=1)
    return root


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """One tiny `kedro run` of the default pipeline, shared by the tests that read its outputs
    (copy it before changing anything). Under pytest-xdist the workers share one run too: the
    first to ask builds it under a file lock, in the directory all workers' temp folders sit in."""
    from filelock import FileLock

    from tests.helpers import tiny_project

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    project, done = base / "default_run" / "project", base / "default_run.done"
    with FileLock(str(base / "default_run.lock")):
        if not done.is_file():
            shutil.rmtree(project.parent, ignore_errors=True)  # a build that failed half-way
            tiny_project(project, "__default__")
            done.touch()
    return project


@pytest.fixture
def tiny_tree(tiny_tree_master, tmp_path) -> Path:
    """A private copy of the tiny tree that a test may break."""
    root = tmp_path / "synthcity"
    shutil.copytree(tiny_tree_master, root)
    return root


@pytest.fixture
def tiny_model():
    """``make(kind, **overrides)``: a TINY model with fixed initial weights, in eval mode."""
    def make(kind: str = "hmsa", **extra):
        torch.manual_seed(0)
        return build_model(ModelConfig(kind=kind, **{**TINY, **extra})).eval()
    return make
