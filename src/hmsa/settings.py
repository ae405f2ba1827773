"""Kedro project settings. kedro-mlflow registers its own hook through its entry point."""

from kedro.config import OmegaConfigLoader

from hmsa.config import CONFIG_LOADER_ARGS  # noqa: F401 (Kedro reads it here; hmsa.config.project_conf too)
from hmsa.hooks import PreflightHook, ProvenanceHook, SingleWriterHook

HOOKS = (PreflightHook(), ProvenanceHook(), SingleWriterHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
