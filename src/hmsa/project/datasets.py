"""Kedro datasets of this project (the only Kedro-aware I/O code outside pipelines/).

Every file the catalog writes is written whole or not at all: kedro-datasets' JSON, CSV,
Parquet and Matplotlib datasets write straight into the target file, so that a failing
writer or a kill leaves it half-written. The subclasses here write beside it and rename.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets import json as kd_json
from kedro_datasets import matplotlib as kd_matplotlib
from kedro_datasets import pandas as kd_pandas
from PIL import Image

from hmsa.io.files import disk_full, replace_folder, temp_name
from hmsa.training import checkpoint


class _AtomicSave:
    """Mixin for kedro-datasets file datasets: ``save`` writes a temporary file beside the
    target (the parent's own writer, pointed there) and renames it over the target."""

    _redirect: PurePosixPath | None = None

    def _get_save_path(self) -> PurePosixPath:
        return self._redirect or super()._get_save_path()

    def save(self, data: Any) -> None:
        final = super()._get_save_path()
        tmp = final.with_name(temp_name(final.name))
        tmp_str, final_str = get_filepath_str(tmp, self._protocol), get_filepath_str(final, self._protocol)
        self._fs.mkdirs(str(PurePosixPath(final_str).parent), exist_ok=True)
        self._redirect = tmp
        try:
            super().save(data)
            self._fs.mv(tmp_str, final_str)
        except OSError as err:
            raise disk_full(err, final_str) from err
        except DatasetError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, OSError) and disk_full(cause, final_str) is not cause:
                raise disk_full(cause, final_str) from err
            raise
        finally:
            self._redirect = None
            if self._fs.exists(tmp_str):
                self._fs.rm(tmp_str)


class JSONDataset(_AtomicSave, kd_json.JSONDataset):
    """kedro-datasets' JSONDataset, written atomically."""


class CSVDataset(_AtomicSave, kd_pandas.CSVDataset):
    """kedro-datasets' pandas CSVDataset, written atomically."""


class ParquetDataset(_AtomicSave, kd_pandas.ParquetDataset):
    """kedro-datasets' pandas ParquetDataset, written atomically."""


class MatplotlibDataset(_AtomicSave, kd_matplotlib.MatplotlibDataset):
    """kedro-datasets' MatplotlibDataset for one figure, written atomically."""

    def save(self, data: Any) -> None:
        if isinstance(data, list | dict):
            raise DatasetError(f"{type(self).__name__} saves one figure; use kedro-datasets' own for several")
        super().save(data)


class ModelBundleDataset(AbstractDataset[dict, dict]):
    """A trained model as one file: ``{"model_config": dict, "state_dict": ..., ...}``, or the
    record ``{"not_trained": reason}`` of a baseline the run did not ask for.

    Saved atomically with torch.save, loaded with ``weights_only=True`` (no pickled code).
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        if not self._filepath.is_file():
            raise DatasetError(f"no model at {self._filepath}: run the pipeline that trains it first")
        bundle = checkpoint.load(self._filepath)
        if not isinstance(bundle, dict) or not ({"model_config", "state_dict"} <= set(bundle) or "not_trained" in bundle):
            raise DatasetError(f"{self._filepath} is not a model bundle (needs model_config and state_dict)")
        return bundle

    def save(self, data: dict) -> None:
        checkpoint.save_atomic(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class PngFolderDataset(AbstractDataset[dict, dict]):
    """``{relative/name: uint8 array}`` as ``<path>/relative/name.png``; saved all at once
    (written beside the folder, then swapped in); loaded lazily as ``{name: loader}``."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        if not self._path.is_dir():
            raise DatasetError(f"no PNG folder at {self._path}: run the pipeline that writes it first")

        def loader(path: Path):
            return lambda: np.asarray(Image.open(path))

        return {p.relative_to(self._path).with_suffix("").as_posix(): loader(p) for p in sorted(self._path.rglob("*.png"))}

    def save(self, data: dict[str, np.ndarray]) -> None:
        def fill(tmp: Path) -> None:
            for name, array in data.items():
                target = (tmp / f"{name}.png").resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise DatasetError(f"PNG name {name!r} leaves the folder {self._path}")
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(array)).save(target)

        replace_folder(self._path, fill)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class FolderDataset(AbstractDataset[None, str]):
    """A folder that a node fills itself, file by file, and that loads as its path.

    Auto-labelling writes each PNG as soon as it is made (atomically), so that a killed run
    keeps what it finished and a rerun labels only the rest; a Kedro save of the whole set at
    the end could not. This entry lets the node take the folder from the catalog, where the
    datasets that read it (``auto_labels``) name the same path."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> str:
        # Kedro hands datasets absolute paths; the folder is recorded in auto_labels_info.json,
        # a DVC output, so it is given relative to the project (the working directory), as
        # the parameters name it, and the record is the same on every machine
        path = Path(self._path)
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: a folder its node writes file by file; nothing saves it whole")

    def _exists(self) -> bool:
        return Path(self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class AbsentDataset(AbstractDataset[None, None]):
    """A dataset an environment does not have (Mapillary: no teacher, no auto-labels).

    Loads as None, so a node that can do without it (student training with
    ``coarse_labels: none``, evaluation without a teacher) runs; saving is an error that says
    ``reason``, and ``PreflightHook`` raises it before a run that would write here starts."""

    def __init__(self, reason: str, metadata: dict[str, Any] | None = None):
        self.reason = reason
        self.metadata = metadata

    def load(self) -> None:
        return None

    def save(self, data: None) -> None:
        raise DatasetError(self.reason)

    def _exists(self) -> bool:
        return False

    def _describe(self) -> dict[str, Any]:
        return {"reason": self.reason}
