"""Kedro project settings. kedro-mlflow registers its own hook through its entry point."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from hmsa.hooks import PreflightHook, ProvenanceHook, SingleWriterHook

HOOKS = (PreflightHook(), ProvenanceHook(), SingleWriterHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
# soft: an environment's parameter files (conf/claims) override single keys of conf/base
# oc.env: conf/cityscapes reads the data root from $CITYSCAPES_DATASET (Kedro enables
# oc.env for credentials only unless a project registers it)
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "custom_resolvers": {"oc.env": oc.env},
}
