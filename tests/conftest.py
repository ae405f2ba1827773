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
