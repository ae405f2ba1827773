"""Kedro datasets of this project (the only Kedro-aware I/O code outside pipelines/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from PIL import Image

from hmsa.fileio import replace_folder
from hmsa.training import checkpoint


class ModelBundleDataset(AbstractDataset[dict, dict]):
    """A trained model as one file: ``{"model_config": dict, "state_dict": ..., ...}``.

    Saved atomically with torch.save, loaded with ``weights_only=True`` (no pickled code).
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        if not self._filepath.is_file():
            raise DatasetError(f"no model at {self._filepath}: run the pipeline that trains it first")
        bundle = checkpoint.load(self._filepath)
        if not isinstance(bundle, dict) or not {"model_config", "state_dict"} <= set(bundle):
            raise DatasetError(f"{self._filepath} is not a model bundle (needs model_config and state_dict)")
        return bundle

    def save(self, data: dict) -> None:
        checkpoint.save_atomic(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ModelBundleFolderDataset(AbstractDataset[dict, dict]):
    """Several model bundles as ``<path>/<name>.pt``, loaded as ``{name: bundle}``.

    A save replaces the whole folder at once (written beside it, then swapped in), so the
    folder never mixes bundles of two runs and always exists after a save, even when empty.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, dict]:
        if not self._path.is_dir():
            raise DatasetError(f"no model folder at {self._path}: run the pipeline that trains these models first")
        return {p.stem: ModelBundleDataset(str(p)).load() for p in sorted(self._path.glob("*.pt"))}

    def save(self, data: dict[str, dict]) -> None:
        def fill(tmp: Path) -> None:
            for name, bundle in data.items():
                checkpoint.save_atomic(bundle, tmp / f"{name}.pt")

        replace_folder(self._path, fill)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


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
