"""Kedro datasets of this project (the only Kedro-aware I/O code outside pipelines/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

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
