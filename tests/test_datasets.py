"""The project's Kedro datasets: model bundles and PNG folders, written all-or-nothing."""

import errno
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from hmsa.io import files as fileio
from hmsa.project.datasets import (
    CSVDataset,
    JSONDataset,
    ModelBundleDataset,
    ParquetDataset,
    PngFolderDataset,
)


class Unwritable:
    """A cell that breaks the CSV writer halfway through the file."""

    def __str__(self):
        raise RuntimeError("this cell cannot be written")


def _bundle(value: float) -> dict:
    return {"model_config": {"kind": "hmsa"}, "state_dict": {"w": torch.full((2,), value)}}


def test_bundle_round_trip_and_missing_file(tmp_path):
    data = ModelBundleDataset(str(tmp_path / "m.pt"))
    with pytest.raises(DatasetError, match="run the pipeline that trains it"):
        data.load()
    data.save(_bundle(1.0))
    assert torch.equal(data.load()["state_dict"]["w"], torch.ones(2))


def test_a_baseline_not_trained_is_a_record_and_anything_else_is_refused(tmp_path):
    data = ModelBundleDataset(str(tmp_path / "student_single.pt"))
    data.save({"not_trained": "student.variants does not list 'single'"})
    assert data.load() == {"not_trained": "student.variants does not list 'single'"}
    data.save({"weights": torch.ones(2)})
    with pytest.raises(DatasetError, match="not a model bundle"):
        data.load()


def test_png_folder_round_trip_keeps_subfolders(tmp_path):
    data = PngFolderDataset(str(tmp_path / "pngs"))
    first = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data.save({"city/a_pred": first, "city/b_pred": first + 1})
    loaded = data.load()
    assert sorted(loaded) == ["city/a_pred", "city/b_pred"]
    assert np.array_equal(loaded["city/a_pred"](), first)
    with pytest.raises(DatasetError, match="leaves the folder"):
        data.save({"../outside": first})


def test_a_failed_save_leaves_the_previous_folder(tmp_path, monkeypatch):
    root = tmp_path / "out"
    data = PngFolderDataset(str(root))
    good = {"city/x": np.zeros((2, 2), np.uint8)}
    data.save(good)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    real = fileio.replace_folder

    def interrupted(path, fill):
        def half(tmp):
            fill(tmp)
            raise OSError("No space left on device")
        return real(path, half)

    monkeypatch.setattr("hmsa.project.datasets.replace_folder", interrupted)
    with pytest.raises(DatasetError, match="No space"):  # Kedro wraps the OSError
        data.save(good | {"city/y": np.ones((2, 2), np.uint8)})
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("make, good, bad", [
    (lambda p: JSONDataset(filepath=str(p / "m.json")), {"a": 1}, {"a": 2, "b": object()}),
    (lambda p: CSVDataset(filepath=str(p / "t.csv"), save_args={"index": False}),
     pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}).astype(object).assign(y=[Unwritable()])),
])
def test_a_failing_writer_leaves_the_previous_catalog_file(tmp_path, make, good, bad):
    """kedro-datasets' own JSONDataset would leave `{"a": 2, "b": ` on disk here."""
    data = make(tmp_path)
    data.save(good)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DatasetError):
        data.save(bad)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_full_disk_keeps_the_previous_catalog_file_and_says_so(tmp_path, monkeypatch):
    data = ParquetDataset(filepath=str(tmp_path / "sub" / "m.parquet"))
    data.save(pd.DataFrame({"x": [1]}))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    with pytest.raises(DatasetError, match=r"no space left on the device while writing \S*m\.parquet: free some"):
        data.save(pd.DataFrame({"x": [2]}))
    monkeypatch.undo()
    assert data.load()["x"].tolist() == [1]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.parquet"]


def test_mlflow_artifact_datasets_log_the_whole_file(tmp_path):
    from kedro_mlflow.io.artifacts import MlflowArtifactDataset

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        data = MlflowArtifactDataset(dataset={"type": "hmsa.project.datasets.JSONDataset",
                                              "filepath": str(tmp_path / "out" / "r.json")})
        with mlflow.start_run() as run:
            data.save({"miou": 0.5})
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="r.json",
                                                    dst_path=str(tmp_path / "dl"))
        assert json.loads(Path(local).read_text()) == {"miou": 0.5}
    finally:
        mlflow.set_tracking_uri(None)


def test_a_folder_its_node_fills_loads_as_its_path_and_is_never_saved_whole(tmp_path, monkeypatch):
    from hmsa.project.datasets import FolderDataset

    folder = FolderDataset(str(tmp_path / "auto_labels"))  # Kedro makes catalog paths absolute
    assert folder.load() == str(tmp_path / "auto_labels") and not folder.exists()
    monkeypatch.chdir(tmp_path)  # the project: recorded relative to it, the same on every machine
    assert folder.load() == "auto_labels"
    (tmp_path / "auto_labels").mkdir()
    assert folder.exists()
    with pytest.raises(DatasetError, match="a folder its node writes file by file"):
        folder.save({"a": 1})
