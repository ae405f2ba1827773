"""The data_ingestion pipeline: in memory, and as `kedro run` in a copy of the project."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.io import AbstractDataset, DataCatalog
from kedro.runner import SequentialRunner

from hmsa.mlops import provenance
from hmsa.project.config import ParameterError
from hmsa.data.ingest import DataValidationError
from hmsa.pipelines.data_ingestion import create_pipeline, nodes

from ...conftest import TINY_SPEC
from ...helpers import copy_project, run, tiny_parameters

OUTPUTS = ["raw_data_info", "image_manifest", "class_pixel_counts", "class_centroids", "skipped_files",
           "class_frequency", "class_frequency_plot", "data_ingestion_metrics", "data_ingestion_mlflow_metrics"]


def _params(**extra) -> dict:
    return {"source": "synthetic", "synthetic": TINY_SPEC.model_dump(), "workers": 1, "hash_raw_data": True, **extra}


class _Kept(AbstractDataset):
    """An in-memory dataset the runner cannot release, so a test can read every output."""

    def __init__(self):
        self._data = None

    def load(self):
        return self._data

    def save(self, data) -> None:
        self._data = data

    def _exists(self) -> bool:
        return self._data is not None

    def _describe(self) -> dict:
        return {}


def _run_in_memory(params: dict, root: Path) -> DataCatalog:
    catalog = DataCatalog({name: _Kept() for name in OUTPUTS})
    catalog["params:data"] = params
    catalog["params:paths"] = {"synthcity": str(root)}
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_runs_in_memory(tmp_path):
    out = _run_in_memory(_params(), tmp_path / "synthcity")
    assert out.load("raw_data_info")["root"] == str(tmp_path / "synthcity")  # generated where paths.synthcity says
    assert all(out.exists(name) for name in OUTPUTS)
    info = out.load("raw_data_info")
    assert info["generated"] is True and info["dvc_md5"].endswith(".dir")
    manifest = out.load("image_manifest")
    assert manifest.groupby("split")["image_id"].nunique().to_dict() == {"train": 4, "train_extra": 4, "val": 2}
    metrics = out.load("data_ingestion_metrics")
    assert metrics["images"] == {"train": 4, "train_extra": 4, "val": 2}
    assert metrics["skipped_files"] == 0
    flat = out.load("data_ingestion_mlflow_metrics")
    assert flat["images/train"] == {"value": 4.0, "step": 0}
    freq = out.load("class_frequency")
    for _, group in freq.groupby(["split", "label_kind"]):
        assert group["share"].sum() == pytest.approx(1.0)


def test_skip_mode_reports_skipped_files_in_metrics(tmp_path, tiny_tree):
    label = sorted(tiny_tree.glob("gtFine/train/*/*.png"))[0]
    label.write_bytes(b"broken")
    params = _params(source="cityscapes", cityscapes_root=str(tiny_tree), on_bad_file="skip")
    out = _run_in_memory(params, tmp_path / "unused")
    assert out.load("data_ingestion_metrics")["skipped_files"] == 1
    assert str(label.relative_to(tiny_tree)) in out.load("skipped_files")["path"].tolist()


def test_a_tree_that_is_not_synthcity_is_ingested_with_two_parameters(tiny_tree):
    info = nodes.prepare_raw_data({"source": "cityscapes", "cityscapes_root": str(tiny_tree)})
    assert info["source"] == "cityscapes" and info["generated"] is False
    manifest, *_ = nodes.ingest_raw_data(info, {"source": "cityscapes", "cityscapes_root": str(tiny_tree)})
    assert len(manifest) == 10


def test_missing_cityscapes_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataValidationError, match=r"data.cityscapes_root: .*does not exist"):
        nodes.prepare_raw_data({"source": "cityscapes", "cityscapes_root": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="has no leftImg8bit/ folder"):
        nodes.prepare_raw_data({"source": "cityscapes", "cityscapes_root": str(tmp_path / "empty")})


def test_parameter_typo_stops_the_node(tmp_path):
    with pytest.raises(ParameterError, match=r"data\.on_bad_fiel"):
        nodes.prepare_raw_data({**_params(), "on_bad_fiel": "skip"}, {"synthcity": str(tmp_path)})


def test_a_moved_parameter_says_where_it_went(tmp_path):
    with pytest.raises(ParameterError, match=r"data\.synthetic_root: moved: set paths\.synthcity"):
        nodes.prepare_raw_data({**_params(), "synthetic_root": str(tmp_path)})


# ------------------------------------------------------------------ kedro run, for real


@pytest.mark.slow
def test_kedro_run_logs_one_mlflow_run(tmp_path):
    project = copy_project(tmp_path)
    tiny_parameters(project)
    run(["git", "init", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "test"], project)
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()

    run(["kedro", "run", "--pipelines", "data_ingestion"], project)
    run(["kedro", "run", "--pipelines", "data_ingestion"], project)  # again: SynthCity reused

    manifest = pd.read_parquet(project / "data/03_primary/image_manifest.parquet")
    assert len(manifest) == 10
    assert (project / "data/08_reporting/class_frequency.png").stat().st_size > 0
    info = json.loads((project / "data/03_primary/raw_data_info.json").read_text())
    assert info["generated"] is False  # second run: generation skipped

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hmsa")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == ["data_ingestion", "data_ingestion"]
    first = runs[0]
    assert first.info.status == "FINISHED"
    assert first.data.metrics["data.images/train"] == 4
    assert first.data.metrics["data.images/train_extra"] == 4
    assert first.data.metrics["data.skipped_files"] == 0
    assert first.data.params["data.synthetic.height"] == "32"  # parameters flattened
    assert first.data.tags["hmsa.git_commit"].startswith(commit)
    assert first.data.tags["hmsa.raw_data.dvc_md5"] == provenance.dvc_hash(project / "data/01_raw/synthcity")
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id, "data_report")}
    assert artifacts == {"data_report/class_frequency.csv", "data_report/class_frequency.png",
                         "data_report/skipped_files.csv"}
