"""Kedro project settings. kedro-mlflow registers its own hook through its entry point."""

from kedro.config import OmegaConfigLoader

from hmsa.project.config import CONFIG_LOADER_ARGS  # noqa: F401 (Kedro reads it here; hmsa.project.config.project_conf too)
from hmsa.project.hooks import PreflightHook, ProvenanceHook, RunLockHook, SingleWriterHook

# RunLockHook last: registered last, it is the first of the tryfirst hooks to run
HOOKS = (PreflightHook(), ProvenanceHook(), SingleWriterHook(), RunLockHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
